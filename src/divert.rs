//! `dpkg-divert` wrapper: list, add, remove diversions of our targets.
//!
//! Changes go through `dpkg-divert --package k8s-nokmem --rename --divert <path>.distrib`
//! (dpkg 1.18.4 on Ubuntu 16.04 has no `--no-rename`), with `--root R` only when the root is
//! not `/` (`--root` first appeared in dpkg 1.19.2; on a live node the flag is never
//! passed). The list is read from dpkg's diversions database itself (three lines a
//! diversion), not from `dpkg-divert --list`, whose "diversion of X to Y by P" lines cannot
//! be split when a path holds " to " or " by ". Adding is idempotent the config-package-dev
//! way: look for the exact diversion first, add only when it is missing.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::command::{self, Cmd, CommandError};
use crate::dpkg;
use crate::fs::FileError;
use crate::paths::{Root, PACKAGE};

/// The program, found on `$PATH` (it lives in /usr/bin on every dpkg system).
pub const DPKG_DIVERT: &str = "dpkg-divert";
/// The first dpkg whose dpkg-divert knows `--root`.
pub const ROOT_SINCE: &str = "1.19.2";
/// dpkg's diversions database, in its admin dir.
pub const DB_FILE: &str = "diversions";
/// The package field of a local diversion in [`DB_FILE`].
const DB_LOCAL: &[u8] = b":";

#[derive(Debug, thiserror::Error)]
pub enum DivertError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Read(#[from] FileError),
    #[error("dpkg's diversions database '{}' ends inside a diversion: line {line_no} ('{}') has no {missing} after it; `dpkg-divert --list` fails on it too: restore it from '{}-old'", path.display(), line.display(), path.display())]
    Truncated {
        path: PathBuf,
        line_no: usize,
        line: PathBuf,
        missing: &'static str,
    },
    #[error("dpkg's admin dir '{}' does not exist: is '{}' a Debian system root?", admindir.display(), root.display())]
    NoAdminDir { admindir: PathBuf, root: PathBuf },
    #[error("'{}' is already diverted to '{}' by {}", path.display(), divert_to.display(), owner_name(.package))]
    DivertedByOther {
        path: PathBuf,
        divert_to: PathBuf,
        /// `None`: a local diversion made by an administrator.
        package: Option<String>,
    },
    #[error("'{}' is diverted by k8s-nokmem to '{}', not to the expected '{}'", path.display(), found.display(), want.display())]
    DivertedElsewhere {
        path: PathBuf,
        found: PathBuf,
        want: PathBuf,
    },
    #[error("dpkg-divert {version} cannot work on root '{}': its --root option needs dpkg {ROOT_SINCE} or later; run `k8s-nokmem` inside that root (chroot), or from a host with a newer dpkg", root.display())]
    NoRootOption { version: String, root: PathBuf },
}

fn owner_name(package: &Option<String>) -> String {
    match package {
        Some(p) => format!("package '{p}'"),
        None => "a local diversion (no package)".to_string(),
    }
}

/// One diversion in dpkg's database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diversion {
    /// The in-system path that is diverted.
    pub path: PathBuf,
    /// Where the diverted file lives.
    pub divert_to: PathBuf,
    /// The package that holds it; `None` for a local (administrator's) diversion.
    pub package: Option<String>,
}

impl Diversion {
    /// True when k8s-nokmem holds it.
    pub fn is_ours(&self) -> bool {
        self.package.as_deref() == Some(PACKAGE)
    }
}

impl std::fmt::Display for Diversion {
    /// The line `LC_ALL=C dpkg-divert --list` prints for it (dpkg >= 1.19 always names the
    /// diverted-to path).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.package {
            Some(p) => write!(
                f,
                "diversion of {} to {} by {p}",
                self.path.display(),
                self.divert_to.display()
            ),
            None => write!(
                f,
                "local diversion of {} to {}",
                self.path.display(),
                self.divert_to.display()
            ),
        }
    }
}

