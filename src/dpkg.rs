//! `dpkg-query` for finding who ships a target and which version of it is installed.
//!
//! On a live node (root `/`) no root option is passed (dpkg 1.18.4 compatibility); under
//! another root `--admindir R/var/lib/dpkg`, which every dpkg version knows.

use std::path::{Path, PathBuf};

use crate::command::{self, Cmd, CommandError};
use crate::paths::Root;

pub const DPKG_QUERY: &str = "dpkg-query";
/// dpkg's database, relative to the root.
pub const ADMINDIR: &str = "/var/lib/dpkg";

/// The admin dir dpkg's tools use on `root`: `R/var/lib/dpkg` under a root other than `/`
/// (what `dpkg-divert --root R` and our `dpkg-query --admindir` select); on the live node
/// `$DPKG_ADMINDIR` when set (dpkg exports it to maintainer scripts, and every dpkg tool
/// run without `--admindir` reads it, 1.18.4 included), else /var/lib/dpkg.
pub fn admindir(root: &Root) -> PathBuf {
    if !root.is_host() {
        return root.join(ADMINDIR);
    }
    std::env::var_os("DPKG_ADMINDIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(ADMINDIR), PathBuf::from)
}

/// dpkg-query could not be run or failed.
pub type DpkgError = CommandError;

/// `dpkg-query` on one root.
#[derive(Debug, Clone)]
pub struct Dpkg {
    root: Root,
}

impl Dpkg {
    pub fn new(root: &Root) -> Dpkg {
        Dpkg { root: root.clone() }
    }

    /// Run dpkg-query; `Ok(None)` when it exits 1 (nothing matched).
    fn query(&self, args: &[&str]) -> Result<Option<String>, DpkgError> {
        let mut cmd = Cmd::new(DPKG_QUERY);
        if !self.root.is_host() {
            cmd = cmd.arg("--admindir").arg(admindir(&self.root));
        }
        let (out, shown) = cmd.args(args).output()?;
        match out.status.code() {
            Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
            Some(1) => Ok(None),
            _ => Err(command::failed(shown, &out, "dpkg-query: error: ")),
        }
    }

    /// The packages that ship `path` (`dpkg-query -S`), diversion lines left out.
    pub fn owners(&self, path: &Path) -> Result<Vec<String>, DpkgError> {
        let pattern = literal_pattern(&path.to_string_lossy());
        Ok(self
            .query(&["-S", &pattern])?
            .map(|out| parse_search(&out, path))
            .unwrap_or_default())
    }

    /// The installed version of `package`, `None` when it is not installed.
    pub fn version(&self, package: &str) -> Result<Option<String>, DpkgError> {
        Ok(self
            .query(&["-W", "-f", "${db:Status-Abbrev} ${Version}", package])?
            .and_then(|out| parse_status_version(&out)))
    }
}

/// `dpkg-query -S` takes a glob pattern: `*`, `?`, `[` and `\` in a path are escaped with
/// a backslash, so that the path matches only itself (pure).
pub fn literal_pattern(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Packages from `dpkg-query -S PATH` output for exactly `path` (pure). Lines look like
/// `kubelet: /usr/bin/kubelet`, `libc6:amd64, libc6:i386: /x`, and
/// `diversion by P from: /x` (left out).
pub fn parse_search(text: &str, path: &Path) -> Vec<String> {
    let want = path.to_string_lossy();
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("diversion by ") || line.starts_with("local diversion ") {
            continue;
        }
        let Some((pkgs, p)) = line.split_once(": ") else {
            continue;
        };
        if p != want {
            continue;
        }
        for pkg in pkgs.split(", ") {
            let name = pkg.split(':').next().unwrap_or(pkg).trim();
            if !name.is_empty() && !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// `ii  1.20.2-00` -> `1.20.2-00` when the package is installed (pure).
fn parse_status_version(text: &str) -> Option<String> {
    let (status, version) = text.trim().split_once(char::is_whitespace)?;
    let version = version.trim();
    (status.starts_with('i') && status.get(1..2) == Some("i") && !version.is_empty())
        .then(|| version.to_string())
}

/// Major and minor of a version such as `1.20.2`, `v1.20.2`, `1.20.2-00`, `1:1.19.16-1`
/// or `1.20.5+really1.20.2-1` (the `+really` part wins: it is what is inside).
pub fn major_minor(version: &str) -> Option<(u64, u64)> {
    let v = version.trim();
    let v = v.rsplit_once("+really").map(|(_, r)| r).unwrap_or(v);
    let v = v.split_once(':').map(|(_, r)| r).unwrap_or(v);
    let v = v.trim_start_matches('v');
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_output() {
        let p = Path::new("/usr/bin/kubelet");
        let cases: [(&str, &[&str]); 4] = [
            ("kubelet: /usr/bin/kubelet\n", &["kubelet"]),
            (
                "diversion by k8s-nokmem from: /usr/bin/kubelet\n\
                 diversion by k8s-nokmem to: /usr/bin/kubelet.distrib\nkubelet: /usr/bin/kubelet\n",
                &["kubelet"],
            ),
            (
                "kubelet:amd64, kube-x:arm64: /usr/bin/kubelet\n",
                &["kubelet", "kube-x"],
            ),
            ("other: /usr/bin/kubelet.d\n", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(parse_search(text, p), want, "case {text:?}");
        }
    }

    #[test]
    fn versions() {
        let cases = [
            ("1.20.2", Some((1, 20))),
            ("v1.19.16", Some((1, 19))),
            ("1.20.2-00", Some((1, 20))),
            ("1:1.18.3-1", Some((1, 18))),
            ("1.20.5+really1.20.2-1", Some((1, 20))),
            ("1.25.0~rc1-1", Some((1, 25))),
            ("garbage", None),
            ("7", None),
        ];
        for (v, want) in cases {
            assert_eq!(major_minor(v), want, "case '{v}'");
        }
    }

    #[test]
    fn status_version() {
        assert_eq!(
            parse_status_version("ii  1.20.2-00"),
            Some("1.20.2-00".into())
        );
        assert_eq!(parse_status_version("un "), None);
        assert_eq!(parse_status_version("rc 1.2"), None);
    }

    #[test]
    fn queries_a_private_admin_dir() {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("var/lib/dpkg");
        std::fs::create_dir_all(admin.join("info")).unwrap();
        std::fs::write(
            admin.join("status"),
            "Package: kubelet\nStatus: install ok installed\nArchitecture: amd64\n\
             Version: 1.19.16-00\nMaintainer: x <x@example.org>\nDescription: x\n\n",
        )
        .unwrap();
        std::fs::write(
            admin.join("info/kubelet.list"),
            "/.\n/usr\n/usr/bin\n/usr/bin/kubelet\n/opt/k[1]\n/opt/k[1]/kube let\n",
        )
        .unwrap();
        let dpkg = Dpkg::new(&Root::new(dir.path()));
        assert_eq!(
            dpkg.owners(Path::new("/usr/bin/kubelet")).unwrap(),
            vec!["kubelet"]
        );
        assert!(dpkg.owners(Path::new("/usr/bin/runc")).unwrap().is_empty());
        // odd paths are matched literally, not as a glob
        assert_eq!(
            dpkg.owners(Path::new("/opt/k[1]/kube let")).unwrap(),
            vec!["kubelet"]
        );
        assert!(dpkg.owners(Path::new("/opt/k*")).unwrap().is_empty());
        assert_eq!(
            dpkg.version("kubelet").unwrap(),
            Some("1.19.16-00".to_string())
        );
        assert_eq!(dpkg.version("runc").unwrap(), None);
    }
}
