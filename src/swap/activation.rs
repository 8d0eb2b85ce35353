//! What `install`, `remove` and the verify unit do about the rule's verdict
//! ([`crate::verify::verdict`]): manage the kernel command line, and flag Debian's
//! reboot-required when a reboot is what puts the fix in effect. None of it fails the
//! command: the swap is consistent either way, and `verify` reports what is left to do.
//!
//! The rule reads the running kernel and its cgroups, which are the node's only when the
//! helper runs on the node. An image build (`--root IMG`, or a chroot where systemd is not
//! running) runs on a build host: there nothing is judged from this machine's kernel; the
//! command line is managed from the image's own files, what its kernels need is said from
//! its `/lib/modules` and `/boot`, and the verdict is left to the verify unit at its first
//! boot.

use std::os::unix::fs::MetadataExt;

use log::{info, warn};

use crate::cmdline::{self, Loader};
use crate::config::{Apply, Config};
use crate::paths::Root;
use crate::policy::{ServicePolicy, SkipReason};
use crate::reboot;
use crate::state::State;
use crate::verify::verdict::{self, Inputs};
use crate::verify::{self, Action, VerifyReport};
use crate::verify::{parse_release, KERNEL_WIDE_KMEM_SINCE};

/// Whose kernel the install's effect is judged on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// This machine is the node: its kernel and cgroups (`[verify] proc-root`,
    /// `cgroup-root`) are the node's.
    Here,
    /// An image or a chroot on a build host (the reason says which): this machine's kernel
    /// and cgroups are not the node's and are never read.
    Image(SkipReason),
}

impl Judged {
    /// From the session's service policy: a root other than `/`, or no running systemd
    /// (a chroot, a container image build), is not the machine the node boots on.
    pub fn of(policy: &ServicePolicy) -> Judged {
        match policy {
            ServicePolicy::Skip(
                why @ (SkipReason::ForeignRoot(_) | SkipReason::SystemdNotRunning),
            ) => Judged::Image(why.clone()),
            ServicePolicy::Skip(SkipReason::Boot) | ServicePolicy::Act => Judged::Here,
        }
    }
}

/// How this run's swap reaches the running services: `[services] apply`, decided before
/// anything is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Stop the services of the changed binaries, swap, start them again; else swap with
    /// no service stopped.
    pub restart: bool,
    /// No restart, and the reboot that starts the services on the swapped binaries is
    /// flagged ([`Applied::flag`]). Neither `restart` nor `reboot`: the binaries the services
    /// run make no difference to kmem on this node, so neither a restart nor a reboot is
    /// asked for them (a reboot the rule itself calls for is still flagged).
    reboot: bool,
    /// Why, for the log and the reboot-required line.
    pub why: String,
}

impl Applied {
    /// `[services] apply = restart`.
    pub fn restart() -> Applied {
        Applied::restarting("[services] apply = restart".to_string())
    }

    /// Stop the services of the changed binaries, swap, start them again, because `why`.
    fn restarting(why: String) -> Applied {
        Applied {
            restart: true,
            reboot: false,
            why,
        }
    }

    /// `[services] apply = reboot`.
    pub fn reboot() -> Applied {
        Applied {
            restart: false,
            reboot: true,
            why: "[services] apply = reboot: the services run the binaries they started with until the node reboots".to_string(),
        }
    }

    /// `[services] apply` for this run: `restart` and `reboot` as set; `auto` decided from
    /// the node's evidence ([`auto`]) when this machine is the node, before anything stops.
    /// In an image build services are never touched: `auto` is `restart`, which the
    /// session's policy skips.
    pub fn decide(root: &Root, config: &Config, judged: &Judged) -> Applied {
        match (config.apply, judged) {
            (Apply::Restart, _) => Applied::restart(),
            (Apply::Reboot, _) => Applied::reboot(),
            (Apply::Auto, Judged::Image(why)) => Applied::restarting(format!(
                "[services] apply = auto: {why}: an image build, no service runs"
            )),
            (Apply::Auto, Judged::Here) => {
                let report = verify::run(&verify::settings_for(root, config));
                let applied = auto(report.inputs.as_ref());
                info!("{}", applied.why);
                applied
            }
        }
    }

