//! Why a kmem-active cgroup is active (the kernel, kubepods, before or after the swap, no
//! swap at all), what that means and the one thing that fixes it, and the count by cause
//! that the fleet rule ([`super::verdict`]) judges.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::checks::BOOT_FIX;
use super::{cgroup, verdict, Kind, Rule};

/// Why a kmem-active cgroup is active, for the report and the fix. In the order of what to
/// fix first: the smallest cause of all active cgroups gives the one thing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Linux >= 4.6: every cgroup.
    KernelWide,
    /// kubepods or a QoS cgroup is active: every pod under it inherits kmem until reboot.
    KubepodsActive,
    /// Created after the swap: the binary that created it enables kmem (fix that before
    /// recreating pods, or they get kmem again).
    AfterSwap,
    /// Created before the payload was swapped in.
    BeforeSwap,
    /// The package is not installed (or no swap recorded).
    NotSwapped,
    /// Booted with nokmem, yet accounted.
    DespiteNokmem,
    /// Inherited from a pod cgroup that is active (that pod's cause is the one to fix).
    InheritedFromPod,
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
