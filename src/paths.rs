//! Where things live on a node: the well-known paths, and the [`Root`] they are resolved
//! under (`/` on a live node, an unpacked tree in tests and image builds). The file-system
//! primitives that create, rename and remove files there are in [`crate::fs`].

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// The helper's configuration file (an INI conffile).
pub const CONFIG_FILE: &str = "/etc/k8s-nokmem/k8s-nokmem.conf";
/// The drop-in an operator's own settings go in (any `conf.d/*.conf` is read after the
/// conffile; never edit the conffile: unattended-upgrades holds back a package whose
/// edited conffile a new release changes).
pub const EXAMPLE_DROPIN: &str = "/etc/k8s-nokmem/conf.d/50-local.conf";
/// Where the package ships the nokmem payload and its MANIFEST.
pub const PAYLOAD_DIR: &str = "/usr/lib/k8s-nokmem";
/// The payload MANIFEST.
pub const MANIFEST_FILE: &str = "/usr/lib/k8s-nokmem/MANIFEST";
/// Persistent state: the transaction journal and what was swapped.
pub const STATE_DIR: &str = "/var/lib/k8s-nokmem";
/// Volatile state: the last verification result.
pub const RUN_DIR: &str = "/run/k8s-nokmem";
/// The last verification result (`verify --state`), in [`RUN_DIR`].
pub const VERIFY_FILE: &str = "verify.json";
/// dpkg's policy layer for service actions (exit 101: do not touch services).
pub const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// Exists only while systemd is PID 1.
pub const SYSTEMD_RUNNING: &str = "/run/systemd/system";
/// The package name, used for diversions.
pub const PACKAGE: &str = "k8s-nokmem";

/// How many symlinks [`Root::canonicalize`] follows before it calls it a loop (Linux
/// gives up at 40 too).
const MAX_LINK_HOPS: u32 = 40;

/// The root every absolute node path is resolved under. `/` on a live node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    /// `--root` when given, else `$DPKG_ROOT` when set and non-empty, else `/`.
    pub fn from_args(arg: Option<PathBuf>) -> Root {
        let env = std::env::var_os("DPKG_ROOT").filter(|v| !v.is_empty());
        Root::new(
            arg.or_else(|| env.map(PathBuf::from))
                .unwrap_or_else(|| "/".into()),
        )
    }

    pub fn new(path: impl Into<PathBuf>) -> Root {
        let path = path.into();
        if path.as_os_str().is_empty() {
            Root("/".into())
        } else {
            Root(path)
        }
    }

    /// The live system (`/`): services may be touched, dpkg-divert gets no `--root`.
    pub fn is_host(&self) -> bool {
        self.0.components().all(|c| c == Component::RootDir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Resolve an absolute in-system path under this root. Never use `Path::join` with an
    /// absolute path: it discards the root.
    pub fn join(&self, abs: impl AsRef<Path>) -> PathBuf {
        let rel: PathBuf = abs
            .as_ref()
            .components()
            .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
            .collect();
        self.0.join(rel)
    }

    /// Where `abs` really is inside this root: every symlink resolved the way the system
    /// would see it from inside (an absolute link target starts again at the root), like
    /// `fs::canonicalize`. `None` when a component is missing or the links loop.
    pub fn canonicalize(&self, abs: impl AsRef<Path>) -> Option<PathBuf> {
        let mut todo: Vec<OsString> = Vec::new();
        let push = |todo: &mut Vec<OsString>, p: &Path| {
            let parts: Vec<_> = p
                .components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n.to_os_string()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                })
                .collect();
            todo.extend(parts.into_iter().rev());
        };
        push(&mut todo, abs.as_ref());
        let mut cur = PathBuf::from("/");
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            if part == ".." {
                cur.pop();
                continue;
            }
            let next = cur.join(&part);
            let on_disk = self.join(&next);
            let meta = std::fs::symlink_metadata(&on_disk).ok()?;
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return None;
                }
                let target = std::fs::read_link(&on_disk).ok()?;
                if target.is_absolute() {
                    cur = PathBuf::from("/");
                }
                push(&mut todo, &target);
            } else {
                cur = next;
            }
        }
        Some(cur)
    }

    /// How to name an in-system path to a user: `'/usr/bin/kubelet'`, plus
    /// ` under root '/tmp/x'` when the root is not `/`.
    pub fn describe(&self, abs: impl AsRef<Path>) -> String {
        if self.is_host() {
            format!("'{}'", abs.as_ref().display())
        } else {
            format!(
                "'{}' under root '{}'",
                abs.as_ref().display(),
                self.0.display()
            )
        }
    }
}

impl std::fmt::Display for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_the_root() {
        let cases = [
            ("/", "/usr/bin/kubelet", "/usr/bin/kubelet"),
            ("/tmp/r", "/usr/bin/kubelet", "/tmp/r/usr/bin/kubelet"),
            ("/tmp/r", "usr/bin/runc", "/tmp/r/usr/bin/runc"),
            ("/tmp/r/", "/", "/tmp/r/"),
        ];
        for (root, abs, want) in cases {
            assert_eq!(
                Root::new(root).join(abs),
                PathBuf::from(want),
                "root {root} + {abs}"
            );
        }
    }

    #[test]
    fn host_root_is_detected() {
        assert!(Root::new("/").is_host());
        assert!(Root::new("").is_host());
        assert!(!Root::new("/tmp/x").is_host());
        assert_eq!(Root::new("/").describe("/usr/bin/runc"), "'/usr/bin/runc'");
        assert_eq!(
            Root::new("/tmp/x").describe("/usr/bin/runc"),
            "'/usr/bin/runc' under root '/tmp/x'"
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let mk = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
        mk("/usr/sbin");
        mk("/usr/bin");
        mk("/opt/k8s");
        std::os::unix::fs::symlink("usr/sbin", root.join("/sbin")).unwrap();
        std::fs::write(root.join("/usr/sbin/runc"), b"x").unwrap();
        std::fs::write(root.join("/opt/k8s/kubelet-1.20"), b"x").unwrap();
        let link =
            |target: &str, at: &str| std::os::unix::fs::symlink(target, root.join(at)).unwrap();
        link("../sbin/runc", "/usr/bin/runc");
        link("/sbin/runc", "/usr/bin/runc-abs");
        link("/opt/k8s/kubelet-1.20", "/usr/bin/kubelet");
        link("loop-b", "/usr/bin/loop-a");
        link("loop-a", "/usr/bin/loop-b");
        link("nowhere", "/usr/bin/dangling");
        let cases = [
            ("/usr/bin/runc", Some("/usr/sbin/runc")),
            ("/usr/bin/runc-abs", Some("/usr/sbin/runc")),
            ("/sbin/runc", Some("/usr/sbin/runc")),
            ("/usr/bin/kubelet", Some("/opt/k8s/kubelet-1.20")),
            ("/usr/sbin/runc", Some("/usr/sbin/runc")),
            ("/usr/bin/loop-a", None),
            ("/usr/bin/dangling", None),
        ];
        for (path, want) in cases {
            assert_eq!(
                root.canonicalize(path),
                want.map(PathBuf::from),
                "case {path}"
            );
        }
    }
}
