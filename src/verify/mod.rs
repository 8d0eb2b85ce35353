//! `k8s-nokmem verify`: kernel-aware checks that kmem accounting is off for pod and
//! container memory cgroups, plus the node-level checks (zombie cgroups, kernel log, the
//! payload in place). Each check yields a [`Check`] with its typed [`Evidence`]; [`run`]
//! never fails: what cannot be read becomes an `unknown` check that says why.
//!
//! Here: the report types, [`run`] (the order of the checks and the kernel `Rule`) and
//! when the swap happened. The probes: `cgroup` (mounts, the walk, kmem files) and
//! `kernel` (release, command line, kernel log). The checks: `checks` (kernel, cgroups,
//! zombies, kernel log), `causes` (why a cgroup accounts kmem) and `node` (what is
//! installed). Then [`effect`] (what puts the fix in effect) and [`render`] (human, JSON,
//! textfile, node-problem-detector).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info};
use serde::Serialize;

use crate::config::{Config, Severity};
use crate::outcome::Outcome;
use crate::paths::Root;

mod bounded;
mod causes;
mod cgroup;
mod checks;
pub mod evidence;
mod kernel;
mod payload;
pub mod render;
mod running;
pub mod textfile;
pub mod verdict;

/// A check's summary holds an error on one line (see `notes`).
pub use crate::notes::error_chain;
pub use causes::Cause;
pub use cgroup::{Kind, Qos, Setup, MEMCG_ID_LIMIT};
pub use evidence::Evidence;
pub use kernel::{parse_release, KERNEL_WIDE_KMEM_SINCE};
pub use verdict::{Action, Effect, RebootRequired};

use causes::active_by_cause;
use checks::{cgroup_check, kernel_check, kernel_log_check, zombie_check};

/// Zombie memory cgroups use this share of the IDs (percent): mkdir is about to fail.
pub const ZOMBIE_PROBLEM_PERCENT: u64 = 90;

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

/// How one check came out. Warning and skipped do not change the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Warning,
    Unknown,
    Problem,
}

impl Status {
    pub fn outcome(self) -> Outcome {
        match self {
            Status::Ok | Status::Skipped | Status::Warning => Outcome::Ok,
            Status::Unknown => Outcome::Unknown,
            Status::Problem => Outcome::Problem,
        }
    }

    fn from_severity(severity: Severity) -> Status {
        match severity {
            Severity::Problem => Status::Problem,
            Severity::Warning => Status::Warning,
            Severity::Ignore => Status::Ok,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Warning => "warning",
            Status::Unknown => "unknown",
            Status::Problem => "problem",
        })
    }
}

/// One check: what it found, the evidence, and what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// One sentence for humans.
    pub summary: String,
    /// The one thing to do, when the status is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    #[serde(serialize_with = "evidence::sorted")]
    pub evidence: Evidence,
}

impl Check {
    fn new(name: &'static str, status: Status, summary: impl Into<String>) -> Check {
        Check {
            name,
            status,
            summary: summary.into(),
            fix: None,
            evidence: Evidence::None,
        }
    }

    /// A check that could not tell, with why and what to do.
    pub fn new_unknown(
        name: &'static str,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(name, Status::Unknown, why).fix(fix)
    }

    /// A finding that does not change the outcome, with what to do.
    pub fn new_warning(
        name: &'static str,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(name, Status::Warning, why).fix(fix)
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    fn evidence(mut self, evidence: Evidence) -> Check {
        self.evidence = evidence;
        self
    }
}

/// Numbers for monitoring (Prometheus textfile, JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    /// Pod, container, QoS and docker memory cgroups checked.
    pub checked_cgroups: Option<u64>,
    pub kmem_active_cgroups: Option<u64>,
    pub zombie_cgroups: Option<u64>,
    /// `num_cgroups` of the memory controller (live and zombie).
    pub memory_cgroups: Option<u64>,
    /// Per target binary: is the payload in place (absent when not installed).
    pub binary_match: Vec<(String, bool)>,
    /// Per swapped target: did its original's package change since the swap.
    pub original_upgraded: Vec<(String, bool)>,
}

