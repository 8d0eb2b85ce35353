//! `k8s-nokmem inspect [--json] [--manifest PATH] FILE...`: does each Go binary switch kmem
//! accounting on, and is it what its payload MANIFEST says?
//!
//! One line per file (or a JSON array) on stdout; errors on stderr, naming the file. Exit
//! 0 when every file is safe (and matches its MANIFEST), 1 when any enables kmem or differs
//! from its MANIFEST (that outranks errors), 2 when any could not be inspected.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Ctx, Outcome};
use crate::fs;
use crate::gobin::provenance::{self, Check};
use crate::gobin::{self, BinaryReport, Evidence, GobinError, Reason, Verdict};
use crate::manifest::Manifest;
use crate::{notes, output};

const AFTER_HELP: &str = "\
Evidence of kmem-enabling code: the string memory.kmem.limit_in_bytes and the source
file name libcontainer/cgroups/fs/kmem.go (kept in the pclntab even when stripped). The
nokmem tag in the build info (Go >= 1.18) and kmem_disabled.go support a 'safe' verdict
but do not make one. FILE paths are used as given (--root does not apply).

A payload binary is also cross-checked against its MANIFEST (the one given with
--manifest, else a MANIFEST beside the binary, as in /usr/lib/k8s-nokmem/): its
sha256, and the Go version, build tags, architecture, -trimpath and CGO_ENABLED that
its own build info records must be what the MANIFEST says it was built with.

Exit codes: 0 all safe (and as their MANIFEST says), 1 any enables kmem or differs
from its MANIFEST, 2 any could not be inspected (missing, not a file, truncated, not a
Go binary, MANIFEST unreadable) and none of the above.";

/// Tell from a Go binary's bytes whether it switches kmem accounting on
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Inspect {
    /// Print a JSON array (path, verdict, go_version, tags, evidence, error) instead of
    /// one line per file
    #[arg(long)]
    pub json: bool,

    /// Cross-check each FILE against this payload MANIFEST (the section whose `file` is
    /// FILE's name, else whose sha256 is FILE's); default: a MANIFEST beside FILE
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,

    /// Go binaries to inspect (ELF; amd64, arm64 or other; stripped or not)
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

/// One element of the `--json` array.
#[derive(Debug, Serialize)]
struct JsonEntry<'a> {
    path: &'a std::path::Path,
    /// `safe`, `enables-kmem` or `error`.
    verdict: &'static str,
    reason: Option<Reason>,
    arch: Option<&'a str>,
    go_version: Option<&'a str>,
    go_releases: Option<&'a str>,
    tags: Option<&'a [String]>,
    evidence: &'a [Evidence],
    nokmem_evidence: &'a [Evidence],
    size: Option<u64>,
    /// The MANIFEST cross-check, when there was a MANIFEST to check against.
    manifest: Option<&'a ManifestCheck>,
    error: Option<String>,
}

/// A binary against its MANIFEST section.
#[derive(Debug, Serialize)]
struct ManifestCheck {
    path: PathBuf,
    section: String,
    ok: bool,
    checks: Vec<Check>,
}

/// What inspecting one file gave: its report and cross-check, or an error.
type Inspected = Result<(BinaryReport, Option<ManifestCheck>), InspectError>;

