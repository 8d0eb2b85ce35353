//! Does a Go binary switch cgroup v1 kmem accounting on? Told from its own bytes.
//!
//! runc's `libcontainer/cgroups/fs/kmem.go` (build tag `!nokmem`) writes
//! `memory.kmem.limit_in_bytes`; `kmem_disabled.go` (tag `nokmem`) does nothing. A Go
//! binary keeps its source file names in its pclntab even when stripped, and the cgroup
//! file name as a string constant, so either is proof that the kmem code is linked. The
//! build tags in Go's build info (Go >= 1.18) only support that: a tag may not reach a
//! vendored copy.
//!
//! The file is mapped, not read: a kubelet is ~100 MB and one `memmem` pass is enough.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub mod buildinfo;
pub mod elf;
pub mod provenance;
pub mod scan;

pub use scan::Marker;

use elf::{Elf, ElfError};

/// Bytes read at a time by the marker scan.
const SCAN_CHUNK: usize = 1 << 20;

/// The build tag that selects `kmem_disabled.go`.
pub const NOKMEM_TAG: &str = "nokmem";

/// Why a file could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum GobinError {
    #[error("failed to open '{}'", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read '{}'", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("'{}' is a directory, not a Go binary", path.display())]
    IsDirectory { path: PathBuf },
    #[error("'{}' is not a regular file", path.display())]
    NotRegularFile { path: PathBuf },
    #[error("'{}' is not an ELF executable", path.display())]
    NotElf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("'{}' is truncated", path.display())]
    Truncated {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("'{}' is not a Go binary: an ELF {arch} file without Go build info or a Go pclntab", path.display())]
    NotGo { path: PathBuf, arch: String },
}

impl GobinError {
    pub fn path(&self) -> &Path {
        match self {
            GobinError::Open { path, .. }
            | GobinError::Read { path, .. }
            | GobinError::IsDirectory { path }
            | GobinError::NotRegularFile { path }
            | GobinError::NotElf { path, .. }
            | GobinError::Truncated { path, .. }
            | GobinError::NotGo { path, .. } => path,
        }
    }

    /// A next step for the user.
    pub fn hint(&self) -> String {
        match self {
            GobinError::Open { path, source } if source.kind() == io::ErrorKind::NotFound => {
                format!(
                    "check the path; for an installed binary try 'command -v {}'",
                    file_name(path)
                )
            }
            GobinError::Open { .. } | GobinError::Read { .. } => {
                "check the file's permissions (inspect only reads it)".into()
            }
            GobinError::IsDirectory { path } => {
                format!(
                    "name the binary itself, e.g. '{}'",
                    path.join("kubelet").display()
                )
            }
            GobinError::NotRegularFile { .. } => "name the binary file itself".into(),
            GobinError::Truncated { .. } => {
                "a partial copy or download? compare its size and sha256 with the original".into()
            }
            GobinError::NotElf { .. } | GobinError::NotGo { .. } => {
                "inspect reads Go programs such as runc and kubelet (ELF, e.g. amd64 or arm64)"
                    .into()
            }
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The answer for one binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// No kmem-enabling code is linked.
    Safe,
    /// kmem-enabling code is linked: every memory cgroup it creates accounts kmem.
    EnablesKmem,
}

impl Verdict {
    /// `safe` or `enables-kmem`, as in `inspect --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::EnablesKmem => "enables-kmem",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the verdict is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// kmem-enabling code found (see the evidence).
    KmemCode,
    /// `kmem_disabled.go` is linked, `kmem.go` is not.
    NokmemCode,
    /// Neither file is linked, and the binary was built with the `nokmem` tag.
    NokmemTag,
    /// Neither file is linked and no `nokmem` tag: the binary has no kmem code at all.
    NoKmemCode,
}

/// One marker found in the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The bytes found: `memory.kmem.limit_in_bytes`, `libcontainer/cgroups/fs/kmem.go`, ...
    pub what: &'static str,
    /// File offset of the first occurrence.
    pub offset: u64,
    /// The ELF section holding it, when the section table is there.
    pub section: Option<String>,
    pub occurrences: usize,
    /// For source file names: the whole name as the pclntab stores it.
    pub file_name: Option<String>,
}

/// What `inspect` found in one binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinaryReport {
    pub path: PathBuf,
    pub verdict: Verdict,
    pub reason: Reason,
    /// `GOARCH` of the ELF machine (`amd64`, `arm64`, ...).
    pub arch: String,
    /// `go1.19.8`, from the build info; `None` when the binary does not say.
    pub go_version: Option<String>,
    /// When the version is unknown: the Go releases whose pclntab format the binary has.
    pub go_releases: Option<String>,
    /// Build tags (Go >= 1.18 build info); `None` when the binary does not record them.
    pub tags: Option<Vec<String>>,
    /// Go's build settings (`-trimpath`, `CGO_ENABLED`, `GOARCH`, ...; Go >= 1.18 build
    /// info), in the order the binary records them; empty when it records none.
    pub build_settings: Vec<(String, String)>,
    /// Markers of kmem-enabling code; empty when safe.
    pub evidence: Vec<Evidence>,
    /// Markers of the nokmem code (`kmem_disabled.go`): supporting, not proof.
    pub nokmem_evidence: Vec<Evidence>,
    pub size: u64,
}

