//! File-system primitives whose errors name the path: reading, hashing, and creating,
//! renaming and removing files the way a root helper must in directories others may write
//! (never through a symlink, exclusively created, fsynced, renamed into place, the
//! directory fsynced after every rename and unlink).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, AT_FDCWD};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use sha2::{Digest, Sha256};

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
    /// `action` on `path` failed with `source`.
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> FileError {
        FileError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

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
        self.map_err(|source| FileError::new(action, path, source))
    }
}

/// Read a whole text file.
pub fn read_to_string(path: &Path) -> Result<String, FileError> {
    fs::read_to_string(path).with_path("read", path)
}

/// sha256 of a file as lowercase hex, streamed (payload binaries are ~100 MB).
pub fn sha256_file(path: &Path) -> Result<String, FileError> {
    let file = File::open(path).with_path("open", path)?;
    sha256_reading(file, path, |_| Ok(()))
}

/// Read `input` (the file at `path`, for errors) to its end, hashing it, and hand each
/// chunk to `each` (a copy writes it out): the hex sha256 of everything read.
pub fn sha256_reading(
    mut input: impl Read,
    path: &Path,
    mut each: impl FnMut(&[u8]) -> Result<(), FileError>,
) -> Result<String, FileError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).with_path("read", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        each(&buf[..n])?;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Flags of a directory we create, rename or remove files in: never reached through a
/// symlink at its last component (the directories above are root's: /usr/bin, /var/lib).
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);
/// Flags of every file the helper creates: a new inode or nothing, never through a link.
const CREATE_FLAGS: OFlag = OFlag::O_WRONLY
    .union(OFlag::O_CREAT)
    .union(OFlag::O_EXCL)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);
/// How many random temp names to try before giving up (a collision means someone plants
/// names in the directory).
const TEMP_TRIES: usize = 8;

/// An open directory, for creating, renaming and removing files in it by name: the helper
/// runs as root in directories others may write (a node_exporter textfile directory), so
/// no name it writes is resolved through a symlink, and every change of the directory is
/// made durable with an fsync of the directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Open `path` as a directory, refusing a symlink (`O_DIRECTORY|O_NOFOLLOW`).
    pub fn open(path: &Path) -> Result<Dir, FileError> {
        match nix::fcntl::openat(AT_FDCWD, path, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Dir {
                fd,
                path: path.to_path_buf(),
            }),
            Err(e) => {
                let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
                let source = if is_link {
                    io::Error::other(
                        "it is a symlink, which k8s-nokmem does not follow when it writes: name the real directory",
                    )
                } else {
                    e.into()
                };
                Err(FileError::new("open directory", path, source))
            }
        }
    }

    /// The directory of `path` (`.` for a bare name) and `path`'s file name.
    fn of(path: &Path) -> Result<(Dir, &OsStr), FileError> {
        let name = path.file_name().ok_or_else(|| {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "not a file name");
            FileError::new("write", path, e)
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Ok((Dir::open(dir)?, name))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Create `name` with `mode` (set with fchmod, whatever the umask): a new file or an
    /// error (`O_CREAT|O_EXCL|O_NOFOLLOW`), never an existing file or a link's target.
    pub fn create_new(&self, name: &OsStr, mode: u32) -> Result<File, FileError> {
        let shown = self.shown(name);
        let fd = nix::fcntl::openat(&self.fd, name, CREATE_FLAGS, Mode::from_bits_retain(0o600))
            .map_err(io::Error::from)
            .with_path("create", &shown)?;
        if let Err(e) = nix::sys::stat::fchmod(&fd, Mode::from_bits_retain(mode)) {
            let _ = nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir);
            return Err(io::Error::from(e)).with_path("set mode of", &shown);
        }
        Ok(File::from(fd))
    }

    /// Create a new file named `.<name>.k8s-nokmem-<random>`: an unpredictable name, so
    /// that nobody can plant anything there first.
    pub fn create_temp(&self, name: &OsStr, mode: u32) -> Result<(File, OsString), FileError> {
        let mut last = None;
        for _ in 0..TEMP_TRIES {
            let mut tmp = OsString::from(".");
            tmp.push(name);
            tmp.push(format!(".k8s-nokmem-{}", random_hex()?));
            match self.create_new(&tmp, mode) {
                Ok(file) => return Ok((file, tmp)),
                Err(e) if e.source.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            let e = io::Error::from(io::ErrorKind::AlreadyExists);
            FileError::new("create", &self.shown(name), e)
        }))
    }

    /// Rename `from` to `to` in this directory (a link at `to` is replaced, not followed),
    /// then fsync the directory.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> Result<(), FileError> {
        nix::fcntl::renameat(&self.fd, from, &self.fd, to)
            .map_err(io::Error::from)
            .with_path("rename into place", &self.shown(to))?;
        self.sync()
    }

    /// Remove `name` (a link is removed, not followed), then fsync the directory. A name
    /// that is already gone is success (false).
    pub fn remove(&self, name: &OsStr) -> Result<bool, FileError> {
        match nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {
                self.sync()?;
                Ok(true)
            }
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(io::Error::from(e)).with_path("remove", &self.shown(name)),
        }
    }

    /// fsync the directory, so that the names changed in it survive a power loss.
    pub fn sync(&self) -> Result<(), FileError> {
        nix::unistd::fsync(&self.fd)
            .map_err(io::Error::from)
            .with_path("fsync directory", &self.path)
    }
}

