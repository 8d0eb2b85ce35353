//! Reading the node's small files (cgroup and procfs files) the way a root process reading a
//! tree that may not be what it seems must: only regular files (a FIFO planted at a name
//! would block the open or the read forever; a device could be anything), opened without
//! blocking, and never more than a bound (a huge or sparse file would take all memory).
//! cgroupfs and procfs files are regular files whose size reads 0, so the size is not asked
//! in advance: reading stops at the bound.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, AT_FDCWD};
use nix::sys::stat::{Mode, SFlag};

use crate::fs::{FileError, WrapIo};

/// Read-only, close-on-exec, and an open that never waits (a FIFO without a writer).
const FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY);

/// Bounds of the files verify reads: a kmem usage (a number), a cgroup's slabinfo (one line
/// per slab cache), procfs text (`/proc/cgroups`, the command line, the release, uptime,
/// stat) and the mount table (thousands of mounts on a busy node).
pub const NUMBER_MAX: usize = 4 << 10;
pub const SLABINFO_MAX: usize = 1 << 20;
pub const PROC_TEXT_MAX: usize = 1 << 20;
pub const MOUNTINFO_MAX: usize = 64 << 20;

/// Why a file was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    Os(Errno),
    /// Not a regular file: what it is.
    NotRegular(&'static str),
    /// Longer than this many bytes.
    TooLarge(usize),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Os(e) => write!(f, "{}", io::Error::from(*e)),
            ReadError::NotRegular(kind) => write!(f, "it is a {kind}, not a regular file"),
            ReadError::TooLarge(limit) => {
                write!(
                    f,
                    "it holds more than {limit} bytes, more than such a file can"
                )
            }
        }
    }
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        match e {
            ReadError::Os(errno) => errno.into(),
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// What a file of `st_mode` is, when it is not a regular file.
fn kind(st_mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(st_mode) & SFlag::S_IFMT {
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symlink",
        _ => "special file",
    }
}

/// Open `path` (relative to `dir`) if it is a regular file.
fn open_regular(dir: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, ReadError> {
    let fd = nix::fcntl::openat(dir, path, FLAGS, Mode::empty()).map_err(ReadError::Os)?;
    let stat = nix::sys::stat::fstat(&fd).map_err(ReadError::Os)?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG {
        Ok(fd)
    } else {
        Err(ReadError::NotRegular(kind(stat.st_mode)))
    }
}

/// Read the regular file `path` (relative to `dir`) into `buf`, in plain reads of `chunk`
/// bytes, at most `limit` bytes. A short read ends it: a regular file and a cgroup file
/// (seq_file) return less than asked only at the end, and skipping the read that returns 0
/// saves a syscall per file.
pub fn read_at(
    dir: BorrowedFd<'_>,
    path: &Path,
    buf: &mut Vec<u8>,
    chunk: usize,
    limit: usize,
) -> Result<(), ReadError> {
    buf.clear();
    let fd = open_regular(dir, path)?;
    loop {
        let len = buf.len();
        if len > limit {
            buf.clear();
            return Err(ReadError::TooLarge(limit));
        }
        buf.resize(len + chunk, 0);
        match nix::unistd::read(&fd, &mut buf[len..]) {
            Ok(n) => {
                buf.truncate(len + n);
                if n < chunk {
                    return if buf.len() > limit {
                        buf.clear();
                        Err(ReadError::TooLarge(limit))
                    } else {
                        Ok(())
                    };
                }
            }
            Err(Errno::EINTR) => buf.truncate(len),
            Err(e) => {
                buf.truncate(len);
                return Err(ReadError::Os(e));
            }
        }
    }
}

/// Read a whole regular text file of at most `limit` bytes; the error names the file.
pub fn read_to_string(path: &Path, limit: usize) -> Result<String, FileError> {
    let mut buf = Vec::new();
    read_at(AT_FDCWD, path, &mut buf, 64 << 10, limit)
        .map_err(io::Error::from)
        .with_path("read", path)?;
    String::from_utf8(buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        .with_path("read", path)
}

/// Bytes this thread read (the kernel's `rchar`, `/proc/thread-self/io`) while `f` ran, less
/// the reads of that file itself: tests prove a file was not read whole by counting bytes,
/// not by timing.
#[cfg(test)]
pub(super) fn bytes_read_during<T>(f: impl FnOnce() -> T) -> (T, u64) {
    fn rchar() -> (u64, u64) {
        let text = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
        let rchar = text
            .lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .and_then(|v| v.parse().ok())
            .expect("rchar in /proc/thread-self/io");
        (rchar, text.len() as u64)
    }
    let (before, own) = rchar();
    let out = f();
    let (after, _) = rchar();
    (out, after.saturating_sub(before + own))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn regular_files_within_the_bound_only() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        fs::write(&small, "42\n").unwrap();
        assert_eq!(read_to_string(&small, 3).unwrap(), "42\n");
        let err = read_to_string(&small, 2).unwrap_err();
        assert!(
            format!("{}: {}", err, err.source).contains("more than 2 bytes"),
            "{err:?}"
        );
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_retain(0o600)).unwrap();
        let err = read_to_string(&fifo, 10).unwrap_err();
        assert!(err.source.to_string().contains("FIFO"), "{err:?}");
        assert!(read_to_string(dir.path(), 10)
            .unwrap_err()
            .source
            .to_string()
            .contains("directory"));
        // a sparse file far beyond the bound: refused after reading the bound, not read whole
        let big = dir.path().join("big");
        fs::File::create(&big).unwrap().set_len(4 << 30).unwrap();
        let (got, read) = bytes_read_during(|| read_to_string(&big, PROC_TEXT_MAX));
        assert!(got.is_err());
        // (the bound and one more buffer, not the 4 GiB)
        assert!(read < 2 * PROC_TEXT_MAX as u64, "{read} bytes read");
        // the count sees reads: the small file's 3 bytes
        let (_, read) = bytes_read_during(|| read_to_string(&small, 3).unwrap());
        assert_eq!(read, 3);
    }
}
