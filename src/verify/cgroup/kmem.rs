//! The kmem files of one memory cgroup, read relative to its parent's open directory (one
//! or two path components per lookup, so 10,000 cgroups read fast): the usage, and on
//! Linux < 4.6 the slab caches charged to it when the usage reads 0.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::verify::bounded::{self, read_at, ReadError};

/// kmem in use by a memory cgroup (0 when not accounted).
pub const MEMORY_KMEM_USAGE: &str = "memory.kmem.usage_in_bytes";
/// Per-cgroup slab caches: entries while kmem is active, EIO (3.10) or only the header
/// (4.4) when it is off.
pub const MEMORY_KMEM_SLABINFO: &str = "memory.kmem.slabinfo";

/// The kmem state of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kmem {
    /// Not accounted: usage 0 and no slab entries (or slabinfo EIO).
    Off,
    /// Accounted.
    Active { usage: u64, slab_entries: usize },
    /// No kmem files (a kernel built without kmem accounting).
    Absent,
    /// A kmem file could not be read or parsed.
    Unreadable(String),
}

impl Kmem {
    pub fn is_active(&self) -> bool {
        matches!(self, Kmem::Active { .. })
    }
}

/// Read a cgroup's kmem files into a state; never fails. `dir` names the cgroup in `parent`;
/// `shown` gives its full path for messages.
pub(super) fn read_kmem(
    parent: BorrowedFd<'_>,
    dir: &OsStr,
    slabinfo: bool,
    buf: &mut Vec<u8>,
    shown: impl Fn() -> PathBuf,
) -> Kmem {
    let usage = match read_at(
        parent,
        &Path::new(dir).join(MEMORY_KMEM_USAGE),
        buf,
        64,
        bounded::NUMBER_MAX,
    ) {
        Ok(()) => match parse_u64(buf) {
            Some(v) => v,
            None => {
                return Kmem::Unreadable(format!(
                    "'{}' holds '{}', not a number of bytes",
                    shown().join(MEMORY_KMEM_USAGE).display(),
                    String::from_utf8_lossy(buf).trim()
                ))
            }
        },
        Err(ReadError::Os(Errno::ENOENT)) => return Kmem::Absent,
        Err(e) => {
            return Kmem::Unreadable(format!(
                "failed to read '{}': {e}",
                shown().join(MEMORY_KMEM_USAGE).display(),
            ))
        }
    };
    if usage > 0 {
        return Kmem::Active {
            usage,
            slab_entries: 0,
        };
    }
    if !slabinfo {
        return Kmem::Off;
    }
    match read_at(
        parent,
        &Path::new(dir).join(MEMORY_KMEM_SLABINFO),
        buf,
        4096,
        bounded::SLABINFO_MAX,
    ) {
        Ok(()) => match slab_entries(buf) {
            0 => Kmem::Off,
            n => Kmem::Active {
                usage,
                slab_entries: n,
            },
        },
        // 3.10 answers EIO while kmem is off; an older kernel may lack the file
        Err(ReadError::Os(Errno::EIO | Errno::ENOENT)) => Kmem::Off,
        Err(e) => Kmem::Unreadable(format!(
            "failed to read '{}': {e}",
            shown().join(MEMORY_KMEM_SLABINFO).display(),
        )),
    }
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// Lines of `memory.kmem.slabinfo` that are slab caches, not its two header lines
/// (`slabinfo - version: 2.1`, `# name <active_objs> ...`).
pub fn slab_entries(text: &[u8]) -> usize {
    text.split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter(|l| !l.starts_with(b"slabinfo -") && !l.starts_with(b"#"))
        .count()
}
