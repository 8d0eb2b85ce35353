//! Real cgroup v1 test cgroups: the v1 hierarchies this host mounts, a guard that removes a
//! test's cgroups in all of them (deepest first, also when the test panics), and the strace
//! lines that write-open a cgroup file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// v1 hierarchies from /proc/self/mountinfo: the mount points of `cgroup` file systems.
pub fn v1_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount_point = left.split_whitespace().nth(4)?;
            (fstype == "cgroup").then(|| PathBuf::from(mount_point.replace("\\040", " ")))
        })
        .collect()
}

/// Removes `<hierarchy>/<parent>` and everything under it in every v1 hierarchy, deepest
/// first, when dropped (also on panic). A cgroup whose last process is still exiting is
/// busy for a moment: retried.
pub struct CgroupGuard {
    parent: String,
    mounts: Vec<PathBuf>,
}

impl CgroupGuard {
    pub fn new(parent: &str) -> CgroupGuard {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        CgroupGuard {
            parent: parent.to_string(),
            mounts: v1_mounts(&mountinfo),
        }
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.mounts.iter().map(|m| m.join(&self.parent)).collect()
    }

    /// Remove everything; returns what could not be removed.
    pub fn remove(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for dir in self.paths() {
            if let Err(e) = rmdir_tree(&dir) {
                failed.push(format!("{}: {e}", dir.display()));
            }
        }
        failed
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for failure in self.remove() {
            eprintln!("cleanup: failed to remove cgroup {failure}");
        }
    }
}

pub fn rmdir_tree(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            rmdir_tree(&entry.path())?;
        }
    }
    let mut tries = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// strace lines that open a file named `name` for writing (`openat` or `openat2`).
pub fn opens_for_writing<'a>(trace: &'a str, name: &str) -> Vec<&'a str> {
    let quoted = format!("/{name}\"");
    trace
        .lines()
        .filter(|l| l.contains("openat(") || l.contains("openat2("))
        .filter(|l| l.contains(&quoted))
        .filter(|l| l.contains("O_WRONLY") || l.contains("O_RDWR"))
        .collect()
}