/// What the node is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeInfo {
    pub kernel_release: Option<String>,
    pub cgroup_setup: Option<Setup>,
    pub memory_hierarchy: Option<PathBuf>,
    pub cmdline_nokmem: Option<bool>,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub status: Outcome,
    pub version: &'static str,
    /// Seconds since the epoch when the run ended.
    pub timestamp: u64,
    pub node: NodeInfo,
    pub checks: Vec<Check>,
    pub metrics: Metrics,
    /// Is a reboot what puts the fix in effect, and why (see [`effect`]).
    pub reboot_required: RebootRequired,
    /// What puts the fix in effect: none, recreate-pods, reboot, operator.
    pub action: Action,
    /// The evidence the rule judged (`[services] apply = auto` decides from it too).
    #[serde(skip)]
    pub inputs: Option<verdict::Inputs>,
}

impl VerifyReport {
    /// The check whose fix is the one thing to do: the worst status first, then the order
    /// of the checks (kernel before cgroups before binaries).
    pub fn first_fix(&self) -> Option<&Check> {
        let worst = self
            .checks
            .iter()
            .filter(|c| c.fix.is_some() && c.status > Status::Skipped)
            .map(|c| c.status)
            .max()?;
        self.checks
            .iter()
            .find(|c| c.status == worst && c.fix.is_some())
    }
}

/// How kmem accounting works on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// No cgroup v1 memory controller: not this leak.
    NoV1Memory,
    /// Booted with `cgroup.memory=nokmem` (Linux >= 4.6, or the release unknown): off
    /// everywhere; usage must be 0.
    Nokmem,
    /// Booted with `cgroup.memory=nokmem` on Linux < 4.6, which ignores it (the switch
    /// arrived in 4.6) unless the vendor backported it: judged per cgroup.
    NokmemBefore46,
    /// Linux >= 4.6: on in every v1 memory cgroup.
    KernelWide,
    /// Linux < 4.6: on where runc/kubelet switched it on, and inherited by children.
    PerCgroup,
    /// The kernel release is unknown.
    Unknown,
}

/// Does the node have a cgroup v1 memory controller (None: mountinfo unreadable)?
pub fn v1_memory(proc_root: &Path, cgroup_root: &Path) -> Option<bool> {
    cgroup::read_layout(proc_root, cgroup_root)
        .ok()
        .map(|l| l.memory.is_some())
}

/// Settings for the rule as `install` and `remove` see the node: the config's roots.
pub fn settings_for(root: &Root, config: &Config) -> Settings {
    Settings {
        root: root.clone(),
        cgroup_root: config.verify.cgroup_root.clone(),
        proc_root: config.verify.proc_root.clone(),
        kernel_release: None,
        kernel_log: None,
        config: config.clone(),
    }
}

