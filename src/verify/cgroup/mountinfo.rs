//! Which cgroup hierarchies the node mounts, read from its mount table (never assumed):
//! the v1 memory hierarchy, the cgroup2 mount, and the setup they make (legacy, hybrid or
//! unified). Mount points under `/sys/fs/cgroup` move under `--cgroup-root`.

use std::path::{Path, PathBuf};

use super::CgroupError;

/// The mount table, under the proc root.
pub const MOUNTINFO: &str = "self/mountinfo";
/// Where cgroup file systems are mounted on a node; `--cgroup-root` replaces this prefix.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

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
    let text = crate::verify::bounded::read_to_string(&path, crate::verify::bounded::MOUNTINFO_MAX)
        .map_err(CgroupError::Mountinfo)?;
    let mounts = parse_mountinfo(&text).map_err(|(line, value)| CgroupError::BadMountinfo {
        path,
        line,
        value,
    })?;
    Ok(layout(&mounts, cgroup_root))
}