/// 16 random hex digits from the kernel's CSPRNG (`/dev/urandom` works on every kernel the
/// helper runs on, getrandom(2) needs 3.17).
fn random_hex() -> Result<String, FileError> {
    let urandom = Path::new("/dev/urandom");
    let mut bytes = [0u8; 8];
    File::open(urandom)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .with_path("read", urandom)?;
    Ok(hex::encode(bytes))
}

/// Write `path` atomically: a new temp file with an unpredictable name in the same
/// directory (see [`Dir`]), mode set, data written and fsynced, renamed over `path`, the
/// directory fsynced. A reader sees the old file or the new one, never a half-written one,
/// even after a power loss; a symlink planted at any name is never followed.
pub fn atomic_write(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), FileError> {
    let (dir, name) = Dir::of(path)?;
    let (mut file, tmp) = dir.create_temp(name, mode)?;
    let shown = dir.shown(&tmp);
    let result = (|| {
        write(&mut file).with_path("write", &shown)?;
        file.flush().with_path("write", &shown)?;
        file.sync_all().with_path("fsync", &shown)?;
        dir.rename(&tmp, name)
    })();
    if result.is_err() {
        let _ = dir.remove(&tmp);
    }
    result
}

/// Write bytes atomically (see [`atomic_write`]).
pub fn atomic_write_bytes(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), FileError> {
    atomic_write(path, mode, |f| f.write_all(bytes))
}

/// Create `path` afresh with `mode` under a name others can find again (a staged payload
/// next to its target): whatever is at that name (a stale copy, a planted link) is
/// unlinked, never followed, then the file is created exclusively.
pub fn create_replacing(path: &Path, mode: u32) -> Result<File, FileError> {
    let (dir, name) = Dir::of(path)?;
    dir.remove(name)?;
    dir.create_new(name, mode)
}

/// Rename `from` to `to` (a link at `to` is replaced, not followed), then fsync the
/// directory of each.
pub fn rename(from: &Path, to: &Path) -> Result<(), FileError> {
    let (from_dir, from_name) = Dir::of(from)?;
    let (to_dir, to_name) = Dir::of(to)?;
    nix::fcntl::renameat(&from_dir.fd, from_name, &to_dir.fd, to_name)
        .map_err(io::Error::from)
        .with_path("rename into place", to)?;
    to_dir.sync()?;
    if from_dir.path != to_dir.path {
        from_dir.sync()?;
    }
    Ok(())
}

/// fsync a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    Dir::open(dir)?.sync()
}

/// Remove a file (a link itself, never its target), then fsync its directory; a file that
/// is already gone (or whose directory is) is success.
pub fn remove_file_if_exists(path: &Path) -> Result<bool, FileError> {
    match Dir::of(path) {
        Ok((dir, name)) => dir.remove(name),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
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
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
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

    /// A directory others can write, with links planted at the final name and at the temp
    /// name the helper used to use: no link target is written, truncated or chmod-ed.
    #[test]
    fn atomic_write_never_follows_a_planted_link() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("shadow");
        fs::write(&victim, b"secret\n").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("k8s_nokmem.prom");
        let old_temp = dir.path().join(".k8s_nokmem.prom.k8s-nokmem-new");
        symlink(&victim, &old_temp).unwrap();
        symlink(&victim, &path).unwrap();

        atomic_write_bytes(&path, 0o644, b"metrics\n").unwrap();

        assert_eq!(
            fs::read(&victim).unwrap(),
            b"secret\n",
            "link target written"
        );
        assert_eq!(mode_of(&victim), 0o600, "link target chmod-ed");
        assert!(
            fs::symlink_metadata(&path).unwrap().is_file(),
            "the link is replaced"
        );
        assert_eq!(fs::read(&path).unwrap(), b"metrics\n");
        assert_eq!(mode_of(&path), 0o644);
        assert!(fs::symlink_metadata(&old_temp)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temp file left"
        );
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        symlink(&real, &link).unwrap();
        let err = atomic_write_bytes(&link.join("f"), 0o644, b"x").unwrap_err();
        assert_eq!(
            format!("{err}: {}", err.source),
            format!(
                "failed to open directory '{}': it is a symlink, which k8s-nokmem does not follow when it writes: name the real directory",
                link.display()
            )
        );
        assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
        assert!(remove_file_if_exists(&link.join("f")).is_err());
    }

    #[test]
    fn create_replacing_unlinks_a_planted_link_and_creates_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let staged = dir.path().join(".kubelet.k8s-nokmem-new");
        symlink(&victim, &staged).unwrap();
        let mut f = create_replacing(&staged, 0o755).unwrap();
        f.write_all(b"payload").unwrap();
        drop(f);
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&staged).unwrap().is_file());
        assert_eq!(mode_of(&staged), 0o755);
        // a stale copy is replaced too
        create_replacing(&staged, 0o700).unwrap();
        assert_eq!(fs::read(&staged).unwrap(), b"");
        assert_eq!(mode_of(&staged), 0o700);
    }

    #[test]
    fn remove_takes_the_link_not_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let link = dir.path().join("link");
        symlink(&victim, &link).unwrap();
        assert!(remove_file_if_exists(&link).unwrap());
        assert!(!remove_file_if_exists(&link).unwrap());
        assert!(!remove_file_if_exists(&dir.path().join("gone/f")).unwrap());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        rename(&victim, &link).unwrap();
        assert_eq!(fs::read(&link).unwrap(), b"keep");
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