/// Parse dpkg's diversions database (pure; `shown` names the file in errors). Each
/// diversion is three lines: the diverted path, where it is diverted to, and the package
/// (`:` for a local diversion). A line is one field whole, whatever it holds (spaces,
/// " to ", " by ", bytes that are not UTF-8): dpkg-divert refuses newlines in all three.
/// This format is the same from dpkg 1.15 (Ubuntu 16.04 has 1.18.4) to today.
pub fn parse_db(bytes: &[u8], shown: &Path) -> Result<Vec<Diversion>, DivertError> {
    let mut lines = bytes
        .split_inclusive(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\n").unwrap_or(l))
        .enumerate();
    let path_of = |l: &[u8]| PathBuf::from(OsStr::from_bytes(l));
    let mut out = Vec::new();
    while let Some((i, from)) = lines.next() {
        let truncated = |missing| DivertError::Truncated {
            path: shown.to_path_buf(),
            line_no: i + 1,
            line: path_of(from),
            missing,
        };
        let (_, to) = lines.next().ok_or_else(|| truncated("diverted-to path"))?;
        let (_, package) = lines.next().ok_or_else(|| truncated("package line"))?;
        out.push(Diversion {
            path: path_of(from),
            divert_to: path_of(to),
            package: (package != DB_LOCAL).then(|| String::from_utf8_lossy(package).into_owned()),
        });
    }
    Ok(out)
}

/// `<path>.distrib`, where dpkg and we put the diverted original.
pub fn default_divert_to(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(".distrib");
    PathBuf::from(s)
}

/// What [`DpkgDivert::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Added,
    AlreadyThere,
}

/// What [`DpkgDivert::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Removed,
    NotThere,
}

/// The version `dpkg-divert --version` prints on its first line: `Debian dpkg-divert
/// version 1.21.23 (amd64).` (dpkg >= 1.19), `Debian dpkg-divert version 1.18.4.` (pure).
pub fn parse_version(text: &str) -> Option<&str> {
    let rest = text.lines().next()?.split_once(" version ")?.1;
    let version = rest.split_whitespace().next()?.trim_end_matches('.');
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then_some(version)
}

/// The numbers of a dpkg version, for ordering upstream releases: `1.19.0.5ubuntu2` ->
/// `[1, 19, 0, 5]` (an epoch and what follows the first non-numeric part are dropped).
fn version_numbers(version: &str) -> Vec<u64> {
    let v = version.split_once(':').map_or(version, |(_, r)| r);
    let mut out = Vec::new();
    for part in v.split('.') {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let Ok(n) = digits.parse() else { break };
        out.push(n);
        // `5ubuntu2`, `0~rc1`: the number counts, nothing after it
        if digits.len() != part.len() {
            break;
        }
    }
    out
}

/// True when dpkg-divert `version` knows `--root` (dpkg >= 1.19.2).
pub fn knows_root(version: &str) -> bool {
    version_numbers(version) >= version_numbers(ROOT_SINCE)
}

/// `dpkg-divert` on one root.
#[derive(Debug, Clone)]
pub struct DpkgDivert {
    root: Root,
    /// Under a root other than `/`: this dpkg-divert was checked to know `--root`.
    root_checked: std::cell::OnceCell<()>,
}

impl DpkgDivert {
    pub fn new(root: &Root) -> DpkgDivert {
        DpkgDivert {
            root: root.clone(),
            root_checked: std::cell::OnceCell::new(),
        }
    }

    /// Refuse, before anything is run on another root, a dpkg-divert without `--root`
    /// (older ones stop at the unknown option; the message would not say why). A version
    /// that cannot be read is let through: dpkg-divert itself then says what it thinks.
    fn check_root_option(&self) -> Result<(), DivertError> {
        if self.root.is_host() || self.root_checked.get().is_some() {
            return Ok(());
        }
        let (out, shown) = Cmd::new(DPKG_DIVERT).arg("--version").output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        match parse_version(&text) {
            Some(v) if !knows_root(v) => {
                return Err(DivertError::NoRootOption {
                    version: v.to_string(),
                    root: self.root.path().to_path_buf(),
                })
            }
            Some(v) => log::debug!("dpkg-divert {v} knows --root"),
            None => log::debug!("`{shown}` printed no version: {}", text.trim()),
        }
        let _ = self.root_checked.set(());
        Ok(())
    }

    /// `dpkg-divert [--root R] ARGS`: `--root` only for a root other than `/` (dpkg 1.18.4
    /// on Ubuntu 16.04 does not know it).
    fn command(&self, args: &[&std::ffi::OsStr]) -> Cmd {
        let mut cmd = Cmd::new(DPKG_DIVERT);
        if !self.root.is_host() {
            cmd = cmd.arg("--root").arg(self.root.path());
        }
        cmd.args(args)
    }