/// Run every check. Never fails: unreadable inputs become `unknown` checks.
pub fn run(settings: &Settings) -> VerifyReport {
    let mut node = NodeInfo::default();
    let mut checks = Vec::new();
    let mut metrics = Metrics::default();

    let layout = step("cgroup-mode", || {
        cgroup::read_layout(&settings.proc_root, &settings.cgroup_root)
    });
    let release = step("kernel-release", || {
        kernel::read_release(&settings.proc_root, settings.kernel_release.as_deref())
    });
    let cmdline = step("kernel-cmdline", || {
        kernel::read_cmdline(&settings.proc_root)
    });

    // cgroup mode
    match &layout {
        Ok(l) => {
            node.cgroup_setup = Some(l.setup);
            node.memory_hierarchy = l.memory.as_ref().map(|m| m.mount_point.clone());
            let summary = match &l.memory {
                Some(m) => format!(
                    "{}; memory controller at '{}'",
                    l.setup,
                    m.mount_point.display()
                ),
                None if l.setup == Setup::Unified => {
                    format!("{}: no kmem files, not affected by this leak", l.setup)
                }
                None => format!(
                    "{}; no cgroup v1 memory controller mounted: not affected by this leak",
                    l.setup
                ),
            };
            checks.push(Check::new("cgroup-mode", Status::Ok, summary).evidence(
                Evidence::CgroupMode(evidence::CgroupMode {
                    memory: l.memory.as_ref().map(|m| m.path.clone()),
                    setup: l.setup,
                    unified: l.unified.as_ref().map(|m| m.path.clone()),
                }),
            ));
        }
        Err(e) => checks.push(
            Check::new("cgroup-mode", Status::Unknown, error_chain(e)).fix(format!(
                "check that '{}' is the node's procfs (--proc-root, [verify] proc-root)",
                settings.proc_root.display()
            )),
        ),
    }
    if let Ok((text, _)) = &release {
        node.kernel_release = Some(text.clone());
    }
    let nokmem = cmdline.as_ref().ok().map(|c| kernel::cmdline_has_nokmem(c));
    node.cmdline_nokmem = nokmem;

    // kernel rule
    let memory = layout.as_ref().ok().and_then(|l| l.memory.clone());
    let rule = match (&layout, &release, nokmem) {
        (Ok(l), _, _) if l.memory.is_none() => Rule::NoV1Memory,
        (_, Ok((_, v)), Some(true)) if *v < kernel::KERNEL_WIDE_KMEM_SINCE => Rule::NokmemBefore46,
        (_, _, Some(true)) => Rule::Nokmem,
        (_, Ok((_, v)), _) if *v >= kernel::KERNEL_WIDE_KMEM_SINCE => Rule::KernelWide,
        (_, Ok(_), _) => Rule::PerCgroup,
        _ => Rule::Unknown,
    };
    let severity = settings.config.verify.kernel_wide_kmem;

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
    let swap = swap_time(&settings.root);
    checks.push(kernel_check(rule, &release, &cmdline, severity, &walked));
    checks.push(cgroup_check(rule, severity, &walked, swap, &mut metrics));

    // zombies
    checks.push(zombie_check(
        settings,
        count_in.as_ref(),
        &walked,
        &mut metrics,
    ));

    // kernel log
    checks.push(kernel_log_check(settings));

    // what is installed
    checks.extend(payload::checks(settings, &mut metrics));

    // is the fix in effect, and what will put it in effect
    let (effect, inputs) = effect_of(
        settings,
        rule,
        &release,
        nokmem,
        memory.is_some(),
        layout.is_ok(),
        &walked,
        swap,
        &checks,
        &metrics,
    );
    debug!("verify effect: {}: {}", effect.action.name(), effect.reason);
    if let Some(why) = verdict::binaries_irrelevant(&inputs) {
        payload::kmem_blind(&mut checks, &why);
    }

    let status = checks
        .iter()
        .map(|c| c.status.outcome())
        .max()
        .unwrap_or(Outcome::Ok);
    VerifyReport {
        status,
        version: env!("CARGO_PKG_VERSION"),
        timestamp: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        node,
        checks,
        metrics,
        reboot_required: effect.reboot_required(),
        action: effect.action,
        inputs: Some(inputs),
    }
}

