//! The cgroup side: which hierarchies are mounted (from mountinfo, not assumed), a walk of
//! the memory hierarchy that finds every pod and container cgroup whatever the kubelet
//! cgroup driver, reads their kmem files, and the zombie count from `/proc/cgroups`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::paths::FileError;

/// kmem in use by a memory cgroup (0 when not accounted).
pub const MEMORY_KMEM_USAGE: &str = "memory.kmem.usage_in_bytes";
/// Per-cgroup slab caches: entries while kmem is active, EIO (3.10) or only the header
/// (4.4) when it is off.
pub const MEMORY_KMEM_SLABINFO: &str = "memory.kmem.slabinfo";
/// The mount table, under the proc root.
pub const MOUNTINFO: &str = "self/mountinfo";
/// Controllers and their cgroup counts, under the proc root.
pub const PROC_CGROUPS: &str = "cgroups";
/// Uptime in seconds, under the proc root.
pub const PROC_UPTIME: &str = "uptime";
/// Where cgroup file systems are mounted on a node; `--cgroup-root` replaces this prefix.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Memory cgroup IDs are 16 bit: no more than this many memory cgroups, zombies included.
pub const MEMCG_ID_LIMIT: u64 = 65535;

/// cgroup v1 controllers (super options of a `cgroup` mount; `name=systemd` is none).
const V1_CONTROLLERS: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];
/// kubelet's top cgroup (cgroupfs driver) and its systemd driver spelling.
const KUBEPODS: &str = "kubepods";
const KUBEPODS_SLICE: &str = "kubepods.slice";
/// docker's parent cgroup with the cgroupfs driver.
const DOCKER: &str = "docker";
/// How many unreadable files are kept as evidence.
const KEEP_ERRORS: usize = 5;

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

/// One line of `/proc/PID/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory mounted from the file system (`/` for a whole cgroup hierarchy).
    pub root: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// Parse mountinfo text. Err carries the 1-based line and the line.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, (usize, String)> {
    let mut mounts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || (i + 1, line.to_string());
        let (left, right) = line.split_once(" - ").ok_or_else(bad)?;
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 6 || right.len() < 3 {
            return Err(bad());
        }
        mounts.push(Mount {
            root: unescape(left[3]),
            mount_point: PathBuf::from(unescape(left[4])),
            fstype: right[0].to_string(),
            super_options: right[2].split(',').map(str::to_string).collect(),
        });
    }
    Ok(mounts)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How cgroups are set up on the node (youki's legacy / hybrid / unified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Setup {
    /// cgroup v1 controllers only.
    Legacy,
    /// cgroup v1 controllers plus a cgroup2 mount (systemd's hybrid mode).
    Hybrid,
    /// cgroup v2 only.
    Unified,
    /// No cgroup file system mounted at all.
    None,
}

impl std::fmt::Display for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Setup::Legacy => "cgroup v1 (legacy)",
            Setup::Hybrid => "cgroup v1 with a v2 mount (hybrid)",
            Setup::Unified => "cgroup v2 only (unified)",
            Setup::None => "no cgroup file system mounted",
        })
    }
}

/// A hierarchy to walk: where it is seen here, and where the node mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// The directory to read (the mount point, moved under `--cgroup-root`).
    pub path: PathBuf,
    /// The node's mount point (from mountinfo).
    pub mount_point: PathBuf,
    /// True when the mount shows the hierarchy's root, so its directories are all of them.
    pub whole: bool,
}

/// What mountinfo says about cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub setup: Setup,
    /// The cgroup v1 memory hierarchy, if mounted.
    pub memory: Option<Hierarchy>,
    /// The cgroup2 hierarchy, if mounted.
    pub unified: Option<Hierarchy>,
}

/// Where a node mount point is seen from here: a mount under `/sys/fs/cgroup` moves under
/// `cgroup_root`; any other mount point is used as it is.
pub fn resolve(mount_point: &Path, cgroup_root: &Path) -> PathBuf {
    match mount_point.strip_prefix(DEFAULT_CGROUP_ROOT) {
        Ok(rel) if rel.as_os_str().is_empty() => cgroup_root.to_path_buf(),
        Ok(rel) => cgroup_root.join(rel),
        Err(_) => mount_point.to_path_buf(),
    }
}

