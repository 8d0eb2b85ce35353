//! What the kernel itself counts, from procfs under the proc root: the memory controller's
//! `num_cgroups` (live and zombie) in `/proc/cgroups`, the uptime and the boot time.

use std::path::Path;

use super::CgroupError;
use crate::verify::bounded;

/// Controllers and their cgroup counts, under the proc root.
pub const PROC_CGROUPS: &str = "cgroups";
/// Uptime in seconds, under the proc root.
pub const PROC_UPTIME: &str = "uptime";
/// Kernel statistics (`btime`: when this boot began), under the proc root.
pub const PROC_STAT: &str = "stat";

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
    let text =
        bounded::read_to_string(&path, bounded::PROC_TEXT_MAX).map_err(CgroupError::ProcCgroups)?;
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
    let text =
        bounded::read_to_string(&proc_root.join(PROC_UPTIME), bounded::PROC_TEXT_MAX).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// When this boot began: `btime` in `PROC/stat` (seconds since the epoch).
pub fn read_boot_time(proc_root: &Path) -> Option<i64> {
    let text = bounded::read_to_string(&proc_root.join(PROC_STAT), bounded::PROC_TEXT_MAX).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}
