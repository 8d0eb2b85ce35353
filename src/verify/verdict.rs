//! The one rule used by `install`, `status` and `verify`: is the fix in effect on this
//! node, and if not, what will put it in effect? Judged from the evidence `verify` gathers
//! (the kernel, the cgroups that account kmem and why, the payload in place, the next boot),
//! never from the command line alone. A reboot is asked for only when it will help: a node
//! that still needs one after booting with our binaries in place is an operator's problem.

use serde::Serialize;

use crate::cmdline::{Loader, NextBoot};

/// What puts the fix in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// In effect: nothing to do.
    None,
    /// Only pods from before the swap account kmem, their parents are clean: drain (or delete)
    /// them.
    RecreatePods,
    /// A (drained) reboot.
    Reboot,
    /// Nothing the package or a reboot can do: the reason says what to do.
    Operator,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::RecreatePods => "recreate-pods",
            Action::Reboot => "reboot",
            Action::Operator => "operator",
        }
    }

    /// Every action, for the textfile's one-hot gauge.
    pub const ALL: [Action; 4] = [
        Action::None,
        Action::RecreatePods,
        Action::Reboot,
        Action::Operator,
    ];
}

/// `"reboot_required": {"required": bool, "reason": "..."}` in `verify --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebootRequired {
    pub required: bool,
    pub reason: String,
}

/// The rule's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub action: Action,
    pub reason: String,
}

impl Effect {
    fn new(action: Action, reason: impl Into<String>) -> Effect {
        Effect {
            action,
            reason: reason.into(),
        }
    }

    pub fn reboot_required(&self) -> RebootRequired {
        RebootRequired {
            required: self.action == Action::Reboot,
            reason: self.reason.clone(),
        }
    }
}

/// kmem-active cgroups by what put kmem there (see `Cause` in verify).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Active {
    /// kubepods or a QoS cgroup, or anything below them that inherits from them.
    pub kubepods: usize,
    /// Pods created before the swap (their containers follow them).
    pub before_swap: usize,
    /// Pods created after the swap.
    pub after_swap: usize,
    /// No swap recorded.
    pub not_swapped: usize,
    /// Accounted because of the kernel (Linux >= 4.6), or despite the boot parameter.
    pub kernel: usize,
}

impl Active {
    pub fn total(&self) -> usize {
        self.kubepods + self.before_swap + self.after_swap + self.not_swapped + self.kernel
    }
}

/// Everything the rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// `major.minor` of the running kernel (None: unknown).
    pub release: Option<(u32, u32)>,
    /// A cgroup v1 memory controller is mounted (None: unknown).
    pub v1_memory: Option<bool>,
    /// The running kernel's command line has `cgroup.memory=nokmem`.
    pub cmdline_nokmem: bool,
    /// `[verify] kernel-wide-kmem = ignore`.
    pub kernel_wide_ignored: bool,
    /// The kmem-active cgroups (None: the walk failed).
    pub active: Option<Active>,
    /// The payload kubelet is at the kubelet path (None: not installed or unknown).
    pub payload_kubelet: Option<bool>,
    /// A running kubelet executes something other than the payload.
    pub running_old_kubelet: bool,
    /// This boot began after the swap (None: no swap recorded or no boot time).
    pub rebooted_since_swap: Option<bool>,
    /// When this boot began (seconds since the epoch).
    pub boot_time: Option<i64>,
    /// k8s-nokmem manages the kernel command line here (`[kernel] cmdline`).
    pub cmdline_managed: bool,
    pub loader: Loader,
    pub next_boot: NextBoot,
}

const PARAM: &str = crate::cmdline::PARAM;

/// The rule (pure).
pub fn decide(i: &Inputs) -> Effect {
    use Action::*;
    if i.v1_memory == Some(false) {
        return Effect::new(
            None,
            "no cgroup v1 memory controller: this leak does not apply",
        );
    }
    let (Some(release), Some(active)) = (i.release, i.active) else {
        return Effect::new(
            Operator,
            "could not tell whether the fix is in effect (the kernel release or the cgroups could not be read): see the checks",
        );
    };
    if release >= super::kernel::KERNEL_WIDE_KMEM_SINCE {
        return kernel_wide(i, release, active);
    }
    per_cgroup(i, active)
}

