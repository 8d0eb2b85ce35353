//! The node-side checks, one function each, judging what the [`Probes`] read:
//! `cgroup-mode` (the hierarchies), `kernel-kmem` (what the kernel does with kmem on this
//! node: the [`Rule`]), `cgroup-kmem` (every pod and container memory cgroup, with the cause
//! of each active one), `zombie-cgroups` (memory cgroup IDs used by leaked cgroups) and
//! `kernel-log` (the leak's messages since boot). The payload checks live in
//! [`super::payload`].

use std::collections::BTreeSet;

use super::causes::{active_with_causes, cause_fix, cause_text, Rule, BOOT_FIX};
use super::cgroup::{self, Setup, MEMCG_ID_LIMIT};
use super::evidence::{self, Cause, Evidence};
use super::kernel;
use super::probes::{KernelLogRead, Probes, Settings};
use super::report::{Check, Metrics, Status};
use crate::config::Severity;
use crate::notes::error_chain;

/// Zombie memory cgroups use this share of the IDs (percent): mkdir is about to fail.
pub const ZOMBIE_PROBLEM_PERCENT: u64 = 90;

/// The fix when Linux < 4.6 ignores the boot parameter and cgroups account kmem.
const IGNORED_FIX: &str = "on this kernel only the nokmem runc and kubelet keep kmem off: \
    install k8s-nokmem if it is not, then recreate the pods listed under cgroup-kmem (drain \
    and reboot the node); or boot Linux 4.6 or later with cgroup.memory=nokmem";

/// `cgroup-mode`: the hierarchies mountinfo shows.
pub(super) fn cgroup_mode_check(probes: &Probes, settings: &Settings) -> Check {
    match &probes.layout {
        Ok(l) => {
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
            Check::new("cgroup-mode", Status::Ok, summary).evidence(Evidence::CgroupMode(
                evidence::CgroupMode {
                    memory: l.memory.as_ref().map(|m| m.path.clone()),
                    setup: l.setup,
                    unified: l.unified.as_ref().map(|m| m.path.clone()),
                },
            ))
        }
        Err(e) => Check::new("cgroup-mode", Status::Unknown, error_chain(e)).fix(format!(
            "check that '{}' is the node's procfs (--proc-root, [verify] proc-root)",
            settings.proc_root.display()
        )),
    }
}

/// `kernel-kmem`: the rule, and whether it is a problem here.
pub(super) fn kernel_check(probes: &Probes, rule: Rule, severity: Severity) -> Check {
    let (release, cmdline, walked) = (&probes.release, &probes.cmdline, &probes.walked);
    let rel = release.as_ref().map(|(t, _)| t.as_str()).unwrap_or("?");
    let evidence = Evidence::KernelKmem(evidence::KernelKmem {
        cmdline: cmdline.as_ref().ok().cloned(),
        cmdline_nokmem: cmdline.as_ref().ok().map(|c| kernel::cmdline_has_nokmem(c)),
        release: release.as_ref().ok().map(|(t, _)| t.clone()),
    });
    let check = match rule {
        Rule::NoV1Memory => Check::new(
            "kernel-kmem",
            Status::Ok,
            "no cgroup v1 memory controller: kmem accounting of v1 cgroups does not apply",
        ),
        Rule::Nokmem => Check::new(
            "kernel-kmem",
            Status::Ok,
            format!(
                "Linux {rel} booted with {}: kmem accounting is off kernel-wide",
                kernel::NOKMEM_PARAM
            ),
        ),
        Rule::NokmemBefore46 => {
            let active = match walked {
                Some(Ok(w)) => w.active().count(),
                _ => 0,
            };
            if active == 0 {
                Check::new(
                    "kernel-kmem",
                    Status::Ok,
                    format!(
                        "Linux {rel} booted with {}: the parameter arrived in Linux 4.6 and may be ignored here (unless this kernel backports it): checked per cgroup",
                        kernel::NOKMEM_PARAM
                    ),
                )
            } else {
                Check::new(
                    "kernel-kmem",
                    Status::Problem,
                    format!(
                        "Linux {rel} ignores {}, the switch that arrived in Linux 4.6: {active} pod and container memory cgroups account kmem although the kernel was booted with it",
                        kernel::NOKMEM_PARAM
                    ),
                )
                .fix(IGNORED_FIX)
            }
        }
        Rule::KernelWide => {
            let status = Status::from_severity(severity);
            let mut summary = format!(
                "Linux {rel} accounts kmem in every cgroup v1 memory cgroup unless booted with {}, \
                 whatever runc and kubelet do",
                kernel::NOKMEM_PARAM
            );
            if severity == Severity::Ignore {
                summary.push_str(" (ignored: [verify] kernel-wide-kmem = ignore)");
            }
            let check = Check::new("kernel-kmem", status, summary);
            if status == Status::Ok {
                check
            } else {
                check.fix(BOOT_FIX)
            }
        }
        Rule::PerCgroup => Check::new(
            "kernel-kmem",
            Status::Ok,
            format!(
                "Linux {rel} accounts kmem only in cgroups where runc or kubelet switch it on \
                 (and their children): checked per cgroup"
            ),
        ),
        Rule::Unknown => {
            let why = match (release, cmdline) {
                (Err(e), _) => error_chain(e),
                (_, Err(e)) => error_chain(e),
                _ => "unknown".into(),
            };
            Check::new("kernel-kmem", Status::Unknown, why)
                .fix("pass --kernel-release, or point --proc-root at the node's procfs")
        }
    };
    check.evidence(evidence)
}

