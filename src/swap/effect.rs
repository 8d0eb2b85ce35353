//! What `install`, `remove` and the verify unit do about the rule's verdict
//! ([`crate::verify::effect`]): manage the kernel command line, and flag Debian's
//! reboot-required when a reboot is what puts the fix in effect. None of it fails the
//! command: the swap is consistent either way, and `verify` reports what is left to do.

use std::os::unix::fs::MetadataExt;

use log::{info, warn};

use crate::cmdline;
use crate::config::{Apply, Config};
use crate::paths::Root;
use crate::reboot;
use crate::targets::State;
use crate::verify::{self, Action, Report};

/// Identifies the state file as last written (the swap's last step rewrites it).
pub fn state_stamp(root: &Root) -> Option<(u64, i64, i64)> {
    let m = std::fs::metadata(State::path(root)).ok()?;
    Some((m.ino(), m.mtime(), m.mtime_nsec()))
}

/// After a successful install: the kernel command line, then the rule, then the flag.
/// `swapped` says whether this run changed a binary.
pub fn after_install(root: &Root, config: &Config, swapped: bool) {
    let v1 = verify::v1_memory(&config.verify.proc_root, &config.verify.cgroup_root);
    if let Err(e) = cmdline::apply(root, cmdline::managed(config.kernel_cmdline, v1)) {
        warn!(
            "kernel cmdline: {}\nnote: run update-grub, then `k8s-nokmem verify`",
            verify::error_chain(&e)
        );
    }
    let report = verify::run(&verify::settings_for(root, config));
    if config.apply == Apply::Reboot && swapped {
        flag(
            root,
            "[services] apply = reboot: the services run the old binaries until the node reboots",
        );
    }
    match report.action {
        Action::Reboot => {
            if config.apply == Apply::Restart {
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
pub fn after_verify(root: &Root, report: &Report) {
    if report.action == Action::Reboot {
        flag(root, &report.reboot_required.reason);
    }
}

/// After remove: our drop-in goes, grub.cfg is regenerated.
pub fn after_remove(root: &Root) {
    if let Err(e) = cmdline::remove(root) {
        warn!(
            "kernel cmdline: {}\nnote: delete {} by hand and run update-grub",
            verify::error_chain(&e),
            root.describe(cmdline::DROPIN)
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