/// Why the binaries the node's services run make no difference to kmem here (None: they
/// do, or the evidence cannot tell). Without a cgroup v1 memory controller there is no kmem
/// accounting to switch on; on Linux >= 4.6 it is on or off kernel-wide by the boot
/// parameter alone. Only on older kernels does a running runc or kubelet switch it on.
pub fn binaries_irrelevant(i: &Inputs) -> Option<String> {
    if i.v1_memory == Some(false) {
        return Some(
            "no cgroup v1 memory controller: there is no kmem accounting for runc or kubelet to switch on".into(),
        );
    }
    let (major, minor) = i
        .release
        .filter(|r| *r >= super::kernel::KERNEL_WIDE_KMEM_SINCE)?;
    Some(if i.cmdline_nokmem {
        format!("Linux {major}.{minor} booted with {PARAM}: kmem accounting is off kernel-wide, whatever runc and kubelet write")
    } else {
        format!("Linux {major}.{minor} accounts kmem in every cgroup v1 memory cgroup until booted with {PARAM}, whatever runc and kubelet write")
    })
}

/// Linux >= 4.6: only the boot parameter switches kmem off.
fn kernel_wide(i: &Inputs, (major, minor): (u32, u32), active: Active) -> Effect {
    use Action::*;
    if i.cmdline_nokmem {
        return if active.total() == 0 {
            Effect::new(
                None,
                format!("booted with {PARAM}: kmem accounting is off kernel-wide"),
            )
        } else {
            Effect::new(
                Operator,
                format!(
                    "booted with {PARAM}, yet {} memory cgroups account kmem: this kernel does not honour it; check its version and the cgroup-kmem check",
                    active.total()
                ),
            )
        };
    }
    if i.kernel_wide_ignored {
        return Effect::new(
            None,
            format!("Linux {major}.{minor} accounts kmem in every memory cgroup without {PARAM}; ignored ([verify] kernel-wide-kmem = ignore)"),
        );
    }
    let lacking = format!(
        "Linux {major}.{minor} accounts kmem in every cgroup v1 memory cgroup until booted with {PARAM}"
    );
    if !i.cmdline_managed {
        return Effect::new(
            Operator,
            format!("{lacking}, and [kernel] cmdline leaves the command line to you: add {PARAM} to it and reboot the node (drain it first)"),
        );
    }
    if let Loader::Other { file, line } = &i.loader {
        return Effect::new(
            Operator,
            format!("{lacking}; this node does not boot with grub: in {file}, {line}; then reboot it (drain it first)"),
        );
    }
    if !i.next_boot.dropin {
        return Effect::new(
            Operator,
            format!(
                "{lacking}; the grub drop-in {} is missing: run `k8s-nokmem install`",
                crate::cmdline::DROPIN
            ),
        );
    }
    if !i.next_boot.grub_cfg_has_param {
        return Effect::new(
            Operator,
            format!(
                "{lacking}; {} does not carry it yet: run update-grub",
                crate::cmdline::GRUB_CFG
            ),
        );
    }
    match (i.next_boot.grub_cfg_written, i.boot_time) {
        (Some(written), Some(boot)) if written < boot => Effect::new(
            Operator,
            format!("{lacking}; this boot began after {} carried it, yet the kernel did not get it: the node does not boot from that file (check the boot loader); no reboot requested, it would not help", crate::cmdline::GRUB_CFG),
        ),
        _ => Effect::new(
            Reboot,
            format!("{lacking}; the next boot carries it ({}): reboot the node (drain it first)", crate::cmdline::GRUB_CFG),
        ),
    }
}

