//! The payload MANIFEST (`/usr/lib/k8s-nokmem/MANIFEST`), written by
//! `scripts/build-payload.sh`: an INI file with a `[payload]` section and one section per
//! binary (`[runc]`, `[kubelet]`) giving its version, source, Go version, build tags,
//! architecture, size and sha256, and its provenance: the exact source (a Debian source
//! package's .dsc and its sha256, or a checkout's commit), the build command and the
//! Debian source packages compiled in (`built_using`, the .deb's `Built-Using`). No build
//! time: the same sources and flags give the same MANIFEST.

use std::path::Path;

use ini::Ini;

use crate::fs;
use crate::paths;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to read payload manifest")]
    Read(#[source] fs::FileError),
    #[error("payload manifest {file} is not valid INI at line {line}: {msg}")]
    Syntax {
        file: String,
        line: usize,
        msg: String,
    },
    #[error("payload manifest {file} has no [{section}] section")]
    MissingSection { file: String, section: String },
    #[error("payload manifest {file}: [{section}] lacks '{key}'")]
    MissingKey {
        file: String,
        section: String,
        key: String,
    },
    #[error("payload manifest {file}: [{section}] {key} = '{value}' is not {expected}")]
    BadValue {
        file: String,
        section: String,
        key: String,
        value: String,
        expected: &'static str,
    },
}

/// One payload binary as the build recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Binary {
    /// Section name: `runc` or `kubelet`.
    pub name: String,
    /// File name inside the payload directory.
    pub file: String,
    /// Bare version (`1.20.2`, no leading v).
    pub version: String,
    pub source: String,
    /// The Debian source package's `.dsc` sha256 (Debian sources).
    pub source_sha256: Option<String>,
    /// The checkout's commit (or `debian-<version>` for Debian's runc).
    pub commit: Option<String>,
    pub go: String,
    pub tags: Vec<String>,
    pub arch: String,
    pub size: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// How the build checked it runs.
    pub check: String,
    /// The build command: environment, `go build` and its flags.
    pub build: String,
    /// Debian source packages compiled in, as `name (= version)`.
    pub built_using: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Manifest {
    pub arch: String,
    pub binaries: Vec<Binary>,
}

const BINARY_SECTIONS: [&str; 2] = ["runc", "kubelet"];

impl Manifest {
    /// Read and parse a MANIFEST file; `shown` names it in messages.
    pub fn load(path: &Path, shown: &str) -> Result<Manifest, ManifestError> {
        let text = fs::read_to_string(path).map_err(ManifestError::Read)?;
        Manifest::parse(&text, shown)
    }

    /// Load the payload's MANIFEST under `root` (`R/usr/lib/k8s-nokmem/MANIFEST`); errors
    /// name it as the user knows it (`'/usr/…' under root R`).
    pub fn installed(root: &paths::Root) -> Result<Manifest, ManifestError> {
        Manifest::load(
            &root.join(paths::MANIFEST_FILE),
            &root.describe(paths::MANIFEST_FILE),
        )
    }

    /// Read and parse a MANIFEST that records any of the binaries, at least one (a runc-only
    /// build's, as build-rc9.sh writes): what `inspect` cross-checks one binary against.
    pub fn load_any(path: &Path, shown: &str) -> Result<Manifest, ManifestError> {
        let text = fs::read_to_string(path).map_err(ManifestError::Read)?;
        Manifest::parse_sections(&text, shown, false)
    }

    /// Parse MANIFEST text (pure): the payload's, which records every binary.
    pub fn parse(text: &str, file: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse_sections(text, file, true)
    }

    /// Parse MANIFEST text; `all`: every binary section must be there, else at least one.
    fn parse_sections(text: &str, file: &str, all: bool) -> Result<Manifest, ManifestError> {
        let ini = Ini::load_from_str(text).map_err(|e| ManifestError::Syntax {
            file: file.to_string(),
            line: e.line,
            msg: e.msg.to_string(),
        })?;
        let section = |name: &str| {
            ini.section(Some(name))
                .ok_or_else(|| ManifestError::MissingSection {
                    file: file.to_string(),
                    section: name.to_string(),
                })
        };
        let get = |props: &ini::Properties, section: &str, key: &str| {
            props
                .get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ManifestError::MissingKey {
                    file: file.to_string(),
                    section: section.to_string(),
                    key: key.to_string(),
                })
        };
        let bad = |section: &str, key: &str, value: &str, expected| ManifestError::BadValue {
            file: file.to_string(),
            section: section.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };

