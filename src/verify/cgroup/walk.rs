//! The walk of a memory hierarchy: count every directory (what `/proc/cgroups` counts, for
//! zombies), and check every Kubernetes and docker cgroup on the way (its kind, its kmem
//! state, when it was created and which active ancestor it inherits kmem from).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fstatat, Mode, SFlag};

use super::kmem::{read_kmem, Kmem};
use super::names::{classify, pod_uid, qos_of, Kind, Place, KUBEPODS, KUBEPODS_SLICE};
use super::CgroupError;
use crate::fs::FileError;

/// How many unreadable files are kept as evidence.
const KEEP_ERRORS: usize = 5;

/// One pod, container, QoS or docker memory cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// Path inside the hierarchy, starting with `/`.
    pub path: String,
    pub kind: Kind,
    pub kmem: Kmem,
    /// Latest creation time the directory allows (seconds since the epoch): the earliest
    /// of its mtime, ctime and its sub-cgroups' ctimes. A directory's times move when
    /// sub-cgroups are created, so this is an upper bound of its creation time.
    pub created_before: i64,
    /// The topmost checked ancestor with kmem active (kmem is inherited on Linux < 4.6).
    pub inherited_from: Option<String>,
}

/// What a walk of the memory hierarchy found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Every directory, the hierarchy root included (that is what `num_cgroups` counts).
    pub dirs: u64,
    /// Kubernetes and docker cgroups, sorted by path.
    pub cgroups: Vec<Cgroup>,
    /// Cgroups whose kmem files could not be read.
    pub unreadable: u64,
    /// The first few unreadable files, with the error.
    pub errors: Vec<String>,
}

impl Walk {
    pub fn active(&self) -> impl Iterator<Item = &Cgroup> {
        self.cgroups.iter().filter(|c| c.kmem.is_active())
    }
}

/// How to walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkOptions {
    /// Read each cgroup's kmem files (only the directory count is needed on cgroup v2).
    pub read_kmem: bool,
    /// Also read `memory.kmem.slabinfo` when usage is 0 (Linux < 4.6: slabs can be
    /// charged to a cgroup whose usage reads 0 only there; later kernels changed the file).
    pub slabinfo: bool,
}

/// A directory waiting to be visited: looked up by name in its parent's open directory, so
/// the kernel resolves one or two path components per call instead of the whole path (what
/// counts when 10,000 cgroups are read).
struct Pending {
    /// The parent directory, kept open while its children wait.
    parent: Rc<Dir>,
    /// Name in the parent (`.` for the hierarchy root), as the kernel has it: cgroup names
    /// need not be UTF-8 (only `rel`, for display, is lossy).
    name: OsString,
    /// Path inside the hierarchy, `` for its root.
    rel: String,
    place: Place,
    kind: Option<Kind>,
    /// Index of the nearest checked ancestor in `Walk::cgroups`.
    parent_idx: Option<usize>,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NOFOLLOW);