    /// After a swap with no service stopped: flag reboot-required (the services run the
    /// binaries they started with until the node reboots, and that matters here).
    pub fn flag(&self) -> bool {
        self.reboot && !self.restart
    }

    /// The fixed modes; `auto` without evidence restarts, as `restart` would (tests).
    #[cfg(test)]
    pub fn of(apply: Apply) -> Applied {
        match apply {
            Apply::Restart => Applied::restart(),
            Apply::Reboot => Applied::reboot(),
            Apply::Auto => auto(None),
        }
    }
}

/// `[services] apply = auto` from verify's evidence (pure), one of three outcomes. A restart
/// of docker kills every container on the node; it makes the fix effective now only on
/// Linux < 4.6 with a clean kubepods hierarchy: kmem is then on only where a binary switches
/// it on, and the pods the payload kubelet creates after the restart are free of it
/// (restart). On < 4.6 with a kmem-active kubepods every pod inherits kmem until the node
/// reboots: swap with no service stopped and flag the reboot, which also starts the services
/// on the new binaries. Where the binaries make no difference to kmem
/// ([`verdict::binaries_irrelevant`]: no cgroup v1 memory controller, Linux >= 4.6) neither
/// a restart nor a reboot does anything for the services: swap only; the services take the
/// new binaries at their next start, and on >= 4.6 without `cgroup.memory=nokmem` the reboot
/// that boots with it is flagged by the rule once the next boot carries it. Evidence that
/// cannot be read: restart, as `restart` would.
pub fn auto(inputs: Option<&Inputs>) -> Applied {
    let restart =
        |why: String| Applied::restarting(format!("[services] apply = auto: restarting: {why}"));
    let Some(i) = inputs else {
        return restart(
            "the node's evidence could not be read, so as [services] apply = restart would".into(),
        );
    };
    if let Some(kmem) = verdict::binaries_irrelevant(i) {
        let reboot = if i.v1_memory == Some(false) || i.cmdline_nokmem {
            "nothing a reboot would add for them".to_string()
        } else {
            format!(
                "a reboot helps only by booting with {}: reboot-required is flagged when the next boot carries it",
                cmdline::PARAM
            )
        };
        return Applied {
            restart: false,
            reboot: false,
            why: format!(
                "[services] apply = auto: no service stopped, no reboot for the services: {kmem}; a restart would only kill the containers, {reboot}; the services take the new binaries when they next start"
            ),
        };
    }
    let (Some((major, minor)), Some(active)) = (i.release, i.active) else {
        return restart(
            "the kernel release or the kmem-active cgroups could not be read, so as [services] apply = restart would".into(),
        );
    };
    if active.kubepods > 0 {
        return Applied {
            restart: false,
            reboot: true,
            why: format!(
                "[services] apply = auto: no service stopped, reboot flagged: on Linux {major}.{minor} kubepods or its QoS cgroups account kmem ({} cgroups), and every pod created under them inherits it until the node reboots: a restart would only kill the containers",
                active.kubepods
            ),
        };
    }
    restart(format!(
        "on Linux {major}.{minor} with a clean kubepods hierarchy the pods the payload kubelet creates after the restart are free of kmem: the restart puts the fix in effect now"
    ))
}

/// Identifies the state file as last written (the swap's last step rewrites it).
pub fn state_stamp(root: &Root) -> Option<(u64, i64, i64)> {
    let m = std::fs::metadata(State::path(root)).ok()?;
    Some((m.ino(), m.mtime(), m.mtime_nsec()))
}

/// After a successful install: the kernel command line, then the rule, then the flag
/// ([`Judged::Here`]); or, for an image, the command line from its own files and what its
/// kernels need, the verdict deferred to its first boot. `swapped` says whether this run
/// changed a binary.
pub fn after_install(
    root: &Root,
    config: &Config,
    applied: &Applied,
    swapped: bool,
    judged: &Judged,
) {
    let why = match judged {
        Judged::Here => return after_install_here(root, config, applied, swapped),
        Judged::Image(why) => why,
    };
    // the image's cgroup layout is known only when it boots: unknown, and the parameter is
    // harmless where it does not apply
    let manage = cmdline::managed(config.kernel_cmdline, None);
    apply_cmdline(root, manage);
    info!(
        "install: {}",
        image_effect(&image_kernels(root), manage, &cmdline::loader(root), why)
    );
}

