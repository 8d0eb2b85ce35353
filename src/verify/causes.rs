//! How kmem accounting works on this node (the [`Rule`], from what the probes read), why a
//! kmem-active cgroup is active (the kernel, kubepods, before or after the swap, no swap at
//! all), what that means and the one thing that fixes it, and the count by cause that the
//! fleet rule ([`super::verdict`]) judges.

use std::collections::{HashMap, HashSet};

use super::cgroup::{self, Kind};
use super::evidence::Cause;
use super::kernel::KERNEL_WIDE_KMEM_SINCE;
use super::probes::Probes;
use super::verdict;

/// The fix when the kernel accounts kmem everywhere: boot with the parameter.
pub(super) const BOOT_FIX: &str = "add cgroup.memory=nokmem to the kernel command line \
    (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot";

/// How kmem accounting works on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
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

impl Rule {
    /// The rule of the node the probes read.
    pub(super) fn of(probes: &Probes) -> Rule {
        match (&probes.layout, &probes.release, probes.nokmem) {
            (Ok(l), _, _) if l.memory.is_none() => Rule::NoV1Memory,
            (_, Ok((_, v)), Some(true)) if *v < KERNEL_WIDE_KMEM_SINCE => Rule::NokmemBefore46,
            (_, _, Some(true)) => Rule::Nokmem,
            (_, Ok((_, v)), _) if *v >= KERNEL_WIDE_KMEM_SINCE => Rule::KernelWide,
            (_, Ok(_), _) => Rule::PerCgroup,
            _ => Rule::Unknown,
        }
    }
}

fn cause_of(rule: Rule, cg: &cgroup::Cgroup, top: Option<&Kind>, swap: Option<i64>) -> Cause {
    if rule == Rule::KernelWide {
        return Cause::KernelWide;
    }
    if rule == Rule::Nokmem {
        return Cause::DespiteNokmem;
    }
    // Rule::NokmemBefore46: the kernel ignores the parameter (or the cgroups would read 0),
    // so the cause is what it is without it
    match (&cg.kind, top) {
        (Kind::Kubepods | Kind::Qos { .. }, _) | (_, Some(Kind::Kubepods | Kind::Qos { .. })) => {
            Cause::KubepodsActive
        }
        _ => match swap {
            None => Cause::NotSwapped,
            Some(t) if cg.created_before < t => Cause::BeforeSwap,
            Some(_) if top.is_some() => Cause::InheritedFromPod,
            Some(_) => Cause::AfterSwap,
        },
    }
}

pub(super) fn cause_text(cause: Cause) -> &'static str {
    match cause {
        Cause::KernelWide => "accounted because of the kernel (see kernel-kmem)",
        Cause::KubepodsActive => {
            "kubepods or its QoS cgroup accounts kmem: every pod created under it inherits kmem until the node reboots"
        }
        Cause::InheritedFromPod => "inherits kmem from its pod's cgroup",
        Cause::BeforeSwap => "pods from before the swap: recreate them or reboot",
        Cause::AfterSwap => {
            "created after the swap, so the binary that created it enables kmem (runc for containers, kubelet for pods)"
        }
        Cause::NotSwapped => "kmem switched on by runc or kubelet (k8s-nokmem has not swapped them)",
        Cause::DespiteNokmem => "accounts kmem although the kernel was booted with cgroup.memory=nokmem",
    }
}

pub(super) fn cause_fix(cause: Cause) -> &'static str {
    match cause {
        Cause::KernelWide => BOOT_FIX,
        Cause::KubepodsActive => "reboot the node (drain it first): kubepods cgroups are never recreated while it runs",
        Cause::BeforeSwap | Cause::InheritedFromPod => {
            "recreate the listed pods (kubectl delete pod, or drain the node) or reboot it"
        }
        Cause::AfterSwap => {
            "run `k8s-nokmem status` and `k8s-nokmem install` so that the nokmem runc and kubelet run, then recreate the listed pods"
        }
        Cause::NotSwapped => "install k8s-nokmem, then reboot the node (or drain it and recreate its pods)",
        Cause::DespiteNokmem => {
            "check that this kernel supports cgroup.memory=nokmem (Linux >= 4.6 or a backport); otherwise install k8s-nokmem"
        }
    }
}

/// Every kmem-active cgroup of the walk with its cause, in the walk's order (by path).
pub(super) fn active_with_causes(
    walk: &cgroup::Walk,
    rule: Rule,
    swap: Option<i64>,
) -> Vec<(&cgroup::Cgroup, Cause)> {
    let kinds: HashMap<&str, &Kind> = walk
        .cgroups
        .iter()
        .map(|c| (c.path.as_str(), &c.kind))
        .collect();
    walk.active()
        .map(|cg| {
            let top = cg
                .inherited_from
                .as_deref()
                .and_then(|p| kinds.get(p).copied());
            (cg, cause_of(rule, cg, top, swap))
        })
        .collect()
}

/// Count the kmem-active cgroups by cause, as the rule needs them: pods once each (a
/// container follows its pod), other cgroups one each.
pub(super) fn active_by_cause(
    walk: &cgroup::Walk,
    rule: Rule,
    swap: Option<i64>,
) -> verdict::Active {
    let mut seen = HashSet::new();
    let mut active = verdict::Active::default();
    for (cg, cause) in active_with_causes(walk, rule, swap) {
        let who = cg.kind.pod_uid().unwrap_or(cg.path.as_str());
        if !seen.insert((cause, who)) {
            continue;
        }
        match cause {
            Cause::KernelWide | Cause::DespiteNokmem => active.kernel += 1,
            Cause::KubepodsActive => active.kubepods += 1,
            Cause::BeforeSwap => active.before_swap += 1,
            Cause::AfterSwap => active.after_swap += 1,
            Cause::NotSwapped => active.not_swapped += 1,
            Cause::InheritedFromPod => {}
        }
    }
    active
}