/// The inputs of the rule, from what the checks found.
#[allow(clippy::too_many_arguments)]
fn effect_of(
    settings: &Settings,
    rule: Rule,
    release: &Result<(String, (u32, u32)), kernel::KernelError>,
    nokmem: Option<bool>,
    v1_memory: bool,
    layout_known: bool,
    walked: &Option<Result<cgroup::Walk, cgroup::CgroupError>>,
    swap: Option<i64>,
    checks: &[Check],
    metrics: &Metrics,
) -> (Effect, verdict::Inputs) {
    let version = release.as_ref().ok().map(|(_, v)| *v);
    // Linux < 4.6 ignores the parameter (unless backported): judge by the cgroups alone
    let counted_as = match rule {
        Rule::NokmemBefore46 => Rule::PerCgroup,
        r => r,
    };
    let active = match walked {
        Some(Ok(w)) => Some(active_by_cause(w, counted_as, swap)),
        _ if rule == Rule::NoV1Memory => Some(verdict::Active::default()),
        _ => None,
    };
    let boot_time = cgroup::read_boot_time(&settings.proc_root);
    let v1_memory = layout_known.then_some(v1_memory);
    let inputs = verdict::Inputs {
        release: version,
        v1_memory,
        cmdline_nokmem: nokmem == Some(true),
        kernel_wide_ignored: settings.config.verify.kernel_wide_kmem == Severity::Ignore,
        active,
        payload_kubelet: metrics
            .binary_match
            .iter()
            .find(|(name, _)| name == "kubelet")
            .map(|(_, ok)| *ok),
        running_old_kubelet: checks
            .iter()
            .any(|c| c.name == payload::RUNNING_KUBELET && c.status == Status::Problem),
        rebooted_since_swap: swap.zip(boot_time).map(|(s, b)| b > s),
        boot_time,
        cmdline_managed: crate::cmdline::managed(settings.config.kernel_cmdline, v1_memory),
        loader: crate::cmdline::loader(&settings.root),
        next_boot: crate::cmdline::next_boot(&settings.root),
    };
    debug!("verify effect inputs: {inputs:?}");
    (verdict::decide(&inputs), inputs)
}

/// Run one step, logging one line with its duration.
fn step<T, E: std::error::Error>(name: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
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
fn swap_time(root: &Root) -> Option<i64> {
    let path = crate::targets::State::path(root);
    let from_file = std::fs::metadata(&path)
        .ok()?
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    match crate::targets::State::load(root) {
        Ok(state) => state
            .targets
            .values()
            .filter_map(|t| t.swapped_at)
            .max()
            .map(|t| t as i64)
            .or(from_file),
        Err(e) => {
            debug!("{}: using the state file's mtime", error_chain(&e));
            from_file
        }
    }
}

/// Wait until a pod cgroup exists, at most until `boot_wait` after boot (so a periodic run
/// long after boot does not wait). Returns how long it waited.
pub fn wait_for_pods(settings: &Settings) -> Duration {
    let start = Instant::now();
    let Ok(layout) = cgroup::read_layout(&settings.proc_root, &settings.cgroup_root) else {
        return Duration::ZERO;
    };
    let Some(memory) = layout.memory else {
        return Duration::ZERO;
    };
    let uptime = cgroup::read_uptime(&settings.proc_root).unwrap_or(f64::MAX);
    let budget = settings.config.verify.boot_wait.as_secs_f64() - uptime;
    if budget <= 0.0 {
        debug!("wait for pods: {uptime:.0} s since boot, beyond boot-wait: not waiting");
        return Duration::ZERO;
    }
    // boot-wait is bounded (a day); checked all the same, so that no value can panic here
    let Some(deadline) = Duration::try_from_secs_f64(budget)
        .ok()
        .and_then(|b| start.checked_add(b))
    else {
        debug!("wait for pods: a boot-wait of {budget} s is out of range: not waiting");
        return Duration::ZERO;
    };
    while !cgroup::pods_present(&memory.path) {
        if Instant::now() >= deadline {
            info!(
                "verify wait-for-pods: no pod cgroup under '{}' after {} ms ([verify] boot-wait)",
                memory.mount_point.display(),
                start.elapsed().as_millis()
            );
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    info!(
        "verify wait-for-pods: ok ({} ms)",
        start.elapsed().as_millis()
    );
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_fix_first() {
        let report = VerifyReport {
            status: Outcome::Problem,
            version: "0",
            timestamp: 0,
            node: NodeInfo::default(),
            checks: vec![
                Check::new("a", Status::Warning, "w").fix("fix a"),
                Check::new("b", Status::Unknown, "u").fix("fix b"),
                Check::new("c", Status::Problem, "p").fix("fix c"),
                Check::new("d", Status::Problem, "p").fix("fix d"),
            ],
            metrics: Metrics::default(),
            reboot_required: RebootRequired {
                required: false,
                reason: String::new(),
            },
            action: Action::None,
            inputs: None,
        };
        assert_eq!(report.first_fix().map(|c| c.name), Some("c"));
    }
}