fn apply_cmdline(root: &Root, manage: bool) {
    if let Err(e) = cmdline::apply(root, manage) {
        warn!(
            "kernel cmdline: {}\nnote: run update-grub, then `k8s-nokmem verify`",
            verify::error_chain(&e)
        );
    }
}

/// The kernel releases an image holds: the directories of `/lib/modules` and the
/// `/boot/vmlinuz-RELEASE` files, sorted, each once.
pub fn image_kernels(root: &Root) -> Vec<String> {
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(root.join(dir))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out: Vec<String> = names("/lib/modules")
        .into_iter()
        .chain(
            names("/boot")
                .iter()
                .filter_map(|f| f.strip_prefix("vmlinuz-").map(str::to_string)),
        )
        .filter(|r| parse_release(r).is_some())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What install says about an image (pure): from its kernels, whether k8s-nokmem manages
/// the command line and its boot loader; the verdict itself is the first boot's.
pub fn image_effect(
    kernels: &[String],
    managed: bool,
    loader: &Loader,
    why: &SkipReason,
) -> String {
    let param = cmdline::PARAM;
    let wide: Vec<&str> = kernels
        .iter()
        .filter(|k| parse_release(k).is_some_and(|r| r >= KERNEL_WIDE_KMEM_SINCE))
        .map(String::as_str)
        .collect();
    let kernel = if kernels.is_empty() {
        "no kernel in this image (/lib/modules, /boot/vmlinuz-*) says what its boot needs"
            .to_string()
    } else if wide.is_empty() {
        format!(
            "its kernel {} accounts kmem only where runc and kubelet switch it on, and the payload runs from the first boot",
            kernels.join(", ")
        )
    } else {
        let need = format!(
            "its kernel {} accounts kmem in every memory cgroup unless booted with {param}",
            wide.join(", ")
        );
        match (managed, loader) {
            (false, _) => format!("{need}; [kernel] cmdline leaves the command line to you: add {param} to it"),
            (true, Loader::Grub) => format!(
                "{need}: {} adds it; generate the image's {} after this (update-grub inside the image)",
                cmdline::DROPIN,
                cmdline::GRUB_CFG
            ),
            (true, Loader::Other { file, line }) => format!("{need}; it does not boot with grub: in {file}, {line}"),
        }
    };
    format!(
        "{why}, so this is an image build: nothing is judged from this machine's kernel or cgroups; {kernel}; whether the fix is in effect is judged at the image's first boot by k8s-nokmem-verify.service, which flags a reboot only if one will help"
    )
}

/// [`after_install`] on the node itself.
fn after_install_here(root: &Root, config: &Config, applied: &Applied, swapped: bool) {
    let v1 = verify::v1_memory(&config.verify.proc_root, &config.verify.cgroup_root);
    apply_cmdline(root, cmdline::managed(config.kernel_cmdline, v1));
    let report = verify::run(&verify::settings_for(root, config));
    if applied.flag() && swapped {
        flag(root, &applied.why);
    }
    match report.action {
        Action::Reboot => {
            if !applied.flag() {
                info!(
                    "install: a reboot is still needed: {}",
                    report.reboot_required.reason
                );
            }
            flag(root, "the fix takes effect at the next boot");
        }
        Action::None => info!(
            "install: the fix is in effect: {}",
            report.reboot_required.reason
        ),
        Action::RecreatePods | Action::Operator => info!(
            "install: the fix is not in effect yet ({}): {}",
            report.action.name(),
            report.reboot_required.reason
        ),
    }
}

/// `verify --state` (the verify unit): flag when the rule says reboot.
pub fn after_verify(root: &Root, report: &VerifyReport) {
    if report.action == Action::Reboot {
        flag(root, &report.reboot_required.reason);
    }
}

/// After remove: our drop-in goes, grub.cfg is regenerated; on the node, when services
/// still run k8s-nokmem's binaries (`running`, left running by `applied`), the reboot that
/// starts them on the originals is flagged, as install flags the one that starts the
/// payload.
pub fn after_remove(root: &Root, applied: &Applied, running: &[String], judged: &Judged) {
    if let Err(e) = cmdline::remove(root) {
        warn!(
            "kernel cmdline: {}\nnote: delete {} by hand and run update-grub",
            verify::error_chain(&e),
            root.describe(cmdline::DROPIN)
        );
    }
    if applied.flag() && !running.is_empty() && *judged == Judged::Here {
        flag(
            root,
            &format!(
                "{}; {} still run k8s-nokmem's binaries",
                applied.why,
                running.join(", ")
            ),
        );
    }
}

fn flag(root: &Root, why: &str) {
    if let Err(e) = reboot::flag(root, why) {
        warn!(
            "{}\nnote: reboot the node (drain it first) when convenient",
            verify::error_chain(&e)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_described_from_its_own_kernels_and_loader() {
        let why = SkipReason::SystemdNotRunning;
        let other = Loader::Other {
            file: "/boot/firmware/cmdline.txt".into(),
            line: "append ' cgroup.memory=nokmem' to its single line".into(),
        };
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: [(Vec<String>, bool, &Loader, &str); 5] = [
            (k(&[]), true, &Loader::Grub, "no kernel in this image"),
            (
                k(&["4.4.0-210-generic"]),
                true,
                &Loader::Grub,
                "its kernel 4.4.0-210-generic accounts kmem only where runc and kubelet switch it on",
            ),
            (
                k(&["4.4.0-210-generic", "5.4.0-150-generic"]),
                true,
                &Loader::Grub,
                "its kernel 5.4.0-150-generic accounts kmem in every memory cgroup unless booted with cgroup.memory=nokmem: /etc/default/grub.d/99-k8s-nokmem.cfg adds it; generate the image's /boot/grub/grub.cfg after this",
            ),
            (
                k(&["5.4.0-150-generic"]),
                false,
                &Loader::Grub,
                "[kernel] cmdline leaves the command line to you: add cgroup.memory=nokmem to it",
            ),
            (
                k(&["5.15.0-1034-raspi"]),
                true,
                &other,
                "it does not boot with grub: in /boot/firmware/cmdline.txt, append ' cgroup.memory=nokmem' to its single line",
            ),
        ];
        for (kernels, managed, loader, want) in cases {
            let got = image_effect(&kernels, managed, loader, &why);
            assert!(got.contains(want), "case {kernels:?} {managed}: {got}");
            assert!(
                got.starts_with("systemd is not running: no /run/systemd/system, so this is an image build")
                    && got.ends_with("judged at the image's first boot by k8s-nokmem-verify.service, which flags a reboot only if one will help"),
                "{got}"
            );
        }
    }

    #[test]
    fn image_kernels_come_from_its_modules_and_boot_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert!(image_kernels(&root).is_empty());
        std::fs::create_dir_all(root.join("/lib/modules/5.4.0-150-generic")).unwrap();
        std::fs::create_dir_all(root.join("/boot")).unwrap();
        for f in [
            "vmlinuz-5.4.0-150-generic",
            "vmlinuz-4.4.0-210-generic",
            "vmlinuz",
            "config-5.4.0-150-generic",
        ] {
            std::fs::write(root.join("/boot").join(f), b"").unwrap();
        }
        assert_eq!(
            image_kernels(&root),
            vec!["4.4.0-210-generic", "5.4.0-150-generic"]
        );
    }

    #[test]
    fn only_the_node_itself_is_judged_here() {
        assert_eq!(Judged::of(&ServicePolicy::Act), Judged::Here);
        for why in [
            SkipReason::ForeignRoot("/img".into()),
            SkipReason::SystemdNotRunning,
        ] {
            assert_eq!(
                Judged::of(&ServicePolicy::Skip(why.clone())),
                Judged::Image(why)
            );
        }
    }
}