    fn run(&self, args: &[&std::ffi::OsStr]) -> Result<String, DivertError> {
        self.check_root_option()?;
        let (out, shown) = self.command(args).output()?;
        if !out.status.success() {
            return Err(command::failed(shown, &out, "dpkg-divert: error: ").into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every diversion on the root, read from the database dpkg-divert keeps
    /// ([`dpkg::admindir`]/[`DB_FILE`]). No file there means no diversions (as for dpkg);
    /// no admin dir is an error (dpkg-divert fails on it too).
    pub fn list(&self) -> Result<Vec<Diversion>, DivertError> {
        // a dpkg-divert that cannot change this root is refused before anything is done
        self.check_root_option()?;
        let admindir = dpkg::admindir(&self.root);
        let path = admindir.join(DB_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let all = parse_db(&bytes, &path)?;
                log::debug!("{} diversions in '{}'", all.len(), path.display());
                Ok(all)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !admindir.is_dir() {
                    return Err(DivertError::NoAdminDir {
                        admindir,
                        root: self.root.path().to_path_buf(),
                    });
                }
                log::debug!("no '{}': no diversions", path.display());
                Ok(Vec::new())
            }
            Err(e) => Err(FileError::new("read", &path, e).into()),
        }
    }

    /// Check that `path` is free for us or already ours to `divert_to` (pure).
    pub fn check_ours(
        current: Option<&Diversion>,
        path: &Path,
        divert_to: &Path,
    ) -> Result<bool, DivertError> {
        match current {
            None => Ok(false),
            Some(d) if !d.is_ours() => Err(DivertError::DivertedByOther {
                path: path.to_path_buf(),
                divert_to: d.divert_to.clone(),
                package: d.package.clone(),
            }),
            Some(d) if d.divert_to != divert_to => Err(DivertError::DivertedElsewhere {
                path: path.to_path_buf(),
                found: d.divert_to.clone(),
                want: divert_to.to_path_buf(),
            }),
            Some(_) => Ok(true),
        }
    }

    /// `dpkg-divert --package k8s-nokmem --add --rename --divert TO PATH`. The caller
    /// checks the list first ([`DpkgDivert::check_ours`]): another package's diversion of
    /// PATH must not be touched.
    pub fn add(&self, path: &Path, divert_to: &Path) -> Result<(), DivertError> {
        self.change("--add", path, divert_to)
    }

    /// `dpkg-divert --package k8s-nokmem --remove --rename --divert TO PATH`, for a diversion
    /// the caller checked is ours. The caller must have freed PATH first (dpkg refuses to
    /// rename over a different file).
    pub fn remove(&self, path: &Path, divert_to: &Path) -> Result<(), DivertError> {
        self.change("--remove", path, divert_to)
    }

    fn change(&self, action: &str, path: &Path, divert_to: &Path) -> Result<(), DivertError> {
        self.run(&[
            "--package".as_ref(),
            PACKAGE.as_ref(),
            action.as_ref(),
            "--rename".as_ref(),
            "--divert".as_ref(),
            divert_to.as_os_str(),
            path.as_os_str(),
        ])?;
        Ok(())
    }
}

/// The diversions, listed once and then kept up to date by our own changes (we hold the
/// lock; dpkg runs maintainer scripts one at a time), so that the steps of a transaction
/// between the stops and the starts read dpkg's database once.
pub struct DivertCache {
    divert: DpkgDivert,
    listed: RefCell<Option<Vec<Diversion>>>,
}

impl DivertCache {
    pub fn new(root: &Root) -> DivertCache {
        DivertCache {
            divert: DpkgDivert::new(root),
            listed: RefCell::new(None),
        }
    }

    /// Every diversion on the root: listed on the first call, then the cached list.
    pub fn list(&self) -> Result<Vec<Diversion>, DivertError> {
        if let Some(d) = self.listed.borrow().as_ref() {
            return Ok(d.clone());
        }
        let listed = self.divert.list()?;
        *self.listed.borrow_mut() = Some(listed.clone());
        Ok(listed)
    }

    /// Whether `path` is diverted by us to `divert_to`; an error when someone else holds it
    /// ([`DpkgDivert::check_ours`]).
    pub fn held(&self, path: &Path, divert_to: &Path) -> Result<bool, DivertError> {
        let all = self.list()?;
        let current = all.iter().find(|d| d.path == path);
        DpkgDivert::check_ours(current, path, divert_to)
    }

    /// Divert `path` to `divert_to` unless we already do.
    pub fn add(&self, path: &Path, divert_to: &Path) -> Result<Added, DivertError> {
        if self.held(path, divert_to)? {
            return Ok(Added::AlreadyThere);
        }
        let result = self.divert.add(path, divert_to);
        let mut cache = self.listed.borrow_mut();
        match (&result, cache.as_mut()) {
            (Ok(()), Some(list)) => list.push(Diversion {
                path: path.to_path_buf(),
                divert_to: divert_to.to_path_buf(),
                package: Some(PACKAGE.to_string()),
            }),
            _ => *cache = None,
        }
        result?;
        Ok(Added::Added)
    }

    /// Remove our diversion of `path` if there is one.
    pub fn remove(&self, path: &Path, divert_to: &Path) -> Result<Removed, DivertError> {
        if !self.held(path, divert_to)? {
            return Ok(Removed::NotThere);
        }
        let result = self.divert.remove(path, divert_to);
        let mut cache = self.listed.borrow_mut();
        match (&result, cache.as_mut()) {
            (Ok(()), Some(list)) => list.retain(|d| d.path != path),
            _ => *cache = None,
        }
        result?;
        Ok(Removed::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/divert-list")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn db(text: &str) -> Result<Vec<Diversion>, DivertError> {
        parse_db(text.as_bytes(), Path::new("/var/lib/dpkg/diversions"))
    }

    fn diversion(path: &str, to: &str, package: Option<&str>) -> Diversion {
        Diversion {
            path: path.into(),
            divert_to: to.into(),
            package: package.map(str::to_string),
        }
    }

    #[test]
    fn parses_database_records_whatever_the_paths_hold() {
        let cases: [(&str, Vec<Diversion>); 6] = [
            ("", vec![]),
            (
                "/usr/bin/kubelet\n/usr/bin/kubelet.distrib\nk8s-nokmem\n",
                vec![diversion(
                    "/usr/bin/kubelet",
                    "/usr/bin/kubelet.distrib",
                    Some("k8s-nokmem"),
                )],
            ),
            (
                "/srv/back to school/notes\n/srv/back to school/notes.distrib\n:\n",
                vec![diversion(
                    "/srv/back to school/notes",
                    "/srv/back to school/notes.distrib",
                    None,
                )],
            ),
            (
                "/opt/run by hand\n/opt/run by hand to here\np-q\n",
                vec![diversion(
                    "/opt/run by hand",
                    "/opt/run by hand to here",
                    Some("p-q"),
                )],
            ),
            (
                // no newline after the last record: dpkg reads it too
                "/a\n/b\n:\n/c d\n/c d.x\np",
                vec![
                    diversion("/a", "/b", None),
                    diversion("/c d", "/c d.x", Some("p")),
                ],
            ),
            (
                // a package line of ": " is a package named so, not a local diversion
                "/x\n/y\n: \n",
                vec![diversion("/x", "/y", Some(": "))],
            ),
        ];
        for (text, want) in cases {
            let got = db(text).unwrap_or_else(|e| panic!("case {text:?}: {e}"));
            assert_eq!(got, want, "case {text:?}");
        }
        let odd = parse_db(b"/usr/bin/a\xffb\n/x\n:\n", Path::new("d")).unwrap();
        assert_eq!(odd[0].path.as_os_str().as_bytes(), b"/usr/bin/a\xffb");
    }

    #[test]
    fn a_truncated_database_is_an_error_naming_file_line_and_fix() {
        let err = db("/a\n/b\n:\n/usr/bin/kubelet\n/usr/bin/kubelet.distrib\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "dpkg's diversions database '/var/lib/dpkg/diversions' ends inside a diversion: \
             line 4 ('/usr/bin/kubelet') has no package line after it; `dpkg-divert --list` \
             fails on it too: restore it from '/var/lib/dpkg/diversions-old'"
        );
        let err = db("/a\n").unwrap_err();
        assert!(err.to_string().contains("no diverted-to path"), "{err}");
    }

    #[test]
    fn a_recorded_database_reads_as_dpkg_divert_lists_it() {
        let all = parse_db(&fixture("odd-paths.diversions"), Path::new("d")).unwrap();
        let shown: Vec<String> = all.iter().map(Diversion::to_string).collect();
        let listed = String::from_utf8(fixture("odd-paths.list")).unwrap();
        assert_eq!(shown, listed.lines().collect::<Vec<_>>());
        let ours: Vec<&Path> = all
            .iter()
            .filter(|d| d.is_ours())
            .map(|d| d.path.as_path())
            .collect();
        assert_eq!(
            ours,
            [
                Path::new("/opt/my bin/kubelet"),
                Path::new("/usr/bin/kubelet"),
                Path::new("/usr/sbin/runc")
            ]
        );
    }

    #[test]
    fn lists_a_root_with_the_real_dpkg_divert() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let divert = DpkgDivert::new(&root);
        let err = divert.list().unwrap_err();
        assert!(
            matches!(err, DivertError::NoAdminDir { .. }),
            "no admin dir: {err}"
        );
        std::fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
        assert_eq!(divert.list().unwrap(), vec![], "no diversions file yet");
        let path = Path::new("/opt/back to school/kubelet by hand");
        let to = default_divert_to(path);
        divert.add(path, &to).unwrap();
        assert_eq!(
            divert.list().unwrap(),
            vec![diversion(
                "/opt/back to school/kubelet by hand",
                "/opt/back to school/kubelet by hand.distrib",
                Some(PACKAGE)
            )]
        );
        divert.remove(path, &to).unwrap();
        assert_eq!(divert.list().unwrap(), vec![]);
    }

    #[test]
    fn version_output_and_root_option() {
        let cases: [(&str, Option<&str>, bool); 8] = [
            (
                "Debian dpkg-divert version 1.21.23 (amd64).\nThis is free software; see",
                Some("1.21.23"),
                true,
            ),
            (
                "Debian dpkg-divert version 1.18.4.\n\nThis is free software;",
                Some("1.18.4"),
                false,
            ),
            (
                "Debian dpkg-divert version 1.19.2 (arm64).\n",
                Some("1.19.2"),
                true,
            ),
            (
                "Debian dpkg-divert version 1.19.0.5ubuntu2 (amd64).\n",
                Some("1.19.0.5ubuntu2"),
                false,
            ),
            (
                "Debian dpkg-divert version 1.19.7ubuntu3 (amd64).\n",
                Some("1.19.7ubuntu3"),
                true,
            ),
            (
                "Debian dpkg-divert version 1.17.27.\n",
                Some("1.17.27"),
                false,
            ),
            (
                "Debian dpkg-divert version 2.0.0 (amd64).\n",
                Some("2.0.0"),
                true,
            ),
            ("dpkg-divert: unknown option --version\n", None, false),
        ];
        for (text, want, root) in cases {
            let got = parse_version(text);
            assert_eq!(got, want, "case {text:?}");
            if let Some(v) = got {
                assert_eq!(knows_root(v), root, "case '{v}'");
            }
        }
        assert!(!knows_root("1.19"));
        assert!(knows_root("1:1.19.2"));
    }

    #[test]
    fn someone_elses_diversion_is_refused_with_its_owner() {
        let path = Path::new("/usr/bin/kubelet");
        let to = default_divert_to(path);
        let other = Diversion {
            path: path.into(),
            divert_to: "/usr/bin/kubelet.real".into(),
            package: Some("kubelet-wrapper".into()),
        };
        let err = DpkgDivert::check_ours(Some(&other), path, &to).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'/usr/bin/kubelet' is already diverted to '/usr/bin/kubelet.real' by package 'kubelet-wrapper'"
        );
        let local = Diversion {
            package: None,
            ..other
        };
        let err = DpkgDivert::check_ours(Some(&local), path, &to).unwrap_err();
        assert!(err.to_string().contains("a local diversion"), "{err}");
        let ours = Diversion {
            path: path.into(),
            divert_to: to.clone(),
            package: Some(PACKAGE.into()),
        };
        assert!(DpkgDivert::check_ours(Some(&ours), path, &to).unwrap());
        assert!(!DpkgDivert::check_ours(None, path, &to).unwrap());
    }

    #[test]
    fn root_flag_only_for_a_foreign_root() {
        let shown = DpkgDivert::new(&Root::new("/"))
            .command(&["--list".as_ref()])
            .shown();
        assert_eq!(shown, "dpkg-divert --list");
        let shown = DpkgDivert::new(&Root::new("/tmp/r"))
            .command(&["--list".as_ref()])
            .shown();
        assert_eq!(shown, "dpkg-divert --root /tmp/r --list");
    }
}