/// Walk the hierarchy at `root`: count every directory, check every Kubernetes and docker
/// cgroup. A directory that disappears during the walk (a container that just ended) is
/// skipped; an unreadable hierarchy root is an error.
pub fn walk(root: &Path, opts: WalkOptions) -> Result<Walk, CgroupError> {
    let shown = |rel: &str| root.join(rel.trim_start_matches('/'));
    let root_fd = nix::fcntl::openat(
        AT_FDCWD,
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| CgroupError::Walk(FileError::new("open directory", root, e.into())))?;
    let mut walk = Walk::default();
    // the topmost kmem-active ancestor of each cgroup (same order as walk.cgroups)
    let mut tops: Vec<Option<usize>> = Vec::new();
    let root_dir = Dir::from_fd(root_fd)
        .map_err(|e| CgroupError::Walk(FileError::new("open directory", root, e.into())))?;
    let mut stack = vec![Pending {
        parent: Rc::new(root_dir),
        name: ".".into(),
        rel: String::new(),
        place: Place::Other,
        kind: None,
        parent_idx: None,
    }];
    let mut buf = Vec::with_capacity(4096);
    while let Some(dir) = stack.pop() {
        let is_root = dir.rel.is_empty();
        let walk_err = |action, e: Errno| {
            CgroupError::Walk(FileError::new(action, &shown(&dir.rel), e.into()))
        };
        let parent = dir.parent.as_fd();
        let st = match fstatat(parent, dir.name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) if !is_root => continue,
            Err(e) => return Err(walk_err("stat", e)),
        };
        walk.dirs += 1;
        let mut parent_idx = dir.parent_idx;
        if let (true, Some(kind)) = (opts.read_kmem, dir.kind) {
            let kmem = read_kmem(parent, &dir.name, opts.slabinfo, &mut buf, || {
                shown(&dir.rel)
            });
            if let Kmem::Unreadable(err) = &kmem {
                walk.unreadable += 1;
                if walk.errors.len() < KEEP_ERRORS {
                    walk.errors.push(err.clone());
                }
            }
            let (mtime, ctime) = (st.st_mtime as i64, st.st_ctime as i64);
            if let Some(p) = dir.parent_idx {
                let parent_cg = &mut walk.cgroups[p];
                parent_cg.created_before = parent_cg.created_before.min(ctime);
            }
            let top = match dir.parent_idx {
                Some(p) if walk.cgroups[p].kmem.is_active() => Some(tops[p].unwrap_or(p)),
                Some(p) => tops[p],
                None => None,
            };
            let inherited_from = match (kmem.is_active(), top) {
                (true, Some(t)) => Some(walk.cgroups[t].path.clone()),
                _ => None,
            };
            walk.cgroups.push(Cgroup {
                path: if is_root { "/".into() } else { dir.rel.clone() },
                kind,
                kmem,
                created_before: mtime.min(ctime),
                inherited_from,
            });
            tops.push(top);
            parent_idx = Some(walk.cgroups.len() - 1);
        }
        // st_nlink of a directory is 2 + its sub-directories on cgroupfs, tmpfs and ext4:
        // a leaf needs no readdir (most cgroups are leaves)
        if st.st_nlink == 2 {
            continue;
        }
        let fd = match nix::fcntl::openat(parent, dir.name.as_os_str(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !is_root => continue,
            Err(e) => return Err(walk_err("open directory", e)),
        };
        let mut entries = Dir::from_fd(fd).map_err(|e| walk_err("read directory", e))?;
        let mut children = Vec::new();
        let mut unknown = Vec::new();
        for entry in entries.iter() {
            // a read error ends the listing (another read would likely fail the same way)
            let Ok(entry) = entry else { break };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            match entry.file_type() {
                Some(Type::Directory) => children.push(OsStr::from_bytes(name).to_os_string()),
                // a file system without d_type
                None => unknown.push(entry.file_name().to_owned()),
                Some(_) => {}
            }
        }
        for name in unknown {
            if dir_fd_is_dir(&entries, &name) {
                children.push(OsStr::from_bytes(name.to_bytes()).to_os_string());
            }
        }
        // the children look themselves up in this directory: keep it open until they did
        let entries = Rc::new(entries);
        for name in children {
            let shown = name.to_string_lossy();
            let (place, kind) = classify(&dir.place, &shown);
            stack.push(Pending {
                parent: Rc::clone(&entries),
                rel: format!("{}/{}", dir.rel, shown),
                name,
                place,
                kind,
                parent_idx,
            });
        }
    }
    walk.cgroups.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(walk)
}

fn dir_fd_is_dir(dir: &Dir, name: &std::ffi::CStr) -> bool {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}

/// True when at least one pod cgroup exists (the boot check waits for this).
pub fn pods_present(memory: &Path) -> bool {
    let kids = |dir: &Path| -> Vec<(PathBuf, String)> {
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    for top in [KUBEPODS, KUBEPODS_SLICE] {
        for (path, name) in kids(&memory.join(top)) {
            if pod_uid(&name).is_some() {
                return true;
            }
            if qos_of(&name).is_some() && kids(&path).iter().any(|(_, n)| pod_uid(n).is_some()) {
                return true;
            }
        }
    }
    false
}