/// `cgroup-kmem`: every kmem-active cgroup of the walk, with its cause.
pub(super) fn cgroup_check(
    probes: &Probes,
    rule: Rule,
    severity: Severity,
    metrics: &mut Metrics,
) -> Check {
    let (walked, swap) = (&probes.walked, probes.swap);
    const NAME: &str = "cgroup-kmem";
    if rule == Rule::NoV1Memory {
        metrics.checked_cgroups = Some(0);
        metrics.kmem_active_cgroups = Some(0);
        return Check::new(
            NAME,
            Status::Skipped,
            "no cgroup v1 memory hierarchy: nothing to check",
        );
    }
    let walk = match walked {
        Some(Ok(w)) => w,
        Some(Err(e)) => {
            return Check::new(NAME, Status::Unknown, error_chain(e))
                .fix("point --cgroup-root at the node's cgroup file system ([verify] cgroup-root)")
        }
        None => {
            return Check::new(
                NAME,
                Status::Unknown,
                "the cgroup layout is unknown (see cgroup-mode)",
            )
        }
    };
    let checked = walk.cgroups.len() as u64;
    metrics.checked_cgroups = Some(checked);
    let active = active_with_causes(walk, rule, swap);
    metrics.kmem_active_cgroups = Some(active.len() as u64);
    let pods: BTreeSet<&str> = active
        .iter()
        .filter_map(|(c, _)| c.kind.pod_uid())
        .collect();
    let evidence = Evidence::CgroupKmem(evidence::CgroupKmem {
        cgroups: active
            .iter()
            .map(|(c, cause)| {
                let (usage, slab) = match c.kmem {
                    cgroup::Kmem::Active {
                        usage,
                        slab_entries,
                    } => (usage, slab_entries),
                    _ => (0, 0),
                };
                evidence::ActiveCgroup {
                    before_swap: swap.map(|t| c.created_before < t),
                    cause: *cause,
                    container_id: c.kind.container_id().map(str::to_string),
                    created_before: c.created_before,
                    inherited_from: c.inherited_from.clone(),
                    kind: c.kind.clone(),
                    kmem_usage_bytes: usage,
                    path: c.path.clone(),
                    pod_uid: c.kind.pod_uid().map(str::to_string),
                    slabinfo_entries: slab,
                    why: cause_text(*cause),
                }
            })
            .collect(),
        checked,
        errors: walk.errors.clone(),
        kmem_active: active.len(),
        pods_with_kmem: pods.len(),
        swap_time: swap,
        unreadable: walk.unreadable,
    });
    if active.is_empty() {
        if walk.unreadable > 0 {
            return Check::new(
                NAME,
                Status::Unknown,
                format!(
                    "could not read the kmem files of {} of {checked} cgroups: {}",
                    walk.unreadable,
                    walk.errors.first().map(String::as_str).unwrap_or("")
                ),
            )
            .fix("run as root; check that --cgroup-root points at a cgroup file system")
            .evidence(evidence);
        }
        let summary = if checked == 0 {
            "no pod or container memory cgroups found (no pods yet?)".to_string()
        } else {
            format!("kmem accounting is off in all {checked} pod and container memory cgroups")
        };
        return Check::new(NAME, Status::Ok, summary).evidence(evidence);
    }
    let status = match rule {
        Rule::KernelWide => Status::from_severity(severity),
        _ => Status::Problem,
    };
    // the fix of the most fundamental cause: kernel, then kubepods, ...
    let main = active
        .iter()
        .map(|(_, c)| *c)
        .min()
        .unwrap_or(Cause::NotSwapped);
    let mut summary = format!(
        "{} of {checked} pod and container memory cgroups account kmem ({} pod{}); {}",
        active.len(),
        pods.len(),
        if pods.len() == 1 { "" } else { "s" },
        cause_text(main)
    );
    if walk.unreadable > 0 {
        summary.push_str(&format!("; {} more could not be read", walk.unreadable));
    }
    let check = Check::new(NAME, status, summary).evidence(evidence);
    if status == Status::Ok {
        check
    } else {
        check.fix(cause_fix(main))
    }
}

