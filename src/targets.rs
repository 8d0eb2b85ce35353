//! What we own on a node: for each payload binary, the path we divert and replace, where
//! dpkg keeps the original (`<path>.distrib`), and what is there now. install, remove and
//! status all iterate [`Target`]s; what was swapped is recorded in [`crate::state`].

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use log::debug;

use crate::config::{Config, ConfigError, TargetPath};
use crate::divert::{self, Diversion};
use crate::dpkg::{Dpkg, DpkgError};
use crate::fs::{FileError, WrapIo};
use crate::manifest::{Binary, Manifest};
use crate::paths::{self, Root};
use crate::state::{Original, PackageVersion, State, TargetState};

/// Where a binary usually lives, in the order we look. runc is found by dockerd and
/// containerd through `$PATH`, and systemd's default service PATH has /usr/sbin before
/// /usr/bin: that order wins when both exist (Debian's and Ubuntu's runc package ship
/// /usr/sbin/runc, docker-ce's containerd.io /usr/bin/runc). kubelet.service names its
/// binary; /usr/bin/kubelet is where the Kubernetes packages put it.
pub const USUAL_PATHS: [(&str, &[&str]); 2] = [
    ("runc", &["/usr/sbin/runc", "/usr/bin/runc"]),
    ("kubelet", &["/usr/bin/kubelet", "/usr/local/bin/kubelet"]),
];

/// Mode of a placed payload binary.
pub const PAYLOAD_MODE: u32 = 0o755;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("no [{name}] binary in the payload manifest")]
    NotInManifest { name: String },
    #[error("'{}' is a {kind}, not a file or a symlink; set [{name}] path in the config to the real binary", path.display())]
    NotAFile {
        name: String,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("failed to ask dpkg who ships '{}'", path.display())]
    Dpkg {
        path: PathBuf,
        #[source]
        source: DpkgError,
    },
    /// A configured value that does not hold on this node, located where it was set.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the {name} path {path:?} holds a newline, which dpkg-divert refuses (its database keeps one path a line); set [{name}] path in the config to the binary's real path")]
    Newline { name: String, path: PathBuf },
}

/// Reading an [`Original`] from the disk and describing it are targets' business.
impl Original {
    /// Describe what is at `on_disk` (a path under the root), without following a symlink.
    pub fn probe(name: &str, on_disk: &Path) -> Result<Original, TargetError> {
        let meta = match fs::symlink_metadata(on_disk) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Original::Missing),
            Err(e) => return Err(FileError::new("inspect", on_disk, e).into()),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(on_disk).with_path("read symlink", on_disk)?;
            Ok(Original::Symlink { target })
        } else if ft.is_file() {
            Ok(Original::File {
                sha256: crate::fs::sha256_file(on_disk)?,
                size: meta.len(),
                mode: meta.permissions().mode() & 0o7777,
            })
        } else {
            Err(TargetError::NotAFile {
                name: name.to_string(),
                path: on_disk.to_path_buf(),
                kind: if ft.is_dir() {
                    "directory"
                } else {
                    "special file"
                },
            })
        }
    }

    /// Short human description.
    pub fn describe(&self) -> String {
        match self {
            Original::Missing => "nothing".to_string(),
            Original::File { sha256, size, .. } => {
                format!("a file of {size} bytes, sha256 {}", short(sha256))
            }
            Original::Symlink { target } => format!("a symlink to '{}'", target.display()),
        }
    }
}

/// The first 12 hex digits of a sha256, for messages.
pub fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// How a target path was chosen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChosenBy {
    /// `[name] path` in the config.
    Config,
    /// We already divert it.
    OurDiversion,
    /// dpkg says this package ships it.
    Package(String),
    /// A file is there, no package ships it.
    Exists,
    /// The usual path is a symlink to this file: the file is diverted, so that every way
    /// of running it gets the payload.
    LinkedFrom(PathBuf),
    /// Nothing anywhere: the first usual path.
    Default,
}

impl std::fmt::Display for ChosenBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChosenBy::Config => write!(f, "set in the config"),
            ChosenBy::OurDiversion => write!(f, "already diverted by k8s-nokmem"),
            ChosenBy::Package(p) => write!(f, "shipped by package '{p}'"),
            ChosenBy::Exists => write!(f, "present, not from a package"),
            ChosenBy::LinkedFrom(link) => write!(f, "'{}' is a symlink to it", link.display()),
            ChosenBy::Default => write!(f, "not installed; the usual path"),
        }
    }
}

