//! The cgroup side of `verify`, split as youki splits libcgroups: where the hierarchies are
//! mounted ([`mountinfo`]: legacy, hybrid or unified, from the node's mount table), the
//! kernel's own counts ([`proc`]: `/proc/cgroups`, uptime, boot time), what a directory is to
//! Kubernetes and docker ([`names`]), the walk of the memory hierarchy ([`walk`]) and the
//! per-cgroup kmem files it reads ([`kmem`]). Probes take the proc and cgroup roots as
//! arguments, so a recorded node tree reads like a live one; only the types and probes
//! `verify` needs are re-exported.

use std::path::PathBuf;

use crate::fs::FileError;

mod kmem;
mod mountinfo;
mod names;
mod proc;
mod walk;

pub use kmem::Kmem;
pub use mountinfo::{read_layout, Hierarchy, Layout, Setup};
pub use names::{Kind, Qos};
pub use proc::{read_boot_time, read_memory_cgroup_count, read_uptime};
pub use walk::{pods_present, walk, Cgroup, Walk, WalkOptions};

/// Memory cgroup IDs are 16 bit: no more than this many memory cgroups, zombies included.
pub const MEMCG_ID_LIMIT: u64 = 65535;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to read the mount table")]
    Mountinfo(#[source] FileError),
    #[error("mount table '{}' line {line} is not a mountinfo line: '{value}'", path.display())]
    BadMountinfo {
        path: PathBuf,
        line: usize,
        value: String,
    },
    #[error("failed to read the controller list")]
    ProcCgroups(#[source] FileError),
    #[error("'{}' line {line} is not 'name hierarchy num_cgroups enabled': '{value}'", path.display())]
    BadProcCgroups {
        path: PathBuf,
        line: usize,
        value: String,
    },
    #[error("'{}' has no 'memory' line: the kernel has no memory controller", path.display())]
    NoMemoryController { path: PathBuf },
    #[error("failed to walk the memory cgroup hierarchy")]
    Walk(#[source] FileError),
}

#[cfg(test)]
mod tests;