/// `zombie-cgroups`: the kernel's count of memory cgroups against the directories.
pub(super) fn zombie_check(probes: &Probes, settings: &Settings, metrics: &mut Metrics) -> Check {
    const NAME: &str = "zombie-cgroups";
    let total = match &probes.memory_cgroups {
        Ok(n) => *n,
        Err(e) => {
            return Check::new(NAME, Status::Unknown, error_chain(e))
                .fix("point --proc-root at the node's procfs ([verify] proc-root)")
        }
    };
    metrics.memory_cgroups = Some(total);
    let (hierarchy, walk) = match (&probes.count_in, &probes.walked) {
        (Some(h), Some(Ok(w))) => (h, w),
        (None, _) => {
            return Check::new(
                NAME,
                Status::Unknown,
                "no cgroup hierarchy mounted to count directories in",
            )
        }
        (_, _) => {
            return Check::new(
                NAME,
                Status::Unknown,
                "the memory hierarchy could not be walked (see cgroup-kmem)",
            )
        }
    };
    if !hierarchy.whole {
        return Check::new(
            NAME,
            Status::Unknown,
            format!(
                "'{}' shows only part of the memory hierarchy, so zombies cannot be counted",
                hierarchy.mount_point.display()
            ),
        );
    }
    let zombies = total.saturating_sub(walk.dirs);
    metrics.zombie_cgroups = Some(zombies);
    let warn_at = MEMCG_ID_LIMIT * u64::from(settings.config.verify.zombie_warn_percent) / 100;
    let problem_at = MEMCG_ID_LIMIT * ZOMBIE_PROBLEM_PERCENT / 100;
    let evidence = Evidence::ZombieCgroups(evidence::ZombieCgroups {
        directories: walk.dirs,
        limit: MEMCG_ID_LIMIT,
        num_cgroups: total,
        problem_at,
        warn_at,
        zombies,
    });
    let pct = zombies * 100 / MEMCG_ID_LIMIT;
    let summary = format!(
        "{zombies} zombie memory cgroups ({total} in the kernel, {} directories): {pct}% of the {MEMCG_ID_LIMIT} IDs",
        walk.dirs
    );
    let status = if total >= problem_at {
        Status::Problem
    } else if zombies >= warn_at {
        Status::Warning
    } else {
        Status::Ok
    };
    let check = Check::new(NAME, status, summary).evidence(evidence);
    if status == Status::Ok {
        check
    } else {
        check.fix("reboot the node (drain it first) before memory cgroup IDs run out and pods fail to start")
    }
}

/// `kernel-log`: the leak's messages in the kernel log since boot.
pub(super) fn kernel_log_check(probes: &Probes) -> Check {
    const NAME: &str = "kernel-log";
    let (source, found) = match &probes.kernel_log {
        KernelLogRead::Read { source, found } => (source.clone(), found),
        KernelLogRead::NoSource => return Check::new(
            NAME,
            Status::Skipped,
            "--proc-root points at a recorded tree: pass --kernel-log FILE to scan its kernel log",
        ),
    };
    match found {
        Err(e @ kernel::KernelError::NotKmsg { .. }) => {
            Check::new(NAME, Status::Skipped, format!("{e}: pass --kernel-log FILE"))
        }
        Err(e) => Check::new(NAME, Status::Unknown, error_chain(e))
            .fix("run as root, or pass --kernel-log FILE (a saved `dmesg`)"),
        Ok(f) if f.total() == 0 => Check::new(
            NAME,
            Status::Ok,
            format!("no leak messages in {} kernel log records since boot", f.scanned),
        )
        .evidence(Evidence::KernelLog(evidence::KernelLog {
            cgroup_enospc: None,
            lines: None,
            scanned: f.scanned,
            slub: None,
            source,
        })),
        Ok(f) => Check::new(
            NAME,
            Status::Problem,
            format!(
                "the kernel log since boot has {} 'SLUB: Unable to allocate memory on node -1' and {} cgroup 'no space left on device' messages",
                f.slub, f.cgroup_enospc
            ),
        )
        .fix("reboot the node (drain it first): the leak has exhausted memory cgroup IDs or slab memory")
        .evidence(Evidence::KernelLog(evidence::KernelLog {
            cgroup_enospc: Some(f.cgroup_enospc),
            lines: Some(f.lines.clone()),
            scanned: f.scanned,
            slub: Some(f.slub),
            source,
        })),
    }
}