/// One binary we own on the node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// `runc` or `kubelet`.
    pub name: String,
    /// In-system absolute path we divert and replace.
    pub path: PathBuf,
    /// Where dpkg keeps the original: `<path>.distrib`.
    pub divert_to: PathBuf,
    /// In-system path of the payload file.
    pub payload: PathBuf,
    pub payload_sha256: String,
    pub payload_version: String,
    /// Services that run this binary.
    pub restart: Vec<String>,
    pub found: ChosenBy,
}

impl Target {
    pub fn new(
        name: &str,
        path: PathBuf,
        bin: &Binary,
        restart: Vec<String>,
        found: ChosenBy,
    ) -> Target {
        Target {
            name: name.to_string(),
            divert_to: divert::default_divert_to(&path),
            path,
            payload: Path::new(paths::PAYLOAD_DIR).join(&bin.file),
            payload_sha256: bin.sha256.clone(),
            payload_version: bin.version.clone(),
            restart,
            found,
        }
    }
}

/// Choose each target's path: the config's, else one we already divert, else the first
/// usual path that dpkg knows or that exists, else the first usual path.
pub fn resolve(
    root: &Root,
    config: &Config,
    manifest: &Manifest,
    diversions: &[Diversion],
    state: &State,
    dpkg: &Dpkg,
) -> Result<Vec<Target>, TargetError> {
    let mut out = Vec::new();
    for tc in &config.targets {
        let bin = manifest
            .binary(tc.name)
            .ok_or_else(|| TargetError::NotInManifest {
                name: tc.name.to_string(),
            })?;
        let (path, found) = match &tc.path {
            TargetPath::Fixed(p) => {
                check_real_path(root, config, tc.name, p)?;
                (p.clone(), ChosenBy::Config)
            }
            TargetPath::Auto => {
                let recorded = state.targets.get(tc.name).map(|t| t.path.as_path());
                auto_path(root, tc.name, recorded, diversions, dpkg)?
            }
        };
        // refused here, before anything changes, rather than by dpkg-divert mid-transaction
        if path.as_os_str().as_bytes().contains(&b'\n') {
            return Err(TargetError::Newline {
                name: tc.name.to_string(),
                path,
            });
        }
        debug!("target {}: '{}' ({found})", tc.name, path.display());
        out.push(Target::new(tc.name, path, bin, tc.restart.clone(), found));
    }
    Ok(out)
}

/// Load the config and check its target paths against this node (`check_real_path`):
/// how status, verify, remove and `k8s-nokmem config` read it, so that a bad path is
/// reported as a bad value in the config. Install loads it unchecked and `resolve`, in its
/// preflight, refuses a bad path where it is used.
pub fn load_config(root: &Root, explicit: Option<&Path>) -> Result<Config, TargetError> {
    let config = Config::load(root, explicit)?;
    for t in &config.targets {
        if let TargetPath::Fixed(path) = &t.path {
            check_real_path(root, &config, t.name, path)?;
        }
    }
    Ok(config)
}

/// A configured target path must be the file itself as seen inside `root`, not an alias
/// through a symlinked directory (`/sbin/runc` when `/sbin -> usr/sbin`) or a symlink:
/// dpkg knows, diverts and upgrades the real path only. The error points at the config
/// line that set it.
fn check_real_path(
    root: &Root,
    config: &Config,
    name: &str,
    path: &Path,
) -> Result<(), TargetError> {
    let Some(real) = real_path(root, path) else {
        return Ok(());
    };
    if real == path {
        return Ok(());
    }
    let value = path.display().to_string();
    Err(config
        .bad_setting(
            name,
            "path",
            &value,
            &format!(
                "the real path '{}' ('{value}' goes through a symlink on this node); set path = {}",
                real.display(),
                real.display()
            ),
        )
        .into())
}

/// Where `path` really is inside `root`: every symlink resolved, also the last component
/// when it is a link to an existing file; `None` when its directory does not exist.
fn real_path(root: &Root, path: &Path) -> Option<PathBuf> {
    if let Some(real) = root.canonicalize(path) {
        return Some(real);
    }
    let (dir, name) = (path.parent()?, path.file_name()?);
    root.canonicalize(dir).map(|d| d.join(name))
}