/// Classify the node's cgroup mounts (pure).
pub fn layout(mounts: &[Mount], cgroup_root: &Path) -> Layout {
    let hierarchy = |m: &Mount| Hierarchy {
        path: resolve(&m.mount_point, cgroup_root),
        mount_point: m.mount_point.clone(),
        whole: m.root == "/",
    };
    let v1: Vec<&Mount> = mounts.iter().filter(|m| m.fstype == "cgroup").collect();
    let v1_controllers = v1.iter().any(|m| {
        m.super_options
            .iter()
            .any(|o| V1_CONTROLLERS.contains(&o.as_str()))
    });
    // prefer a mount of the whole hierarchy (containers may bind a sub-tree)
    let mut memory: Vec<&&Mount> = v1
        .iter()
        .filter(|m| m.super_options.iter().any(|o| o == "memory"))
        .collect();
    memory.sort_by_key(|m| m.root != "/");
    let mut unified: Vec<&Mount> = mounts.iter().filter(|m| m.fstype == "cgroup2").collect();
    unified.sort_by_key(|m| m.root != "/");
    let setup = match (v1_controllers, unified.is_empty()) {
        (true, true) => Setup::Legacy,
        (true, false) => Setup::Hybrid,
        (false, false) => Setup::Unified,
        (false, true) => Setup::None,
    };
    Layout {
        setup,
        memory: memory.first().map(|m| hierarchy(m)),
        unified: unified.first().map(|m| hierarchy(m)),
    }
}

/// Read `PROC/self/mountinfo` and classify it.
pub fn read_layout(proc_root: &Path, cgroup_root: &Path) -> Result<Layout, CgroupError> {
    let path = proc_root.join(MOUNTINFO);
    let text = crate::paths::read_to_string(&path).map_err(CgroupError::Mountinfo)?;
    let mounts = parse_mountinfo(&text).map_err(|(line, value)| CgroupError::BadMountinfo {
        path,
        line,
        value,
    })?;
    Ok(layout(&mounts, cgroup_root))
}

/// `num_cgroups` of the memory controller in `/proc/cgroups` text. Err: (line, text), or
/// line 0 when there is no memory line.
pub fn parse_proc_cgroups(text: &str) -> Result<u64, (usize, String)> {
    let mut memory = None;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = || (i + 1, line.to_string());
        if fields.len() != 4 || fields[1..].iter().any(|f| f.parse::<u64>().is_err()) {
            return Err(bad());
        }
        if fields[0] == "memory" {
            memory = Some(fields[2].parse::<u64>().map_err(|_| bad())?);
        }
    }
    memory.ok_or((0, String::new()))
}

/// The memory controller's `num_cgroups` (live and zombie) from `PROC/cgroups`.
pub fn read_memory_cgroup_count(proc_root: &Path) -> Result<u64, CgroupError> {
    let path = proc_root.join(PROC_CGROUPS);
    let text = crate::paths::read_to_string(&path).map_err(CgroupError::ProcCgroups)?;
    parse_proc_cgroups(&text).map_err(|(line, value)| {
        if line == 0 {
            CgroupError::NoMemoryController { path }
        } else {
            CgroupError::BadProcCgroups { path, line, value }
        }
    })
}