        let payload = section("payload")?;
        let arch = get(payload, "payload", "arch")?;
        let mut binaries = Vec::new();
        for name in BINARY_SECTIONS {
            let props = match section(name) {
                Ok(props) => props,
                Err(_) if !all => continue,
                Err(e) => return Err(e),
            };
            let size_text = get(props, name, "size")?;
            let size = size_text
                .parse()
                .map_err(|_| bad(name, "size", &size_text, "a size in bytes"))?;
            let sha256 = get(props, name, "sha256")?.to_ascii_lowercase();
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(name, "sha256", &sha256, "64 hex digits"));
            }
            let file_name = get(props, name, "file")?;
            if file_name.contains('/') || file_name.starts_with('.') {
                return Err(bad(name, "file", &file_name, "a plain file name"));
            }
            binaries.push(Binary {
                name: name.to_string(),
                file: file_name,
                version: get(props, name, "version")?,
                source: get(props, name, "source").unwrap_or_default(),
                go: get(props, name, "go").unwrap_or_default(),
                tags: props
                    .get("tags")
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                arch: get(props, name, "arch").unwrap_or_else(|_| arch.clone()),
                size,
                sha256,
                check: get(props, name, "check").unwrap_or_default(),
                source_sha256: get(props, name, "source_sha256").ok(),
                commit: get(props, name, "commit").ok(),
                build: get(props, name, "build").unwrap_or_default(),
                built_using: get(props, name, "built_using")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            });
        }
        if binaries.is_empty() {
            // none of the binary sections: name the first one missing
            section(BINARY_SECTIONS[0])?;
        }
        Ok(Manifest { arch, binaries })
    }

    /// The binary recorded under `name` (`runc` or `kubelet`).
    pub fn binary(&self, name: &str) -> Option<&Binary> {
        self.binaries.iter().find(|b| b.name == name)
    }

    /// The binary recorded with file name `file` (`kubelet` for `.../kubelet`).
    pub fn binary_by_file(&self, file: &str) -> Option<&Binary> {
        self.binaries.iter().find(|b| b.file == file)
    }

    /// The binary whose recorded sha256 is `sha256` (lowercase hex).
    pub fn binary_by_sha256(&self, sha256: &str) -> Option<&Binary> {
        self.binaries.iter().find(|b| b.sha256 == sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runc-only MANIFEST (build-rc9.sh's) is no payload manifest, but `inspect` can
    /// cross-check that runc against it; one with no binary at all is refused either way.
    #[test]
    fn a_manifest_of_some_binaries_loads_only_for_a_cross_check() {
        let dir = tempfile::tempdir().unwrap();
        let runc_only = GOOD.split("\n[kubelet]").next().unwrap().to_string();
        let path = dir.path().join("MANIFEST");
        std::fs::write(&path, &runc_only).unwrap();
        let err = Manifest::load(&path, "M").unwrap_err();
        assert!(
            err.to_string().contains("has no [kubelet] section"),
            "{err}"
        );
        let m = Manifest::load_any(&path, "M").unwrap();
        assert_eq!(m.binaries.len(), 1);
        assert_eq!(m.binaries[0].name, "runc");
        std::fs::write(&path, "[payload]\narch = amd64\n").unwrap();
        let err = Manifest::load_any(&path, "M").unwrap_err();
        assert!(err.to_string().contains("has no [runc] section"), "{err}");
    }

    const GOOD: &str = "; k8s-nokmem payload manifest\n[payload]\narch = arm64\n\n\
        [runc]\nfile = runc\nversion = 1.1.5\nversion_output = runc version 1.1.5\n\
        source = debian:runc=1.1.5+ds1-1+deb12u1\nsource_dsc = runc_1.1.5+ds1-1+deb12u1.dsc\n\
        source_sha256 = 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
        commit = debian-1.1.5+ds1-1+deb12u1\ngo = go1.19.8\n\
        build = CGO_ENABLED=1 GOOS=linux GOARCH=arm64 go build -trimpath -tags=seccomp,nokmem -ldflags='-s -w -buildid='\n\
        built_using = glibc (= 2.36-9+deb12u4), golang-1.19 (= 1.19.8-2), runc (= 1.1.5+ds1-1+deb12u1)\n\
        tags = seccomp netgo osusergo static_build nokmem\narch = arm64\nsize = 9437184\n\
        sha256 = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nkmem = safe\n\
        check = --version under qemu-aarch64-static\n\n\
        [kubelet]\nfile = kubelet\nversion = 1.20.2\nsource = debian:kubernetes=1.20.5+really1.20.2-1\n\
        go = go1.19.8\ntags = selinux notest nokmem\narch = arm64\nsize = 101000000\n\
        sha256 = bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\nkmem = safe\ncheck = amd64 twin --version\n";

    #[test]
    fn parses_a_build_manifest() {
        let m = Manifest::parse(GOOD, "MANIFEST").unwrap();
        assert_eq!(m.arch, "arm64");
        let runc = m.binary("runc").unwrap();
        assert_eq!(runc.version, "1.1.5");
        assert_eq!(runc.size, 9437184);
        assert_eq!(runc.sha256, "a".repeat(64), "sha256 is lowercased");
        assert!(runc.tags.iter().any(|t| t == "nokmem"));
        assert_eq!(m.binary("kubelet").unwrap().version, "1.20.2");
        assert_eq!(runc.commit.as_deref(), Some("debian-1.1.5+ds1-1+deb12u1"));
        assert_eq!(runc.source_sha256.as_deref().map(str::len), Some(64));
        assert!(runc.build.contains("-trimpath"), "{}", runc.build);
        assert_eq!(
            runc.built_using,
            [
                "glibc (= 2.36-9+deb12u4)",
                "golang-1.19 (= 1.19.8-2)",
                "runc (= 1.1.5+ds1-1+deb12u1)"
            ]
        );
        assert_eq!(m.binary_by_file("kubelet").unwrap().name, "kubelet");
        assert_eq!(m.binary_by_sha256(&"a".repeat(64)).unwrap().name, "runc");
        let kubelet = m.binary("kubelet").unwrap();
        assert!(kubelet.built_using.is_empty() && kubelet.commit.is_none());
    }

    #[test]
    fn broken_manifests_say_what_is_wrong() {
        let cases = [
            (
                GOOD.replace("[kubelet]", "[kubelet-x]"),
                "no [kubelet] section",
            ),
            (GOOD.replace("size = 9437184", "size = big"), "size = 'big'"),
            (
                GOOD.replace("sha256 = bbbb", "sha256 = zz"),
                "64 hex digits",
            ),
            (
                GOOD.replace("file = runc", "file = ../runc"),
                "a plain file name",
            ),
            (GOOD.replace("version = 1.20.2\n", ""), "lacks 'version'"),
            ("[payload\n".to_string(), "not valid INI"),
        ];
        for (text, want) in cases {
            let err = Manifest::parse(&text, "'/usr/lib/k8s-nokmem/MANIFEST'").unwrap_err();
            assert!(err.to_string().contains(want), "want '{want}', got: {err}");
        }
    }

    #[test]
    fn the_installed_manifest_is_read_under_the_root_and_named_as_the_user_knows_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = paths::Root::new(dir.path());
        let err = Manifest::installed(&root).unwrap_err();
        assert!(
            matches!(&err, ManifestError::Read(e) if e.is_not_found()),
            "{err}"
        );
        let file = dir.path().join("usr/lib/k8s-nokmem/MANIFEST");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "[payload\n").unwrap();
        let err = Manifest::installed(&root).unwrap_err().to_string();
        let shown = format!(
            "'/usr/lib/k8s-nokmem/MANIFEST' under root '{}'",
            dir.path().display()
        );
        assert!(err.contains(&shown), "{err}");
        std::fs::write(&file, GOOD).unwrap();
        assert_eq!(Manifest::installed(&root).unwrap().arch, "arm64");
    }
}
