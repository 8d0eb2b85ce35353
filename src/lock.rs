//! One run at a time: an exclusive `flock` on `R/var/lib/k8s-nokmem/lock`, held for the
//! whole run and released by the kernel when the process ends (also on kill -9). The holder
//! writes its pid into the file so that a second run can name it.
//!
//! And not while apt or dpkg runs ([`DpkgLock`]): a hand-run install or remove changes what
//! dpkg manages (diversions, files of other packages), so it takes dpkg's frontend lock
//! (`R/var/lib/dpkg/lock-frontend`) the way dpkg and apt take it (an `fcntl` write lock on
//! the whole file, without waiting) and holds it for the run, and refuses while dpkg's
//! database lock (`lock`, all that apt < 1.7 and dpkg < 1.19.1 take) is held by another
//! process. From dpkg's maintainer scripts dpkg holds both: the caller skips this.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, Flock, FlockArg, OFlag};
use nix::libc;
use nix::sys::stat::Mode;

use crate::fs::{FileError, WrapIo};

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("failed to lock '{}'", path.display())]
    Flock {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("another k8s-nokmem run holds the lock '{}' ({})", path.display(), holder(*pid))]
    Busy { path: PathBuf, pid: Option<u32> },
    #[error("dpkg's lock '{}' is held by another process ({}): apt or dpkg is running", path.display(), holder(*pid))]
    DpkgBusy { path: PathBuf, pid: Option<u32> },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_string(),
    }
}

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    _flock: Flock<File>,
    path: PathBuf,
}

impl Lock {
    /// Take the lock at `path` without waiting.
    pub fn acquire(path: &Path) -> Result<Lock, LockError> {
        let file = open_lock_file(path)?;
        let mut flock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Busy {
                    path: path.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err((_, source)) => {
                return Err(LockError::Flock {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let pid = std::process::id();
        flock
            .set_len(0)
            .and_then(|_| flock.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(flock, "{pid}"))
            .with_path("write pid to lock file", path)?;
        Ok(Lock {
            _flock: flock,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Open (creating it if needed) the lock file without following a link, and refuse
/// anything but a plain file of its own (a hard link to another file has more than one
/// name): the pid is written into it.
fn open_lock_file(path: &Path) -> Result<File, FileError> {
    let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file = nix::fcntl::open(path, flags, Mode::from_bits_retain(0o644))
        .map(File::from)
        .map_err(io::Error::from)
        .with_path("open lock file", path)?;
    let meta = file.metadata().with_path("inspect lock file", path)?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(io::Error::other(
            "not a plain file with one name: move it away (k8s-nokmem recreates it)",
        ))
        .with_path("use lock file", path);
    }
    Ok(file)
}

/// The lock frontends (apt >= 1.7, dpkg >= 1.19.1) hold for their whole run.
pub const DPKG_FRONTEND_LOCK: &str = "lock-frontend";
/// dpkg's database lock.
pub const DPKG_DB_LOCK: &str = "lock";

/// dpkg's frontend lock, held (see the module docs); dropping it releases it.
#[derive(Debug)]
pub struct DpkgLock {
    _file: File,
    path: PathBuf,
}

impl DpkgLock {
    /// Take the frontend lock in `admin_dir` (creating the file as dpkg does), then check
    /// that nobody else holds the database lock; without waiting.
    pub fn acquire(admin_dir: &Path) -> Result<DpkgLock, LockError> {
        let path = admin_dir.join(DPKG_FRONTEND_LOCK);
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let file = nix::fcntl::open(&path, flags, Mode::from_bits_retain(0o640))
            .map(File::from)
            .map_err(io::Error::from)
            .with_path("open dpkg's frontend lock", &path)?;
        let meta = file
            .metadata()
            .with_path("inspect dpkg's frontend lock", &path)?;
        if !meta.is_file() {
            return Err(io::Error::other("not a plain file"))
                .with_path("use dpkg's frontend lock", &path)?;
        }
        match fcntl(&file, FcntlArg::F_SETLK(&whole_file(libc::F_WRLCK))) {
            Ok(_) => {}
            Err(Errno::EAGAIN | Errno::EACCES) => {
                return Err(LockError::DpkgBusy {
                    pid: conflicting_lock(&file).ok().flatten().flatten(),
                    path,
                })
            }
            Err(source) => return Err(LockError::Flock { path, source }),
        }
        let db = admin_dir.join(DPKG_DB_LOCK);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if let Ok(db_file) = nix::fcntl::open(&db, flags, Mode::empty()).map(File::from) {
            match conflicting_lock(&db_file) {
                Ok(None) => {}
                Ok(Some(pid)) => return Err(LockError::DpkgBusy { pid, path: db }),
                Err(source) => return Err(LockError::Flock { path: db, source }),
            }
        }
        Ok(DpkgLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A write or read lock (`l_type`) on the whole file, as dpkg takes it.
fn whole_file(l_type: libc::c_int) -> libc::flock {
    // SAFETY: flock is a plain C struct; all-zero is a valid value (F_RDLCK is 0, SEEK_SET 0)
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

/// A lock held on `file` that conflicts with a write lock on the whole file (`F_GETLK`):
/// `None` when there is none, else the holder's pid when the kernel names it.
fn conflicting_lock(file: &File) -> nix::Result<Option<Option<u32>>> {
    let mut probe = whole_file(libc::F_WRLCK);
    fcntl(file, FcntlArg::F_GETLK(&mut probe))?;
    Ok((i32::from(probe.l_type) != libc::F_UNLCK)
        .then(|| u32::try_from(probe.l_pid).ok().filter(|p| *p > 0)))
}

/// Whether someone holds the lock at `path` (for `status`), and their pid.
pub fn holder_of(path: &Path) -> Option<Option<u32>> {
    Lock::acquire_shared_probe(path).err()
}

impl Lock {
    /// Try a shared lock without creating the file: `Err(pid)` when an exclusive one is held.
    fn acquire_shared_probe(path: &Path) -> Result<(), Option<u32>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let Ok(file) = nix::fcntl::open(path, flags, Mode::empty()).map(File::from) else {
            return Ok(());
        };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => Ok(()),
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Err(text.trim().parse().ok())
            }
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let held = Lock::acquire(&path).unwrap();
        assert_eq!(holder_of(&path), Some(Some(std::process::id())));
        let err = Lock::acquire(&path).unwrap_err();
        assert!(matches!(err, LockError::Busy { pid: Some(p), .. } if p == std::process::id()));
        assert_eq!(
            err.to_string(),
            format!(
                "another k8s-nokmem run holds the lock '{}' (pid {})",
                path.display(),
                std::process::id()
            )
        );
        drop(held);
        assert_eq!(holder_of(&path), None);
        let again = Lock::acquire(&path).unwrap();
        assert_eq!(again.path(), path);
    }

    #[test]
    fn a_link_at_the_lock_path_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep\n").unwrap();
        let path = dir.path().join(LOCK_FILE);
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(Lock::acquire(&path).is_err());
        std::fs::remove_file(&path).unwrap();
        std::fs::hard_link(&victim, &path).unwrap();
        let err = Lock::acquire(&path).unwrap_err();
        assert!(err.to_string().contains("failed to use lock file"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep\n");
    }
}