/// Seconds since boot from `PROC/uptime`.
pub fn read_uptime(proc_root: &Path) -> Option<f64> {
    let text = fs::read_to_string(proc_root.join(PROC_UPTIME)).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// When this boot began: `btime` in `PROC/stat` (seconds since the epoch).
pub fn read_boot_time(proc_root: &Path) -> Option<i64> {
    let text = fs::read_to_string(proc_root.join("stat")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// kubelet's QoS classes (guaranteed pods sit directly under kubepods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    Guaranteed,
    Burstable,
    Besteffort,
}

/// What a memory cgroup is to Kubernetes and docker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Kind {
    /// kubelet's `kubepods` (or `kubepods.slice`): every pod inherits from it.
    Kubepods,
    /// A QoS class cgroup under kubepods.
    Qos {
        qos: Qos,
    },
    Pod {
        pod_uid: String,
        qos: Qos,
    },
    Container {
        pod_uid: String,
        container_id: String,
        qos: Qos,
    },
    /// A container docker started outside Kubernetes (`/docker/<id>`, `docker-<id>.scope`).
    Docker {
        container_id: String,
    },
}

impl Kind {
    pub fn pod_uid(&self) -> Option<&str> {
        match self {
            Kind::Pod { pod_uid, .. } | Kind::Container { pod_uid, .. } => Some(pod_uid),
            _ => None,
        }
    }

    pub fn container_id(&self) -> Option<&str> {
        match self {
            Kind::Container { container_id, .. } | Kind::Docker { container_id } => {
                Some(container_id)
            }
            _ => None,
        }
    }
}

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

/// Where a directory sits, from the names on its path.
#[derive(Debug, Clone)]
enum Place {
    Other,
    Kubepods,
    Qos(Qos),
    Pod(String, Qos),
    /// Under a container: counted, not checked (a container's children inherit from it).
    Inside,
    DockerParent,
}

/// A container directory name: `<id>`, `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`. Returns the ID.
fn container_id(name: &str) -> String {
    match name.strip_suffix(".scope") {
        Some(scope) => scope
            .rsplit_once('-')
            .map(|(_, id)| id)
            .unwrap_or(scope)
            .to_string(),
        None => name.to_string(),
    }
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(name: &str) -> Option<String> {
    if let Some(uid) = name.strip_prefix("pod") {
        return (!uid.is_empty()).then(|| uid.to_string());
    }
    let slice = name.strip_prefix("kubepods-")?.strip_suffix(".slice")?;
    let (_, uid) = slice.split_once("pod")?;
    (!uid.is_empty()).then(|| uid.replace('_', "-"))
}

fn qos_of(name: &str) -> Option<Qos> {
    match name {
        "burstable" | "kubepods-burstable.slice" => Some(Qos::Burstable),
        "besteffort" | "kubepods-besteffort.slice" => Some(Qos::Besteffort),
        _ => None,
    }
}

/// The place and the kind (when checked) of a directory named `name` under `parent`.
fn classify(parent: &Place, name: &str) -> (Place, Option<Kind>) {
    match parent {
        Place::Other => {
            if name == KUBEPODS || name == KUBEPODS_SLICE {
                (Place::Kubepods, Some(Kind::Kubepods))
            } else if name == DOCKER {
                (Place::DockerParent, None)
            } else if name.starts_with("docker-") && name.ends_with(".scope") {
                let container_id = container_id(name);
                (Place::Inside, Some(Kind::Docker { container_id }))
            } else {
                (Place::Other, None)
            }
        }
        Place::Kubepods => {
            if let Some(qos) = qos_of(name) {
                (Place::Qos(qos), Some(Kind::Qos { qos }))
            } else if let Some(uid) = pod_uid(name) {
                let kind = Kind::Pod {
                    pod_uid: uid.clone(),
                    qos: Qos::Guaranteed,
                };
                (Place::Pod(uid, Qos::Guaranteed), Some(kind))
            } else {
                (Place::Other, None)
            }
        }
        Place::Qos(qos) => match pod_uid(name) {
            Some(uid) => {
                let kind = Kind::Pod {
                    pod_uid: uid.clone(),
                    qos: *qos,
                };
                (Place::Pod(uid, *qos), Some(kind))
            }
            None => (Place::Other, None),
        },
        Place::Pod(uid, qos) => (
            Place::Inside,
            Some(Kind::Container {
                pod_uid: uid.clone(),
                container_id: container_id(name),
                qos: *qos,
            }),
        ),
        Place::DockerParent => (
            Place::Inside,
            Some(Kind::Docker {
                container_id: name.to_string(),
            }),
        ),
        Place::Inside => (Place::Inside, None),
    }
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

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);
const FILE_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::CLOEXEC);

/// Walk the hierarchy at `root`: count every directory, check every Kubernetes and docker
/// cgroup. A directory that disappears during the walk (a container that just ended) is
/// skipped; an unreadable hierarchy root is an error.
pub fn walk(root: &Path, opts: WalkOptions) -> Result<Walk, CgroupError> {
    let shown = |rel: &str| root.join(rel.trim_start_matches('/'));
    let root_fd = rustix::fs::openat(
        rustix::fs::CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| CgroupError::Walk(file_error("open directory", root, e.into())))?;
    let mut walk = Walk::default();
    // the topmost kmem-active ancestor of each cgroup (same order as walk.cgroups)
    let mut tops: Vec<Option<usize>> = Vec::new();
    let root_dir = Dir::new(root_fd)
        .map_err(|e| CgroupError::Walk(file_error("open directory", root, e.into())))?;
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
        let walk_err =
            |action, e: Errno| CgroupError::Walk(file_error(action, &shown(&dir.rel), e.into()));
        let parent = dir.parent.fd().map_err(|e| walk_err("open directory", e))?;
        let st = match rustix::fs::statat(parent, dir.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) if !is_root => continue,
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
        let fd = match rustix::fs::openat(parent, dir.name.as_os_str(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if !is_root => continue,
            Err(e) => return Err(walk_err("open directory", e)),
        };
        let mut entries = Dir::new(fd).map_err(|e| walk_err("read directory", e))?;
        let mut children = Vec::new();
        let mut unknown = Vec::new();
        for entry in entries.by_ref() {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            match entry.file_type() {
                FileType::Directory => children.push(OsStr::from_bytes(name).to_os_string()),
                // a file system without d_type
                FileType::Unknown => unknown.push(entry.file_name().to_owned()),
                _ => {}
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
    dir.fd().is_ok_and(|fd| {
        rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
    })
}

/// Read a cgroup's kmem files into a state; never fails. `dir` names the cgroup in `parent`;
/// `shown` gives its full path for messages.
fn read_kmem(
    parent: BorrowedFd<'_>,
    dir: &OsStr,
    slabinfo: bool,
    buf: &mut Vec<u8>,
    shown: impl Fn() -> PathBuf,
) -> Kmem {
    let usage = match read_at(parent, &Path::new(dir).join(MEMORY_KMEM_USAGE), buf, 64) {
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
        Err(Errno::NOENT) => return Kmem::Absent,
        Err(e) => {
            return Kmem::Unreadable(format!(
                "failed to read '{}': {}",
                shown().join(MEMORY_KMEM_USAGE).display(),
                io::Error::from(e)
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
    ) {
        Ok(()) => match slab_entries(buf) {
            0 => Kmem::Off,
            n => Kmem::Active {
                usage,
                slab_entries: n,
            },
        },
        // 3.10 answers EIO while kmem is off; an older kernel may lack the file
        Err(Errno::IO) | Err(Errno::NOENT) => Kmem::Off,
        Err(e) => Kmem::Unreadable(format!(
            "failed to read '{}': {}",
            shown().join(MEMORY_KMEM_SLABINFO).display(),
            io::Error::from(e)
        )),
    }
}

/// Read a small file relative to a directory with plain reads of `chunk` bytes. A short
/// read ends it: a regular file and a cgroup file (seq_file) return less than asked only
/// at the end, and skipping the read that returns 0 saves a syscall per file.
fn read_at(dir: BorrowedFd<'_>, path: &Path, buf: &mut Vec<u8>, chunk: usize) -> Result<(), Errno> {
    buf.clear();
    let fd = rustix::fs::openat(dir, path, FILE_FLAGS, Mode::empty())?;
    loop {
        let len = buf.len();
        buf.resize(len + chunk, 0);
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(n) => {
                buf.truncate(len + n);
                if n < chunk {
                    return Ok(());
                }
            }
            Err(Errno::INTR) => buf.truncate(len),
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        }
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

fn file_error(action: &'static str, path: &Path, source: io::Error) -> FileError {
    FileError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn set_fixture(dir: &Path, name: &str, contents: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(name), contents).unwrap();
    }

    fn cg(dir: &Path, usage: u64, slabinfo: &str) {
        set_fixture(dir, MEMORY_KMEM_USAGE, &format!("{usage}\n"));
        set_fixture(dir, MEMORY_KMEM_SLABINFO, slabinfo);
    }

    const HEADER: &str = "slabinfo - version: 2.1\n# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n";

    #[test]
    fn mountinfo_lines() {
        let text =
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    50 31 0:40 /sub /mnt/with\\040space rw - tmpfs tmpfs rw\n";
        let m = parse_mountinfo(text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m[0].super_options, vec!["rw", "memory"]);
        assert_eq!(m[2].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[2].root, "/sub");
        assert_eq!(parse_mountinfo("garbage\n").unwrap_err().0, 1);
        assert_eq!(parse_mountinfo("1 2 3 - x\n").unwrap_err().0, 1);
    }

    #[test]
    fn layouts() {
        let v1 = "1 0 0:1 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  2 0 0:2 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n";
        let hybrid = format!("{v1}3 0 0:3 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
        let unified = "3 0 0:3 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                       2 0 0:2 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        let rhel6 = "1 0 0:1 / /cgroup/memory rw - cgroup cgroup rw,memory\n";
        let cases: [(&str, &str, Setup, Option<&str>); 5] = [
            ("legacy", v1, Setup::Legacy, Some("/x/memory")),
            ("hybrid", &hybrid, Setup::Hybrid, Some("/x/memory")),
            ("unified", unified, Setup::Unified, None),
            ("none", "", Setup::None, None),
            ("elsewhere", rhel6, Setup::Legacy, Some("/cgroup/memory")),
        ];
        for (name, text, setup, memory) in cases {
            let l = layout(&parse_mountinfo(text).unwrap(), Path::new("/x"));
            assert_eq!(l.setup, setup, "case {name}");
            assert_eq!(
                l.memory.map(|m| m.path),
                memory.map(PathBuf::from),
                "case {name}"
            );
        }
        let l = layout(&parse_mountinfo(unified).unwrap(), Path::new("/x"));
        assert_eq!(l.unified.unwrap().path, PathBuf::from("/x"));
    }

    #[test]
    fn proc_cgroups() {
        let good =
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\nmemory\t4\t49\t1\n";
        assert_eq!(parse_proc_cgroups(good), Ok(49));
        assert_eq!(
            parse_proc_cgroups("#h\nmemory\t4\tmany\t1\n"),
            Err((2, "memory\t4\tmany\t1".into()))
        );
        assert_eq!(parse_proc_cgroups("#h\ncpu 1 1 1\n").unwrap_err().0, 0);
        assert_eq!(parse_proc_cgroups("\u{1}\u{2}garbage").unwrap_err().0, 1);
    }

    #[test]
    fn names() {
        let pods = [
            (
                "pod0d5c3c1a-6ec5-4e8c-9b9e-2f0b1e2f3a4b",
                Some("0d5c3c1a-6ec5-4e8c-9b9e-2f0b1e2f3a4b"),
            ),
            (
                "kubepods-burstable-pod0d5c3c1a_6ec5_4e8c.slice",
                Some("0d5c3c1a-6ec5-4e8c"),
            ),
            ("kubepods-pod12_34.slice", Some("12-34")),
            ("kubepods-burstable.slice", None),
            ("pod", None),
            ("system.slice", None),
        ];
        for (name, want) in pods {
            assert_eq!(pod_uid(name).as_deref(), want, "case {name}");
        }
        let containers = [
            ("docker-abc123.scope", "abc123"),
            ("cri-containerd-abc123.scope", "abc123"),
            ("crio-abc123.scope", "abc123"),
            ("abc123", "abc123"),
        ];
        for (name, want) in containers {
            assert_eq!(container_id(name), want, "case {name}");
        }
    }

    #[test]
    fn slabinfo_entries() {
        assert_eq!(slab_entries(HEADER.as_bytes()), 0);
        assert_eq!(slab_entries(b""), 0);
        let with = format!("{HEADER}kmalloc-64  128 128 64 64 1 : tunables 0 0 0 : slabdata 2 2 0\ndentry 42 42 192 21 1 : tunables 0 0 0 : slabdata 2 2 0\n");
        assert_eq!(slab_entries(with.as_bytes()), 2);
    }

    #[test]
    fn walks_both_drivers_and_docker() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path();
        cg(&m.join("kubepods"), 5000, HEADER);
        cg(&m.join("kubepods/burstable"), 0, HEADER);
        cg(&m.join("kubepods/burstable/podaaaa"), 0, HEADER);
        cg(&m.join("kubepods/burstable/podaaaa/c1"), 0, HEADER);
        cg(
            &m.join("kubepods/podbbbb/c2"),
            0,
            &format!("{HEADER}dentry 1 1 1 1 1\n"),
        );
        cg(&m.join("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podcc_dd.slice/docker-c3.scope"), 7, HEADER);
        cg(&m.join("docker/c4"), 0, HEADER);
        cg(&m.join("system.slice/docker-c5.scope"), 0, HEADER);
        cg(&m.join("system.slice/ssh.service"), 99, HEADER);
        let w = walk(
            m,
            WalkOptions {
                read_kmem: true,
                slabinfo: true,
            },
        )
        .unwrap();
        let find = |p: &str| {
            w.cgroups
                .iter()
                .find(|c| c.path == p)
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        assert_eq!(w.dirs, 16);
        assert_eq!(find("/kubepods").kind, Kind::Kubepods);
        assert_eq!(
            find("/kubepods/burstable/podaaaa/c1").kind,
            Kind::Container {
                pod_uid: "aaaa".into(),
                container_id: "c1".into(),
                qos: Qos::Burstable
            }
        );
        let c2 = find("/kubepods/podbbbb/c2");
        assert_eq!(
            c2.kmem,
            Kmem::Active {
                usage: 0,
                slab_entries: 1
            },
            "slab entries with usage 0"
        );
        assert_eq!(c2.kind.pod_uid(), Some("bbbb"));
        assert_eq!(c2.inherited_from.as_deref(), Some("/kubepods"));
        let c3 = find("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podcc_dd.slice/docker-c3.scope");
        assert_eq!(c3.kind.pod_uid(), Some("cc-dd"));
        assert_eq!(c3.kind.container_id(), Some("c3"));
        assert_eq!(c3.inherited_from, None);
        assert_eq!(
            find("/docker/c4").kind,
            Kind::Docker {
                container_id: "c4".into()
            }
        );
        assert_eq!(
            find("/system.slice/docker-c5.scope").kind.container_id(),
            Some("c5")
        );
        assert!(
            !w.cgroups.iter().any(|c| c.path.contains("ssh")),
            "not a pod"
        );
        assert_eq!(w.active().count(), 3);
        assert!(pods_present(m));
    }

    /// Directory names are bytes: a container cgroup whose name is not UTF-8 is read and
    /// shown lossily, not skipped (a leaking cgroup must never hide behind its name).
    #[test]
    fn a_cgroup_whose_name_is_not_utf8_is_read() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path();
        cg(&m.join("kubepods/podaaaa"), 0, HEADER);
        let odd = std::ffi::OsStr::from_bytes(b"c\xff\xfe1");
        cg(&m.join("kubepods/podaaaa").join(odd), 4096, HEADER);
        cg(
            &m.join("kubepods/podaaaa").join(odd).join("child"),
            0,
            HEADER,
        );
        let w = walk(
            m,
            WalkOptions {
                read_kmem: true,
                slabinfo: true,
            },
        )
        .unwrap();
        assert_eq!(w.dirs, 5, "every directory counted");
        let c = w
            .cgroups
            .iter()
            .find(|c| c.path == "/kubepods/podaaaa/c\u{fffd}\u{fffd}1")
            .unwrap_or_else(|| panic!("not found in {:?}", w.cgroups));
        assert_eq!(
            c.kmem,
            Kmem::Active {
                usage: 4096,
                slab_entries: 0
            }
        );
        assert_eq!(c.kind.container_id(), Some("c\u{fffd}\u{fffd}1"));
        assert_eq!(w.unreadable, 0);
    }

    #[test]
    fn eio_means_off_and_other_errors_are_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path();
        set_fixture(&m.join("kubepods/poda/c1"), MEMORY_KMEM_USAGE, "0\n");
        // reading address 0 of one's own memory is a real EIO, like 3.10's slabinfo
        symlink(
            "/proc/self/mem",
            m.join("kubepods/poda/c1").join(MEMORY_KMEM_SLABINFO),
        )
        .unwrap();
        fs::create_dir_all(m.join("kubepods/poda/c2").join(MEMORY_KMEM_USAGE)).unwrap();
        set_fixture(&m.join("kubepods/poda/c3"), MEMORY_KMEM_USAGE, "lots\n");
        let w = walk(
            m,
            WalkOptions {
                read_kmem: true,
                slabinfo: true,
            },
        )
        .unwrap();
        let by = |p: &str| w.cgroups.iter().find(|c| c.path == p).unwrap().kmem.clone();
        assert_eq!(by("/kubepods/poda/c1"), Kmem::Off);
        assert!(
            matches!(by("/kubepods/poda/c2"), Kmem::Unreadable(e) if e.contains("memory.kmem.usage_in_bytes"))
        );
        assert!(matches!(by("/kubepods/poda/c3"), Kmem::Unreadable(e) if e.contains("'lots'")));
        assert_eq!(w.unreadable, 2);
        assert_eq!(by("/kubepods/poda"), Kmem::Absent);
    }

    #[test]
    fn a_missing_hierarchy_is_an_error() {
        let err = walk(
            Path::new("/nonexistent/memory"),
            WalkOptions {
                read_kmem: true,
                slabinfo: false,
            },
        )
        .unwrap_err();
        assert!(err.source_string().contains("/nonexistent/memory"), "{err}");
    }

    trait SourceString {
        fn source_string(&self) -> String;
    }
    impl SourceString for CgroupError {
        fn source_string(&self) -> String {
            let mut s = self.to_string();
            let mut src = std::error::Error::source(self);
            while let Some(e) = src {
                s.push_str(&format!(": {e}"));
                src = e.source();
            }
            s
        }
    }
}
