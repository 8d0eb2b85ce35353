//! Where things live on a node, relative to a root (`/` on a live node, an unpacked tree in
//! tests and image builds), and file helpers whose errors name the path.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// The helper's configuration file (an INI conffile).
pub const CONFIG_FILE: &str = "/etc/k8s-nokmem/k8s-nokmem.conf";
/// Where the package ships the nokmem payload and its MANIFEST.
pub const PAYLOAD_DIR: &str = "/usr/lib/k8s-nokmem";
/// The payload MANIFEST.
pub const MANIFEST_FILE: &str = "/usr/lib/k8s-nokmem/MANIFEST";
/// Persistent state: the transaction journal and what was swapped.
pub const STATE_DIR: &str = "/var/lib/k8s-nokmem";
/// Volatile state: the last verification result.
pub const RUN_DIR: &str = "/run/k8s-nokmem";
/// dpkg's policy layer for service actions (exit 101: do not touch services).
pub const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// Exists only while systemd is PID 1.
pub const SYSTEMD_RUNNING: &str = "/run/systemd/system";
/// The package name, used for diversions.
pub const PACKAGE: &str = "k8s-nokmem";

/// A file-system error that names the file and what was being done to it.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} '{}'", path.display())]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FileError {
    /// True when the file (or a parent directory) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// Adds the path and the action to an `io::Result` where the call is made.
pub trait WrapIo<T> {
    fn with_path(self, action: &'static str, path: &Path) -> Result<T, FileError>;
}

impl<T> WrapIo<T> for io::Result<T> {
    fn with_path(self, action: &'static str, path: &Path) -> Result<T, FileError> {
        self.map_err(|source| FileError {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

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

/// Read a whole text file.
pub fn read_to_string(path: &Path) -> Result<String, FileError> {
    fs::read_to_string(path).with_path("read", path)
}

/// sha256 of a file as lowercase hex, streamed (payload binaries are ~100 MB).
pub fn sha256_file(path: &Path) -> Result<String, FileError> {
    let mut file = File::open(path).with_path("open", path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).with_path("read", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Write `path` atomically: a temp file in the same directory, mode set, data written and
/// fsynced, then renamed over `path`, then the directory fsynced. A reader sees the old
/// file or the new one, never a half-written one, even after a power loss.
pub fn atomic_write(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.k8s-nokmem-new"));
    let result = (|| {
        let mut file = File::create(&tmp).with_path("create", &tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .with_path("set mode of", &tmp)?;
        write(&mut file).with_path("write", &tmp)?;
        file.flush().with_path("write", &tmp)?;
        file.sync_all().with_path("fsync", &tmp)?;
        fs::rename(&tmp, path).with_path("rename into place", path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Write bytes atomically (see [`atomic_write`]).
pub fn atomic_write_bytes(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), FileError> {
    atomic_write(path, mode, |f| f.write_all(bytes))
}

/// Copy `src` to `dst` atomically with `mode` (see [`atomic_write`]).
pub fn atomic_copy(src: &Path, dst: &Path, mode: u32) -> Result<(), FileError> {
    let mut input = File::open(src).with_path("open", src)?;
    atomic_write(dst, mode, |out| io::copy(&mut input, out).map(|_| ()))
}

/// fsync a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_path("fsync directory", dir)
}

/// Remove a file; a file that is already gone is success.
pub fn remove_file_if_exists(path: &Path) -> Result<bool, FileError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_path("remove", path),
    }
}

/// Create a directory and its parents with `mode` for the ones created.
pub fn create_dir_all(path: &Path, mode: u32) -> Result<(), FileError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .with_path("create directory", path)
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
    fn atomic_write_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"old").unwrap();
        atomic_write_bytes(&p, 0o755, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn errors_name_the_path() {
        let err = read_to_string(Path::new("/nonexistent/k8s-nokmem.conf")).unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            "failed to read '/nonexistent/k8s-nokmem.conf'"
        );
    }

    #[test]
    fn sha256_streams_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