fn auto_path(
    root: &Root,
    name: &str,
    recorded: Option<&Path>,
    diversions: &[Diversion],
    dpkg: &Dpkg,
) -> Result<(PathBuf, ChosenBy), TargetError> {
    let usual: Vec<&Path> = USUAL_PATHS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p.iter().map(Path::new).collect())
        .unwrap_or_default();
    // what we already divert stays the target (a re-run must not move it)
    for p in recorded.into_iter().chain(usual.iter().copied()) {
        if diversions.iter().any(|d| d.is_ours() && d.path == p) {
            return Ok((p.to_path_buf(), ChosenBy::OurDiversion));
        }
    }
    let mut found: Vec<(PathBuf, ChosenBy)> = Vec::new();
    for p in &usual {
        let owners = dpkg.owners(p).map_err(|source| TargetError::Dpkg {
            path: p.to_path_buf(),
            source,
        })?;
        let is_link = fs::symlink_metadata(root.join(p)).map(|m| m.file_type().is_symlink());
        let candidate = match (is_link, owners.into_iter().next()) {
            // a symlink to a real file: divert the file, which every caller ends up running
            (Ok(true), _) => match root.canonicalize(p) {
                Some(real) if root.join(&real).is_file() => {
                    (real, ChosenBy::LinkedFrom(p.to_path_buf()))
                }
                _ => (p.to_path_buf(), ChosenBy::Exists),
            },
            (_, Some(pkg)) => (p.to_path_buf(), ChosenBy::Package(pkg)),
            (Ok(false), None) => (p.to_path_buf(), ChosenBy::Exists),
            (Err(_), None) => continue,
        };
        if !found.iter().any(|(f, _)| *f == candidate.0) {
            found.push(candidate);
        }
    }
    if found.len() > 1 {
        let all: Vec<String> = found
            .iter()
            .map(|(p, _)| format!("'{}'", p.display()))
            .collect();
        log::warn!(
            "several {name} binaries: {}; swapping {} (first in $PATH order); set [{name}] path in the config to choose",
            all.join(", "),
            all[0]
        );
    }
    if let Some(first) = found.into_iter().next() {
        return Ok(first);
    }
    let first = usual
        .first()
        .copied()
        .unwrap_or(Path::new("/usr/bin/false"));
    Ok((first.to_path_buf(), ChosenBy::Default))
}

/// What dpkg says about the package of a target.
impl PackageVersion {
    /// The first package that ships `path` and its installed version, now.
    pub fn of(dpkg: &Dpkg, path: &Path) -> Result<Option<PackageVersion>, DpkgError> {
        let Some(package) = dpkg.owners(path)?.into_iter().next() else {
            return Ok(None);
        };
        Ok(dpkg
            .version(&package)?
            .map(|version| PackageVersion { package, version }))
    }

    /// What to record for `target` in the new state: the recorded package when the same
    /// payload stays in place (the payload was built for that version, not for one that
    /// arrived underneath since), else the package as it is now. A dpkg-query failure
    /// records nothing (logged): it must not stop the swap.
    pub fn to_record(
        dpkg: &Dpkg,
        target: &Target,
        recorded: Option<&TargetState>,
        payload_stays: bool,
    ) -> Option<PackageVersion> {
        if let Some(kept) = recorded
            .filter(|r| payload_stays && r.path == target.path)
            .filter(|r| r.payload_sha256 == target.payload_sha256)
            .and_then(|r| r.original_package.clone())
        {
            return Some(kept);
        }
        PackageVersion::of(dpkg, &target.path)
            .map_err(|e| {
                log::warn!(
                    "{} package of '{}' not recorded: {}",
                    target.name,
                    target.path.display(),
                    crate::notes::error_chain(&e)
                )
            })
            .ok()
            .flatten()
    }
}

/// How the package of a swapped target's original changed since the swap.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "change")]
pub enum Underneath {
    /// Nothing recorded (no package shipped it, or an older state file).
    NotRecorded,
    Same {
        package: String,
        version: String,
    },
    /// A new version landed at `divert_to`; the payload was built for `was`.
    Upgraded {
        package: String,
        was: String,
        now: String,
    },
    /// The package is no longer installed.
    Removed {
        package: String,
        was: String,
    },
}

