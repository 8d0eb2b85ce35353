//! Where `verify` looks ([`Settings`]) and what it reads there about the kernel and the
//! cgroups ([`Probes`]), read once, each read logged with its duration ([`step`]). The
//! checks and the rule judge these reads; none of them reads the node again. (What is
//! installed is read by `payload`, which checks it as it goes; the swap's state file is
//! read here, once, for the swap time and for `payload`.)

use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use log::debug;

use super::cgroup::{self, CgroupError, Hierarchy, Layout, Walk};
use super::kernel::{self, KernelError, LogFindings};
use crate::cmdline::{Loader, NextBoot};
use crate::config::Config;
use crate::notes::error_chain;
use crate::paths::Root;
use crate::state::{State, StateError};

/// Everything `verify` looks at, resolved from flags and config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The node's file system root (MANIFEST, state, diversions, config).
    pub root: Root,
    pub config: Config,
    /// Where the node's `/sys/fs/cgroup` is seen.
    pub cgroup_root: PathBuf,
    /// Where the node's `/proc` is seen.
    pub proc_root: PathBuf,
    /// Use this kernel release instead of `PROC/sys/kernel/osrelease`.
    pub kernel_release: Option<String>,
    /// Read the kernel log from here (default: `/dev/kmsg` when `proc_root` is `/proc`,
    /// else the kernel-log check is skipped: a recorded tree has no log of its own).
    pub kernel_log: Option<PathBuf>,
}

/// The kernel log as read for the `kernel-log` check.
#[derive(Debug)]
pub enum KernelLogRead {
    /// `--proc-root` points at a recorded tree and no `--kernel-log` was given.
    NoSource,
    /// Read from `source`.
    Read {
        source: PathBuf,
        found: Result<LogFindings, KernelError>,
    },
}

/// What `verify` read from the node about the kernel and the cgroups.
#[derive(Debug)]
pub struct Probes {
    /// The cgroup hierarchies, from mountinfo.
    pub layout: Result<Layout, CgroupError>,
    /// The kernel release, as text and `(major, minor)`.
    pub release: Result<(String, (u32, u32)), KernelError>,
    /// The kernel command line.
    pub cmdline: Result<String, KernelError>,
    /// The command line has `cgroup.memory=nokmem` (None: it could not be read).
    pub nokmem: Option<bool>,
    /// The cgroup v1 memory hierarchy, when one is mounted.
    pub memory: Option<Hierarchy>,
    /// Where the cgroup directories are counted: the memory hierarchy, else the unified one.
    pub count_in: Option<Hierarchy>,
    /// The walk of `count_in` (with the kmem files when it is the memory hierarchy).
    pub walked: Option<Result<Walk, CgroupError>>,
    /// The swap's state (`R/var/lib/k8s-nokmem/state.json`; a missing file is the empty state).
    pub state: Result<State, StateError>,
    /// When the payload was swapped in (seconds since the epoch; None: not installed).
    pub swap: Option<i64>,
    /// `num_cgroups` of the memory controller in `PROC/cgroups` (live and zombie).
    pub memory_cgroups: Result<u64, CgroupError>,
    pub kernel_log: KernelLogRead,
    /// When this boot began (seconds since the epoch).
    pub boot_time: Option<i64>,
    /// The boot loader, and what the next boot's command line will be.
    pub loader: Loader,
    pub next_boot: NextBoot,
}

impl Probes {
    /// Read everything, in the order the checks use it. Never fails: a failed read is kept
    /// as its error, for the check that needs it to report.
    pub fn read(settings: &Settings) -> Probes {
        let layout = step("cgroup-mode", || {
            cgroup::read_layout(&settings.proc_root, &settings.cgroup_root)
        });
        let release = step("kernel-release", || {
            kernel::read_release(&settings.proc_root, settings.kernel_release.as_deref())
        });
        let cmdline = step("kernel-cmdline", || {
            kernel::read_cmdline(&settings.proc_root)
        });
        let nokmem = cmdline.as_ref().ok().map(|c| kernel::cmdline_has_nokmem(c));
        let memory = layout.as_ref().ok().and_then(|l| l.memory.clone());
        // per-cgroup kmem, and the directory count for zombies
        let slabinfo = match &release {
            Ok((_, v)) => *v < kernel::KERNEL_WIDE_KMEM_SINCE,
            Err(_) => true,
        };
        let count_in = memory
            .clone()
            .or_else(|| layout.as_ref().ok().and_then(|l| l.unified.clone()));
        let walked = count_in.as_ref().map(|h| {
            step("walk", || {
                cgroup::walk(
                    &h.path,
                    cgroup::WalkOptions {
                        read_kmem: memory.is_some(),
                        slabinfo,
                    },
                )
            })
        });
        let state = State::load(&settings.root);
        let swap = swap_time(&settings.root, &state);
        let memory_cgroups = step("proc-cgroups", || {
            cgroup::read_memory_cgroup_count(&settings.proc_root)
        });
        let kernel_log = match &settings.kernel_log {
            Some(p) => Some(p.clone()),
            None if settings.proc_root == Path::new("/proc") => Some(PathBuf::from(kernel::KMSG)),
            None => None,
        }
        .map_or(KernelLogRead::NoSource, |source| KernelLogRead::Read {
            found: step("kernel-log", || kernel::read_log(&source)),
            source,
        });
        Probes {
            layout,
            release,
            cmdline,
            nokmem,
            memory,
            count_in,
            walked,
            state,
            swap,
            memory_cgroups,
            kernel_log,
            boot_time: cgroup::read_boot_time(&settings.proc_root),
            loader: crate::cmdline::loader(&settings.root),
            next_boot: crate::cmdline::next_boot(&settings.root),
        }
    }
}

/// Run one step, logging one line with its duration.
pub fn step<T, E: std::error::Error>(name: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let start = Instant::now();
    let result = f();
    let ms = start.elapsed().as_millis();
    // debug: install runs the checks too, and its log is apt's term.log
    match &result {
        Ok(_) => debug!("verify {name}: ok ({ms} ms)"),
        Err(e) => debug!("verify {name}: FAILED: {} ({ms} ms)", error_chain(e)),
    }
    result
}

/// When the payload was swapped in: the latest `swapped_at` of the targets in
/// `R/var/lib/k8s-nokmem/state.json` (stamped by the install's record step), else the
/// file's mtime (state files from before that stamp; the record step is the install's last
/// write). None when not installed.
fn swap_time(root: &Root, state: &Result<State, StateError>) -> Option<i64> {
    let path = State::path(root);
    let from_file = std::fs::metadata(&path)
        .ok()?
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    match state {
        Ok(state) => state
            .targets
            .values()
            .filter_map(|t| t.swapped_at)
            .max()
            .map(|t| t as i64)
            .or(from_file),
        Err(e) => {
            debug!("{}: using the state file's mtime", error_chain(e));
            from_file
        }
    }
}