impl BinaryReport {
    /// True when built with the `nokmem` tag (per the build info).
    pub fn has_nokmem_tag(&self) -> bool {
        self.tags
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t == NOKMEM_TAG))
    }
}

/// Inspect the binary at `path` (mapped, not read into memory).
pub fn inspect(path: &Path) -> Result<BinaryReport, GobinError> {
    let started = Instant::now();
    // Look before opening: opening a FIFO would block.
    let kind = std::fs::metadata(path).map_err(|source| GobinError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if kind.is_dir() {
        return Err(GobinError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    if !kind.is_file() {
        return Err(GobinError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    let file = File::open(path).map_err(|source| GobinError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| GobinError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let map = if meta.len() == 0 {
        None
    } else {
        // SAFETY: the map is only read, and only while `file` is open. A binary replaced
        // by rename (dpkg, atomic_write) keeps its old inode mapped; one truncated in
        // place while mapped would fault, which no installer does.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| GobinError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Some(map)
    };
    let data: &[u8] = map.as_deref().unwrap_or_default();
    // The headers and the build info are read through the map (a few pages); the marker
    // scan streams the file, so that memory use stays at one chunk for a 100 MB kubelet.
    let report = classify(path, data, || {
        scan::markers_streamed(&file, SCAN_CHUNK).map_err(|source| GobinError::Read {
            path: path.to_path_buf(),
            source,
        })
    })?;
    log::debug!(
        "inspect '{}': {} bytes, {}, {}: {} ({} ms)",
        path.display(),
        report.size,
        report.arch,
        report.verdict,
        report.go_version.as_deref().unwrap_or("go version unknown"),
        started.elapsed().as_millis()
    );
    for e in report.evidence.iter().chain(&report.nokmem_evidence) {
        log::debug!(
            "inspect '{}': {} at {:#x} in {} ({} times){}",
            path.display(),
            e.what,
            e.offset,
            e.section.as_deref().unwrap_or("no section"),
            e.occurrences,
            e.file_name
                .as_deref()
                .map(|n| format!(", file name '{n}'"))
                .unwrap_or_default()
        );
    }
    Ok(report)
}

/// Inspect the bytes of a whole binary; `path` only names it.
pub fn analyze(path: &Path, data: &[u8]) -> Result<BinaryReport, GobinError> {
    classify(path, data, || Ok(scan::markers(data)))
}

/// `data` is the whole file; `scan` finds the markers in it (in memory or streamed).
fn classify(
    path: &Path,
    data: &[u8],
    scan: impl FnOnce() -> Result<Vec<scan::Hit>, GobinError>,
) -> Result<BinaryReport, GobinError> {
    let elf = Elf::parse(data).map_err(|source| match source {
        ElfError::Truncated { .. } => GobinError::Truncated {
            path: path.to_path_buf(),
            source,
        },
        _ => GobinError::NotElf {
            path: path.to_path_buf(),
            source,
        },
    })?;

    let build_info = buildinfo::find(&elf).and_then(|at| {
        buildinfo::decode(&elf, at)
            .map_err(|err| {
                log::warn!(
                    "'{}': cannot decode the Go build info at {at:#x}: {err}",
                    path.display()
                )
            })
            .ok()
    });
    let pclntab = scan::pclntab(&elf);
    if build_info.is_none() && pclntab.is_none() {
        return Err(GobinError::NotGo {
            path: path.to_path_buf(),
            arch: elf.arch(),
        });
    }

    let evidence_of = |hit: &scan::Hit| Evidence {
        what: hit.marker.needle(),
        offset: hit.offset,
        section: elf.section_at(hit.offset).map(|s| s.name),
        occurrences: hit.occurrences,
        file_name: hit.file_name.clone(),
    };
    let hits = scan()?;
    let evidence: Vec<Evidence> = hits
        .iter()
        .filter(|h| h.marker.enables_kmem())
        .map(evidence_of)
        .collect();
    let nokmem_evidence: Vec<Evidence> = hits
        .iter()
        .filter(|h| !h.marker.enables_kmem())
        .map(evidence_of)
        .collect();

    let go_version = build_info
        .as_ref()
        .map(|b| b.version.clone())
        .filter(|v| !v.is_empty())
        .or_else(|| buildinfo::version_from_symtab(&elf));
    let tags = build_info.as_ref().and_then(|b| b.tags());
    let build_settings = build_info
        .as_ref()
        .map(|b| buildinfo::build_settings(&b.modinfo))
        .unwrap_or_default();
    let mut report = BinaryReport {
        path: path.to_path_buf(),
        verdict: Verdict::Safe,
        reason: Reason::NoKmemCode,
        arch: elf.arch(),
        go_releases: match (&go_version, &pclntab) {
            (None, Some(p)) => Some(p.go_releases.to_string()),
            _ => None,
        },
        go_version,
        tags,
        build_settings,
        evidence,
        nokmem_evidence,
        size: data.len() as u64,
    };
    (report.verdict, report.reason) = if !report.evidence.is_empty() {
        (Verdict::EnablesKmem, Reason::KmemCode)
    } else if !report.nokmem_evidence.is_empty() {
        (Verdict::Safe, Reason::NokmemCode)
    } else if report.has_nokmem_tag() {
        (Verdict::Safe, Reason::NokmemTag)
    } else {
        (Verdict::Safe, Reason::NoKmemCode)
    };
    if report.verdict == Verdict::EnablesKmem && report.has_nokmem_tag() {
        log::warn!(
            "'{}' was built with tag '{NOKMEM_TAG}' but still links kmem-enabling code (a vendored copy the tag does not reach?)",
            path.display()
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_path_and_hint_at_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("kubelet");
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let d = dir.path().display();
        let cases = [
            (
                missing.clone(),
                format!("failed to open '{d}/kubelet'"),
                "check the path; for an installed binary try 'command -v kubelet'",
            ),
            (
                dir.path().to_path_buf(),
                format!("'{d}' is a directory, not a Go binary"),
                "",
            ),
            (
                script,
                format!("'{d}/script' is not an ELF executable"),
                "inspect reads Go programs",
            ),
            (
                empty,
                format!("'{d}/empty' is not an ELF executable"),
                "inspect reads Go programs",
            ),
            (
                "/dev/null".into(),
                "'/dev/null' is not a regular file".into(),
                "name the binary file",
            ),
        ];
        for (path, want, hint) in cases {
            let err = inspect(&path).unwrap_err();
            assert_eq!(err.to_string(), want, "path {}", path.display());
            assert_eq!(err.path(), path);
            assert!(
                err.hint().starts_with(hint),
                "hint for {}: {}",
                path.display(),
                err.hint()
            );
        }
    }

    #[test]
    fn the_verdict_follows_the_evidence_and_the_tag_only_supports_it() {
        let kmem = "memory.kmem.limit_in_bytes";
        let kmem_go = "\0x/libcontainer/cgroups/fs/kmem.go\0";
        let disabled = "\0x/libcontainer/cgroups/fs/kmem_disabled.go\0";
        let tagged = "build\t-compiler=gc\nbuild\t-tags=selinux,nokmem\n";
        let untagged = "build\t-compiler=gc\n";
        let cases: [(&str, &str, &str, Verdict, Reason); 6] = [
            ("tag only", tagged, "", Verdict::Safe, Reason::NokmemTag),
            ("nothing", untagged, "", Verdict::Safe, Reason::NoKmemCode),
            (
                "kmem_disabled.go",
                untagged,
                disabled,
                Verdict::Safe,
                Reason::NokmemCode,
            ),
            (
                "string despite the tag",
                tagged,
                kmem,
                Verdict::EnablesKmem,
                Reason::KmemCode,
            ),
            (
                "kmem.go only",
                untagged,
                kmem_go,
                Verdict::EnablesKmem,
                Reason::KmemCode,
            ),
            (
                "both files",
                tagged,
                &[kmem_go, disabled].concat(),
                Verdict::EnablesKmem,
                Reason::KmemCode,
            ),
        ];
        for (name, modinfo, bytes, verdict, reason) in cases {
            let mut contents = buildinfo::tests::inline_block("go1.19.8", modinfo);
            contents.extend_from_slice(bytes.as_bytes());
            let data = elf::tests::tiny_elf64(62, ".go.buildinfo", &contents);
            let r = analyze(Path::new("/x"), &data).unwrap();
            assert_eq!((r.verdict, r.reason), (verdict, reason), "case {name}");
            assert_eq!(r.go_version.as_deref(), Some("go1.19.8"), "case {name}");
            assert_eq!(r.has_nokmem_tag(), modinfo == tagged, "case {name}");
        }
    }

    #[test]
    fn a_c_program_is_not_go() {
        let err = inspect(Path::new("/bin/true")).unwrap_err();
        assert!(matches!(err, GobinError::NotGo { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("'/bin/true' is not a Go binary: an ELF "),
            "{err}"
        );
    }
}