impl Underneath {
    /// Compare what `recorded` says with dpkg now.
    pub fn check(dpkg: &Dpkg, recorded: &TargetState) -> Result<Underneath, DpkgError> {
        let Some(at_swap) = &recorded.original_package else {
            return Ok(Underneath::NotRecorded);
        };
        let (package, was) = (at_swap.package.clone(), at_swap.version.clone());
        Ok(match dpkg.version(&at_swap.package)? {
            None => Underneath::Removed { package, was },
            Some(now) if now == was => Underneath::Same {
                package,
                version: now,
            },
            Some(now) => Underneath::Upgraded { package, was, now },
        })
    }

    /// A warning for `name` (`runc`, `kubelet`) when the package changed; the update lies
    /// at `divert_to`.
    pub fn warning(&self, name: &str, divert_to: &Path) -> Option<String> {
        match self {
            Underneath::NotRecorded | Underneath::Same { .. } => None,
            Underneath::Upgraded { package, was, now } => Some(format!(
                "{name} package '{package}' upgraded to {now} underneath ({was} at the swap): the update lies at '{}' and never runs; build the payload from it",
                divert_to.display()
            )),
            Underneath::Removed { package, was } => Some(format!(
                "{name} package '{package}' ({was} at the swap) is no longer installed, but the payload {name} still runs"
            )),
        }
    }
}

/// What is at a target path now, compared with the payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InPlace {
    Missing,
    Payload,
    /// A file, not the payload (sha256 given).
    Other(String),
    Symlink(PathBuf),
}

/// Look at what is at `target.path` now.
pub fn in_place(root: &Root, target: &Target) -> Result<InPlace, TargetError> {
    Ok(
        match Original::probe(&target.name, &root.join(&target.path))? {
            Original::Missing => InPlace::Missing,
            Original::Symlink { target } => InPlace::Symlink(target),
            Original::File { sha256, .. } if sha256 == target.payload_sha256 => InPlace::Payload,
            Original::File { sha256, .. } => InPlace::Other(sha256),
        },
    )
}

