//! `k8s-nokmem verify`: kernel-aware checks that kmem accounting is off for pod and
//! container memory cgroups, plus the node-level checks (zombie cgroups, kernel log, the
//! payload in place). Each check yields a [`Check`] with its typed [`Evidence`]; [`run`]
//! never fails: what cannot be read becomes an `unknown` check that says why.
//!
//! Here: [`run`], which reads the node once (`probes`), runs the checks in order and asks
//! the rule ([`verdict`]) what puts the fix in effect. The data flows down, no module
//! importing one that imports it back:
//!
//! - the probes: `cgroup` (mounts, the walk, kmem files), `kernel` (release, command line,
//!   kernel log), `running` (the running kubelet) and `probes` (all of them, read once);
//! - plain data: [`evidence`] (what each check saw) and `report` (the checks and the report);
//! - judging: `causes` (the kernel's rule, why a cgroup accounts kmem), `checks` (kernel,
//!   cgroups, zombies, kernel log), `payload` (what is installed, read as it is checked)
//!   and [`verdict`] (what puts the fix in effect);
//! - output: [`render`] (human, JSON, textfile, node-problem-detector) and [`textfile`]
//!   (where the textfile goes).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info};

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
mod probes;
pub mod render;
mod report;
mod running;
pub mod textfile;
pub mod verdict;

/// A check's summary holds an error on one line (see `notes`).
pub use crate::notes::error_chain;
pub use cgroup::{Kind, Qos, Setup, MEMCG_ID_LIMIT};
pub use checks::ZOMBIE_PROBLEM_PERCENT;
pub use evidence::{Cause, Evidence};
pub use kernel::{parse_release, KERNEL_WIDE_KMEM_SINCE};
pub use probes::Settings;
pub use report::{Check, Metrics, NodeInfo, Status, VerifyReport};
pub use verdict::{Action, Effect, RebootRequired};

use causes::{active_by_cause, Rule};
use checks::{cgroup_check, cgroup_mode_check, kernel_check, kernel_log_check, zombie_check};
use probes::Probes;

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
    let mut metrics = Metrics::default();
    let probes = Probes::read(settings);
    let rule = Rule::of(&probes);
    let severity = settings.config.verify.kernel_wide_kmem;
    let node = NodeInfo {
        kernel_release: probes.release.as_ref().ok().map(|(text, _)| text.clone()),
        cgroup_setup: probes.layout.as_ref().ok().map(|l| l.setup),
        memory_hierarchy: probes.memory.as_ref().map(|m| m.mount_point.clone()),
        cmdline_nokmem: probes.nokmem,
    };
    let mut checks = vec![
        cgroup_mode_check(&probes, settings),
        kernel_check(&probes, rule, severity),
        cgroup_check(&probes, rule, severity, &mut metrics),
        zombie_check(&probes, settings, &mut metrics),
        kernel_log_check(&probes),
    ];
    // what is installed
    checks.extend(payload::checks(settings, &probes, &mut metrics));

    // is the fix in effect, and what will put it in effect
    let inputs = verdict_inputs(settings, &probes, rule, &checks, &metrics);
    debug!("verify effect inputs: {inputs:?}");
    let effect = verdict::decide(&inputs);
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

/// The inputs of the rule, from what the probes read and the checks found.
fn verdict_inputs(
    settings: &Settings,
    probes: &Probes,
    rule: Rule,
    checks: &[Check],
    metrics: &Metrics,
) -> verdict::Inputs {
    // Linux < 4.6 ignores the parameter (unless backported): judge by the cgroups alone
    let counted_as = match rule {
        Rule::NokmemBefore46 => Rule::PerCgroup,
        r => r,
    };
    let active = match &probes.walked {
        Some(Ok(w)) => Some(active_by_cause(w, counted_as, probes.swap)),
        _ if rule == Rule::NoV1Memory => Some(verdict::Active::default()),
        _ => None,
    };
    let v1_memory = probes.layout.as_ref().ok().map(|l| l.memory.is_some());
    verdict::Inputs {
        release: probes.release.as_ref().ok().map(|(_, v)| *v),
        v1_memory,
        cmdline_nokmem: probes.nokmem == Some(true),
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
        rebooted_since_swap: probes.swap.zip(probes.boot_time).map(|(s, b)| b > s),
        boot_time: probes.boot_time,
        cmdline_managed: crate::cmdline::managed(settings.config.kernel_cmdline, v1_memory),
        loader: probes.loader.clone(),
        next_boot: probes.next_boot.clone(),
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