#[derive(Debug, thiserror::Error)]
enum InspectError {
    #[error(transparent)]
    Gobin(#[from] GobinError),
    #[error("failed to cross-check '{}' against its MANIFEST", file.display())]
    Manifest {
        file: PathBuf,
        #[source]
        source: anyhow::Error,
    },
}

impl InspectError {
    fn hint(&self) -> String {
        match self {
            InspectError::Gobin(e) => e.hint(),
            InspectError::Manifest { .. } => {
                "name the payload's MANIFEST with --manifest PATH (e.g. /usr/lib/k8s-nokmem/MANIFEST), or check that it is the one this binary was built with".into()
            }
        }
    }
}

impl Inspect {
    pub fn run(self, _ctx: &Ctx) -> anyhow::Result<Outcome> {
        let results: Vec<(PathBuf, Inspected)> = self
            .files
            .iter()
            .map(|path| (path.clone(), inspect_one(path, self.manifest.as_deref())))
            .collect();

        let mut outcome = Outcome::Ok;
        for (_, result) in &results {
            let this = match result {
                Ok((r, _)) if r.verdict == Verdict::EnablesKmem => Outcome::Problem,
                Ok((_, Some(m))) if !m.ok => Outcome::Problem,
                Ok(_) => Outcome::Ok,
                Err(err) => {
                    // as `main` shows a failed command: the cause chain, then the hint
                    eprintln!("{}", notes::error_report(err, &[err.hint()]));
                    Outcome::Unknown
                }
            };
            outcome = outcome.max(this);
        }

        // a closed pipe (`| head`) ends the output quietly; the verdict still counts
        output::write_with(|out| {
            if self.json {
                write_json(out, &results)
            } else {
                results
                    .iter()
                    .filter_map(|(_, r)| r.as_ref().ok())
                    .try_for_each(|(r, m)| {
                        writeln!(out, "{}", human_line(r))?;
                        match m {
                            Some(m) => writeln!(out, "{}", manifest_line(m)),
                            None => Ok(()),
                        }
                    })
            }
        })?;
        Ok(outcome)
    }
}

/// Inspect `path` and, when there is a MANIFEST for it (`manifest`, else one beside it),
/// cross-check it.
fn inspect_one(path: &Path, manifest: Option<&Path>) -> Inspected {
    let report = gobin::inspect(path)?;
    let beside = path.parent().map(|d| d.join("MANIFEST"));
    let manifest_path = match (manifest, beside) {
        (Some(m), _) => m.to_path_buf(),
        (None, Some(b)) if b.is_file() => b,
        _ => return Ok((report, None)),
    };
    let explicit = manifest.is_some();
    let check = cross_check(path, &report, &manifest_path, explicit).map_err(|source| {
        InspectError::Manifest {
            file: path.to_path_buf(),
            source,
        }
    })?;
    Ok((report, check))
}

fn cross_check(
    path: &Path,
    report: &BinaryReport,
    manifest_path: &Path,
    explicit: bool,
) -> anyhow::Result<Option<ManifestCheck>> {
    use anyhow::Context;
    let shown = format!("'{}'", manifest_path.display());
    let manifest = Manifest::load_any(manifest_path, &shown)?;
    let sha256 =
        fs::sha256_file(path).with_context(|| format!("failed to hash '{}'", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entry = manifest
        .binary_by_file(&name)
        .or_else(|| manifest.binary_by_sha256(&sha256));
    let Some(entry) = entry else {
        if !explicit {
            log::debug!(
                "inspect '{}': the MANIFEST beside it describes no '{name}'",
                path.display()
            );
            return Ok(None);
        }
        anyhow::bail!("MANIFEST {shown} has no section with file = {name} or sha256 = {sha256}");
    };
    let checks = provenance::cross_check(report, &sha256, entry);
    Ok(Some(ManifestCheck {
        path: manifest_path.to_path_buf(),
        section: entry.name.clone(),
        ok: provenance::all_match(&checks),
        checks,
    }))
}

/// `  MANIFEST '/usr/lib/k8s-nokmem/MANIFEST' [kubelet]: matches: sha256 ok, go ok, ...`
fn manifest_line(m: &ManifestCheck) -> String {
    format!(
        "  MANIFEST '{}' [{}]: {}: {}",
        m.path.display(),
        m.section,
        if m.ok { "matches" } else { "DIFFERS" },
        provenance::summary(&m.checks)
    )
}

fn write_json(out: &mut dyn Write, results: &[(PathBuf, Inspected)]) -> io::Result<()> {
    let entries: Vec<JsonEntry> = results
        .iter()
        .map(|(path, result)| match result {
            Ok((r, m)) => JsonEntry {
                path: &r.path,
                verdict: r.verdict.as_str(),
                reason: Some(r.reason),
                arch: Some(&r.arch),
                go_version: r.go_version.as_deref(),
                go_releases: r.go_releases.as_deref(),
                tags: r.tags.as_deref(),
                evidence: &r.evidence,
                nokmem_evidence: &r.nokmem_evidence,
                size: Some(r.size),
                manifest: m.as_ref(),
                error: None,
            },
            Err(err) => JsonEntry {
                path,
                verdict: "error",
                reason: None,
                arch: None,
                go_version: None,
                go_releases: None,
                tags: None,
                evidence: &[],
                nokmem_evidence: &[],
                size: None,
                manifest: None,
                error: Some(notes::error_chain(err)),
            },
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &entries).map_err(io::Error::from)?;
    writeln!(out)
}

/// `/usr/bin/kubelet: safe (nokmem): go1.19.8, arm64, tags selinux,notest,nokmem; evidence: none`
pub fn human_line(r: &BinaryReport) -> String {
    let verdict = match r.reason {
        Reason::KmemCode => "ENABLES KMEM",
        Reason::NokmemCode | Reason::NokmemTag => "safe (nokmem)",
        Reason::NoKmemCode => "safe (no kmem-enabling code)",
    };
    let version = match (&r.go_version, &r.go_releases) {
        (Some(v), _) => v.clone(),
        (None, Some(releases)) => format!("go version unknown (pclntab of {releases})"),
        (None, None) => "go version unknown".into(),
    };
    let tags = match &r.tags {
        None => "tags unknown".to_string(),
        Some(t) if t.is_empty() => "tags none".to_string(),
        Some(t) => format!("tags {}", t.join(",")),
    };
    let mut line = format!(
        "{}: {verdict}: {version}, {}, {tags}; evidence: {}",
        r.path.display(),
        r.arch,
        list(&r.evidence)
    );
    if r.verdict == Verdict::Safe && !r.nokmem_evidence.is_empty() {
        line.push_str(&format!("; nokmem code: {}", list(&r.nokmem_evidence)));
    }
    line
}

fn list(evidence: &[Evidence]) -> String {
    if evidence.is_empty() {
        return "none".into();
    }
    evidence
        .iter()
        .map(|e| format!("{} at {:#x}", e.what, e.offset))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(reason: Reason, tags: Option<&[&str]>, evidence: Vec<Evidence>) -> BinaryReport {
        BinaryReport {
            path: "/usr/bin/kubelet".into(),
            verdict: if reason == Reason::KmemCode {
                Verdict::EnablesKmem
            } else {
                Verdict::Safe
            },
            reason,
            arch: "arm64".into(),
            go_version: Some("go1.19.8".into()),
            go_releases: None,
            tags: tags.map(|t| t.iter().map(|s| s.to_string()).collect()),
            build_settings: vec![],
            evidence,
            nokmem_evidence: vec![],
            size: 1,
        }
    }

    fn ev(what: &'static str, offset: u64) -> Evidence {
        Evidence {
            what,
            offset,
            section: None,
            occurrences: 1,
            file_name: None,
        }
    }

    #[test]
    fn human_lines() {
        let mut unknown = report(Reason::NoKmemCode, None, vec![]);
        unknown.go_version = None;
        unknown.go_releases = Some("go1.2 to go1.15".into());
        let mut disabled = report(Reason::NokmemCode, Some(&["nokmem"]), vec![]);
        disabled.nokmem_evidence = vec![ev("libcontainer/cgroups/fs/kmem_disabled.go", 0x20)];
        let cases = [
            (
                report(Reason::NokmemTag, Some(&["selinux", "notest", "nokmem"]), vec![]),
                "/usr/bin/kubelet: safe (nokmem): go1.19.8, arm64, tags selinux,notest,nokmem; evidence: none",
            ),
            (
                disabled,
                "/usr/bin/kubelet: safe (nokmem): go1.19.8, arm64, tags nokmem; evidence: none; nokmem code: libcontainer/cgroups/fs/kmem_disabled.go at 0x20",
            ),
            (
                report(Reason::NoKmemCode, Some(&[]), vec![]),
                "/usr/bin/kubelet: safe (no kmem-enabling code): go1.19.8, arm64, tags none; evidence: none",
            ),
            (
                unknown,
                "/usr/bin/kubelet: safe (no kmem-enabling code): go version unknown (pclntab of go1.2 to go1.15), arm64, tags unknown; evidence: none",
            ),
            (
                report(
                    Reason::KmemCode,
                    Some(&[]),
                    vec![ev("memory.kmem.limit_in_bytes", 0x1f00), ev("libcontainer/cgroups/fs/kmem.go", 0xabc)],
                ),
                "/usr/bin/kubelet: ENABLES KMEM: go1.19.8, arm64, tags none; evidence: memory.kmem.limit_in_bytes at 0x1f00, libcontainer/cgroups/fs/kmem.go at 0xabc",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(human_line(&r), want, "reason {:?}", r.reason);
        }
    }
}