/// Linux < 4.6 (or a vendor kernel that honours the parameter): per cgroup, inherited.
fn per_cgroup(i: &Inputs, active: Active) -> Effect {
    use Action::*;
    let rebooted = i.rebooted_since_swap == Some(true);
    if active.kubepods > 0 {
        if i.payload_kubelet != Some(true) {
            return Effect::new(
                Operator,
                "kubepods or its QoS cgroups account kmem and the payload kubelet is not in place: run `k8s-nokmem install` first (a reboot now would create them with kmem again)",
            );
        }
        if rebooted {
            return Effect::new(
                Operator,
                "kubepods or its QoS cgroups account kmem although this boot began with the payload kubelet in place: something else switches kmem on (another kubelet binary, a unit that runs it from elsewhere: see running-kubelet); no reboot requested, it would not help",
            );
        }
        return Effect::new(
            Reboot,
            "kubepods and its QoS cgroups account kmem since before the swap, and kubelet never recreates them while the node runs: reboot the node (drain it first)",
        );
    }
    if active.after_swap > 0 {
        if i.running_old_kubelet && !rebooted {
            return Effect::new(
                Reboot,
                "pods created since the swap account kmem because the running kubelet is not the payload yet: reboot the node (drain it first)",
            );
        }
        return Effect::new(
            Operator,
            "pods created after the swap account kmem: the binaries that created them switch kmem on; run `k8s-nokmem status` and `k8s-nokmem verify` (payload, running-kubelet)",
        );
    }
    if active.not_swapped > 0 {
        return Effect::new(
            Operator,
            "pod cgroups account kmem and k8s-nokmem has not swapped runc and kubelet: install k8s-nokmem",
        );
    }
    if active.before_swap > 0 {
        return Effect::new(
            RecreatePods,
            format!(
                "only {} pod{} from before the swap account{} kmem, and kubepods is clean: drain the node or delete those pods; no reboot needed",
                active.before_swap,
                if active.before_swap == 1 { "" } else { "s" },
                if active.before_swap == 1 { "s" } else { "" }
            ),
        );
    }
    if i.running_old_kubelet && i.payload_kubelet == Some(true) {
        return if rebooted {
            Effect::new(
                Operator,
                "the running kubelet is not the payload although this boot began after the swap: check how kubelet is started (see running-kubelet)",
            )
        } else {
            Effect::new(
                Reboot,
                "the payload is in place but the running kubelet is the old binary, which creates new pods with kmem: reboot the node (drain it first)",
            )
        };
    }
    if i.cmdline_nokmem {
        return Effect::new(
            None,
            format!(
                "no pod cgroup accounts kmem ({PARAM} is in effect: a kernel with it backported)"
            ),
        );
    }
    Effect::new(None, "no pod cgroup accounts kmem")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Inputs {
        Inputs {
            release: Some((4, 4)),
            v1_memory: Some(true),
            cmdline_nokmem: false,
            kernel_wide_ignored: false,
            active: Some(Active::default()),
            payload_kubelet: Some(true),
            running_old_kubelet: false,
            rebooted_since_swap: Some(false),
            boot_time: Some(1000),
            cmdline_managed: true,
            loader: Loader::Grub,
            next_boot: NextBoot {
                dropin: true,
                grub_cfg_has_param: true,
                grub_cfg_written: Some(2000),
            },
        }
    }

    #[test]
    fn the_rule() {
        let kubepods = Some(Active {
            kubepods: 3,
            ..Active::default()
        });
        let pre = Some(Active {
            before_swap: 2,
            ..Active::default()
        });
        let v54 = |f: fn(&mut Inputs)| {
            let mut i = base();
            i.release = Some((5, 4));
            i.active = Some(Active {
                not_swapped: 9,
                ..Active::default()
            });
            f(&mut i);
            i
        };
        let with = |f: fn(&mut Inputs)| {
            let mut i = base();
            f(&mut i);
            i
        };
        let cases: Vec<(&str, Inputs, Action)> = vec![
            ("4.4 clean", base(), Action::None),
            (
                "4.4 kubepods active after the swap",
                Inputs {
                    active: kubepods,
                    ..base()
                },
                Action::Reboot,
            ),
            (
                "4.4 kubepods active after a reboot with our kubelet",
                Inputs {
                    active: kubepods,
                    rebooted_since_swap: Some(true),
                    ..base()
                },
                Action::Operator,
            ),
            (
                "4.4 kubepods active, payload not in place",
                Inputs {
                    active: kubepods,
                    payload_kubelet: None,
                    ..base()
                },
                Action::Operator,
            ),
            (
                "4.4 only pre-swap pods",
                Inputs {
                    active: pre,
                    ..base()
                },
                Action::RecreatePods,
            ),
            (
                "4.4 old kubelet running (apply = reboot)",
                with(|i| i.running_old_kubelet = true),
                Action::Reboot,
            ),
            (
                "4.4 old kubelet running after a reboot",
                with(|i| {
                    i.running_old_kubelet = true;
                    i.rebooted_since_swap = Some(true)
                }),
                Action::Operator,
            ),
            (
                "3.10 backport, clean",
                with(|i| {
                    i.release = Some((3, 10));
                    i.cmdline_nokmem = true
                }),
                Action::None,
            ),
            (
                "4.4 with the parameter (ignored), kubepods active",
                Inputs {
                    active: kubepods,
                    cmdline_nokmem: true,
                    ..base()
                },
                Action::Reboot,
            ),
            (
                "5.4 manage, grub.cfg carries it",
                v54(|_| {}),
                Action::Reboot,
            ),
            (
                "5.4 leave",
                v54(|i| i.cmdline_managed = false),
                Action::Operator,
            ),
            (
                "5.4 no grub",
                v54(|i| {
                    i.loader = Loader::Other {
                        file: "f".into(),
                        line: "l".into(),
                    }
                }),
                Action::Operator,
            ),
            (
                "5.4 drop-in, update-grub not run",
                v54(|i| i.next_boot.grub_cfg_has_param = false),
                Action::Operator,
            ),
            (
                "5.4 booted after grub.cfg carried it",
                v54(|i| i.boot_time = Some(3000)),
                Action::Operator,
            ),
            (
                "5.4 booted with it",
                v54(|i| {
                    i.cmdline_nokmem = true;
                    i.active = Some(Active::default())
                }),
                Action::None,
            ),
            (
                "5.4 ignored by config",
                v54(|i| i.kernel_wide_ignored = true),
                Action::None,
            ),
            (
                "cgroup v2",
                with(|i| {
                    i.v1_memory = Some(false);
                    i.release = Some((5, 15))
                }),
                Action::None,
            ),
            (
                "unknown release",
                with(|i| i.release = None),
                Action::Operator,
            ),
        ];
        for (name, inputs, want) in cases {
            let got = decide(&inputs);
            assert_eq!(got.action, want, "case {name}: {}", got.reason);
            assert_eq!(
                got.reboot_required().required,
                want == Action::Reboot,
                "case {name}"
            );
            assert!(!got.reason.is_empty(), "case {name}");
        }
    }

    #[test]
    fn where_the_running_binaries_make_no_difference_to_kmem() {
        let with = |f: fn(&mut Inputs)| {
            let mut i = base();
            f(&mut i);
            i
        };
        let cases: Vec<(&str, Inputs, Option<&str>)> = vec![
            ("4.4", base(), None),
            (
                "3.10 with the parameter backported: judged per cgroup, as 4.4",
                with(|i| {
                    i.release = Some((3, 10));
                    i.cmdline_nokmem = true
                }),
                None,
            ),
            ("release unknown", with(|i| i.release = None), None),
            (
                "cgroup v2 only",
                with(|i| {
                    i.v1_memory = Some(false);
                    i.release = Some((5, 15))
                }),
                Some("no cgroup v1 memory controller"),
            ),
            (
                "5.4 booted with the parameter",
                with(|i| {
                    i.release = Some((5, 4));
                    i.cmdline_nokmem = true
                }),
                Some("Linux 5.4 booted with cgroup.memory=nokmem: kmem accounting is off kernel-wide"),
            ),
            (
                "5.4 without it",
                with(|i| i.release = Some((5, 4))),
                Some("Linux 5.4 accounts kmem in every cgroup v1 memory cgroup until booted with cgroup.memory=nokmem"),
            ),
            (
                "4.6, the first kernel-wide one",
                with(|i| i.release = Some((4, 6))),
                Some("Linux 4.6 accounts kmem"),
            ),
        ];
        for (name, inputs, want) in cases {
            let got = binaries_irrelevant(&inputs);
            match want {
                None => assert_eq!(got, None, "case {name}"),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(w)),
                    "case {name}: {got:?}"
                ),
            }
        }
    }
}