/// Copy `src` to a new file `dst` with `mode` (whatever was at `dst`, a stale copy or a
/// link, is unlinked first, never followed: [`crate::fs::create_replacing`]), fsync it, and
/// return the sha256 of the bytes written. One pass over the data.
pub fn copy_hashed(src: &Path, dst: &Path, mode: u32) -> Result<String, FileError> {
    use std::io::Write;
    let input = fs::File::open(src).with_path("open", src)?;
    let mut out = crate::fs::create_replacing(dst, mode)?;
    let sha256 = crate::fs::sha256_reading(input, src, |chunk| {
        out.write_all(chunk).with_path("write", dst)
    })?;
    out.sync_all().with_path("fsync", dst)?;
    Ok(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MANIFEST with runc and kubelet (checksums unused here).
    fn manifest() -> Manifest {
        let z = "0".repeat(64);
        Manifest::parse(
            &format!(
                "[payload]\narch = amd64\nbuilt = 2026-11-28T00:00:00Z\n\
             [runc]\nfile = runc\nversion = 1.1.5\nsource = t\ngo = go1.19\ntags = nokmem\n\
             arch = amd64\nsize = 1\nsha256 = {z}\n\
             [kubelet]\nfile = kubelet\nversion = 1.20.2\nsource = t\ngo = go1.19\ntags = nokmem\n\
             arch = amd64\nsize = 1\nsha256 = {z}\n"
            ),
            "MANIFEST",
        )
        .unwrap()
    }

    /// A configured path with a newline (an escape in the config, a generated drop-in) is
    /// refused when targets are resolved, naming the target and the fix: dpkg-divert would
    /// refuse it only after the services were stopped. Spaces and " to " are fine.
    #[test]
    fn a_target_path_with_a_newline_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let manifest = manifest();
        let resolve_with = |kubelet: &str| {
            let mut config = Config::default();
            for t in &mut config.targets {
                t.path = TargetPath::Fixed(match t.name {
                    "kubelet" => kubelet.into(),
                    _ => "/usr/sbin/runc".into(),
                });
            }
            let dpkg = Dpkg::new(&root);
            resolve(&root, &config, &manifest, &[], &State::default(), &dpkg)
        };
        let err = resolve_with("/opt/my\nbin/kubelet").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kubelet path \"/opt/my\\nbin/kubelet\" holds a newline, which dpkg-divert refuses \
             (its database keeps one path a line); set [kubelet] path in the config to the \
             binary's real path"
        );
        let ok = resolve_with("/opt/back to school/kubelet").unwrap();
        assert_eq!(ok[1].path, Path::new("/opt/back to school/kubelet"));
    }

    /// A configured target path through a symlink on this node (a directory alias, a link
    /// to the binary) is refused where targets are resolved, naming the config file, line,
    /// key and value and the real path to set: dpkg diverts and upgrades the real path only.
    #[test]
    fn a_target_path_through_a_symlink_is_refused_with_the_real_path() {
        // a usrmerged root: /sbin -> usr/sbin, and a /usr/bin/runc -> ../sbin/runc link
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        fs::create_dir_all(root.join("/usr/sbin")).unwrap();
        fs::create_dir_all(root.join("/usr/bin")).unwrap();
        fs::create_dir_all(root.join("/etc/k8s-nokmem")).unwrap();
        fs::write(root.join("/usr/sbin/runc"), b"runc").unwrap();
        std::os::unix::fs::symlink("usr/sbin", root.join("/sbin")).unwrap();
        std::os::unix::fs::symlink("../sbin/runc", root.join("/usr/bin/runc")).unwrap();
        let manifest = manifest();
        let cases = [
            ("directory alias", "/sbin/runc", Some("/usr/sbin/runc")),
            (
                "alias of a missing file",
                "/sbin/kubelet-none",
                Some("/usr/sbin/kubelet-none"),
            ),
            (
                "symlink to the binary",
                "/usr/bin/runc",
                Some("/usr/sbin/runc"),
            ),
            ("the real file", "/usr/sbin/runc", None),
            ("not there yet", "/usr/sbin/nothing", None),
            ("no such directory", "/opt/none/runc", None),
        ];
        for (case, value, want) in cases {
            let text =
                format!("# test\n[runc]\npath = {value}\n[kubelet]\npath = /usr/bin/kubelet\n");
            fs::write(root.join(paths::CONFIG_FILE), &text).unwrap();
            let config = Config::load(&root, None).unwrap();
            let dpkg = Dpkg::new(&root);
            let got = resolve(&root, &config, &manifest, &[], &State::default(), &dpkg);
            match want {
                None => assert!(
                    got.is_ok(),
                    "case '{case}': {:?}",
                    got.err().map(|e| e.to_string())
                ),
                Some(real) => {
                    let msg = got.unwrap_err().to_string();
                    assert_eq!(
                        msg,
                        format!(
                            "bad value in config {} line 3: [runc] path = '{value}': expected the real path '{real}' ('{value}' goes through a symlink on this node); set path = {real}",
                            root.describe(paths::CONFIG_FILE)
                        ),
                        "case '{case}'"
                    );
                }
            }
        }
    }

    /// The staged copy has a name others can predict (`.kubelet.k8s-nokmem-new` next to
    /// the target): a link planted there is replaced, its target never written.
    #[test]
    fn copy_hashed_never_writes_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let (src, victim) = (dir.path().join("payload"), dir.path().join("victim"));
        fs::write(&src, b"abc").unwrap();
        fs::write(&victim, b"keep").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let staged = dir.path().join(".kubelet.k8s-nokmem-new");
        std::os::unix::fs::symlink(&victim, &staged).unwrap();
        let sha = copy_hashed(&src, &staged, PAYLOAD_MODE).unwrap();
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        let meta = fs::symlink_metadata(&victim).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let meta = fs::symlink_metadata(&staged).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o7777, PAYLOAD_MODE);
        assert_eq!(fs::read(&staged).unwrap(), b"abc");
    }

    #[test]
    fn probe_tells_files_symlinks_and_nothing_apart() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"abc").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o750)).unwrap();
        let l = dir.path().join("l");
        std::os::unix::fs::symlink("f", &l).unwrap();
        assert_eq!(
            Original::probe("t", &f).unwrap(),
            Original::File {
                sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
                size: 3,
                mode: 0o750
            }
        );
        assert_eq!(
            Original::probe("t", &l).unwrap(),
            Original::Symlink { target: "f".into() }
        );
        assert_eq!(
            Original::probe("t", &dir.path().join("none")).unwrap(),
            Original::Missing
        );
        let err = Original::probe("kubelet", dir.path()).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        assert!(err.to_string().contains("[kubelet] path"), "{err}");
    }
}
