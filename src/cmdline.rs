//! The kernel command line: `cgroup.memory=nokmem` for the next boot. With grub, a drop-in
//! in `/etc/default/grub.d/` that appends the parameter to `GRUB_CMDLINE_LINUX_DEFAULT`
//! (sorted after cloud images' `50-cloudimg-settings.cfg`, which assigns that variable), then
//! `update-grub` where it and `/boot/grub/grub.cfg` exist (kdump-tools' guard). Without grub
//! nothing is edited: files such as Raspberry Pi's `cmdline.txt` belong to other packages,
//! so the exact line to add is reported instead.

use std::path::Path;
use std::time::{Instant, UNIX_EPOCH};

use log::{debug, info, warn};

use crate::command::{self, Cmd, CommandError};
use crate::config::CmdlineMode;
use crate::fs::{self, FileError};
use crate::paths::Root;

/// The parameter (Linux >= 4.6; some 3.10 vendor kernels backport it; 4.4 ignores it).
pub const PARAM: &str = "cgroup.memory=nokmem";
/// Our grub drop-in.
pub const DROPIN: &str = "/etc/default/grub.d/99-k8s-nokmem.cfg";
/// grub's settings, which make a node a grub node.
pub const GRUB_DEFAULT: &str = "/etc/default/grub";
/// What the next boot reads.
pub const GRUB_CFG: &str = "/boot/grub/grub.cfg";
/// Debian's wrapper around `grub-mkconfig -o /boot/grub/grub.cfg`.
pub const UPDATE_GRUB: &str = "/usr/sbin/update-grub";

/// The drop-in, sourced by grub-mkconfig's `sh` after `/etc/default/grub` and the lower
/// sorted drop-ins: appends the parameter unless the command line already has it.
pub const DROPIN_TEXT: &str = "\
# Written by k8s-nokmem; `apt remove k8s-nokmem` deletes it. [kernel] cmdline in
# /etc/k8s-nokmem/k8s-nokmem.conf says whether k8s-nokmem manages this file.
# Switches off kernel-memory accounting of cgroup v1 memory cgroups (Linux >= 4.6 accounts
# it in every memory cgroup without this; older kernels ignore the parameter).
case \" ${GRUB_CMDLINE_LINUX_DEFAULT} ${GRUB_CMDLINE_LINUX} \" in
*\" cgroup.memory=nokmem \"*) ;;
*) GRUB_CMDLINE_LINUX_DEFAULT=\"${GRUB_CMDLINE_LINUX_DEFAULT:+${GRUB_CMDLINE_LINUX_DEFAULT} }cgroup.memory=nokmem\" ;;
esac
";

#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    #[error("failed to write the grub drop-in")]
    Write(#[source] FileError),
    #[error("failed to remove the grub drop-in")]
    Remove(#[source] FileError),
    #[error("failed to regenerate the grub configuration")]
    UpdateGrub(#[source] CommandError),
}

/// How the node boots, as far as its kernel command line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loader {
    /// grub: `/etc/default/grub` or `update-grub` exists.
    Grub,
    /// Something else: the parameter goes on `line` in `file` (which we do not edit).
    Other { file: String, line: String },
}

/// The boot loader of the node under `root`.
pub fn loader(root: &Root) -> Loader {
    if root.join(GRUB_DEFAULT).exists() || root.join(UPDATE_GRUB).exists() {
        return Loader::Grub;
    }
    for file in ["/boot/firmware/cmdline.txt", "/boot/cmdline.txt"] {
        if root.join(file).exists() {
            return Loader::Other {
                file: file.into(),
                line: format!("append ' {PARAM}' to its single line"),
            };
        }
    }
    if root.join("/etc/default/flash-kernel").exists() {
        return Loader::Other {
            file: "/etc/default/flash-kernel".into(),
            line: format!(
                "LINUX_KERNEL_CMDLINE_DEFAULTS=\"... {PARAM}\" (keep what is there), then run flash-kernel"
            ),
        };
    }
    Loader::Other {
        file: "the boot loader's configuration".into(),
        line: format!("add {PARAM} to the kernel command line"),
    }
}

/// What the next boot will carry, from the files on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NextBoot {
    pub dropin: bool,
    /// `/boot/grub/grub.cfg` exists and its `linux` lines carry the parameter.
    pub grub_cfg_has_param: bool,
    /// When grub.cfg was last written (seconds since the epoch).
    pub grub_cfg_written: Option<i64>,
}

/// True when every normal (non-recovery) `linux` line of a grub.cfg carries the parameter.
pub fn grub_cfg_has_param(text: &str) -> bool {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("linux") && !l.contains(" single") && !l.contains("recovery"))
        .collect();
    !lines.is_empty()
        && lines
            .iter()
            .all(|l| l.split_whitespace().any(|a| a == PARAM))
}

/// Read the next boot's state under `root`.
pub fn next_boot(root: &Root) -> NextBoot {
    let cfg = root.join(GRUB_CFG);
    let text = std::fs::read_to_string(&cfg).unwrap_or_default();
    NextBoot {
        dropin: root.join(DROPIN).exists(),
        grub_cfg_has_param: grub_cfg_has_param(&text),
        grub_cfg_written: std::fs::metadata(&cfg)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64),
    }
}

/// Does `mode` manage the command line on a node with (or without) a v1 memory controller?
pub fn managed(mode: CmdlineMode, v1_memory: Option<bool>) -> bool {
    match mode {
        CmdlineMode::Manage => true,
        CmdlineMode::Leave => false,
        // unknown: the parameter is harmless; manage
        CmdlineMode::Auto => v1_memory != Some(false),
    }
}

/// Put the drop-in in place (when managed and the node boots with grub) and regenerate
/// grub.cfg when the drop-in changed or grub.cfg lacks the parameter. With `manage` false,
/// a drop-in of ours is taken away. Logs one line.
pub fn apply(root: &Root, manage: bool) -> Result<(), CmdlineError> {
    let start = Instant::now();
    if !manage {
        return remove(root);
    }
    let path = root.join(DROPIN);
    let shown = root.describe(DROPIN);
    match loader(root) {
        Loader::Other { file, line } => {
            info!(
                "kernel cmdline: no grub here; {PARAM} is not set by k8s-nokmem: in {file}, {line} ({} ms)",
                start.elapsed().as_millis()
            );
            return Ok(());
        }
        Loader::Grub => {}
    }
    let current = std::fs::read_to_string(&path).ok();
    let changed = current.as_deref() != Some(DROPIN_TEXT);
    if changed {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir, 0o755).map_err(CmdlineError::Write)?;
        }
        fs::atomic_write_bytes(&path, 0o644, DROPIN_TEXT.as_bytes())
            .map_err(CmdlineError::Write)?;
    }
    let next = next_boot(root);
    let ran = if changed || !next.grub_cfg_has_param {
        update_grub(root)?
    } else {
        None
    };
    info!(
        "kernel cmdline: {shown} {}; {} ({} ms)",
        if changed { "written" } else { "unchanged" },
        ran.unwrap_or_else(|| "grub.cfg already carries it".into()),
        start.elapsed().as_millis()
    );
    Ok(())
}

/// Delete the drop-in (and `grub.d` when we left it empty) and regenerate grub.cfg.
pub fn remove(root: &Root) -> Result<(), CmdlineError> {
    let start = Instant::now();
    let path = root.join(DROPIN);
    if !fs::remove_file_if_exists(&path).map_err(CmdlineError::Remove)? {
        debug!("kernel cmdline: no {} to remove", root.describe(DROPIN));
        return Ok(());
    }
    // the removal fsynced the drop-in's directory
    if let Some(dir) = path.parent() {
        if std::fs::remove_dir(dir).is_ok() {
            if let Some(up) = dir.parent() {
                fs::sync_dir(up).map_err(CmdlineError::Remove)?;
            }
        }
    }
    let ran = update_grub(root)?;
    info!(
        "kernel cmdline: {} removed; {} ({} ms)",
        root.describe(DROPIN),
        ran.unwrap_or_default(),
        start.elapsed().as_millis()
    );
    Ok(())
}

/// Run `update-grub` only on the live system where it and `/boot/grub/grub.cfg` exist.
/// Returns what was done, for the log line.
fn update_grub(root: &Root) -> Result<Option<String>, CmdlineError> {
    if !root.is_host() {
        return Ok(Some(format!(
            "update-grub not run under root '{root}': run it inside the root"
        )));
    }
    if !Path::new(UPDATE_GRUB).exists() || !Path::new(GRUB_CFG).exists() {
        return Ok(Some(format!(
            "update-grub not run ({UPDATE_GRUB} or {GRUB_CFG} missing)"
        )));
    }
    let (out, shown) = Cmd::new(UPDATE_GRUB)
        .output()
        .map_err(CmdlineError::UpdateGrub)?;
    if !out.status.success() {
        let err = command::failed(shown, &out, "");
        warn!("{err}");
        return Err(CmdlineError::UpdateGrub(err));
    }
    Ok(Some(format!("`{shown}`: ok")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_lines() {
        let cases = [
            ("", false),
            ("\tlinux /boot/vmlinuz-5.4 root=UUID=x ro quiet cgroup.memory=nokmem\n", true),
            ("\tlinux /boot/vmlinuz-5.4 root=UUID=x ro quiet\n", false),
            (
                "\tlinux /vmlinuz root=x ro cgroup.memory=nokmem\n\tlinux /vmlinuz root=x ro recovery nomodeset\n",
                true,
            ),
            (
                "\tlinux /vmlinuz root=x ro cgroup.memory=nokmem\n\tlinux /vmlinuz-old root=x ro\n",
                false,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(grub_cfg_has_param(text), want, "case {text:?}");
        }
    }

    #[test]
    fn auto_leaves_v2_only_nodes_alone() {
        assert!(managed(CmdlineMode::Auto, Some(true)));
        assert!(managed(CmdlineMode::Auto, None));
        assert!(!managed(CmdlineMode::Auto, Some(false)));
        assert!(managed(CmdlineMode::Manage, Some(false)));
        assert!(!managed(CmdlineMode::Leave, Some(true)));
    }

    #[test]
    fn drop_in_is_written_once_and_removed_with_its_dir() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(root.join("/etc/default")).unwrap();
        std::fs::write(root.join(GRUB_DEFAULT), "GRUB_CMDLINE_LINUX=\"\"\n").unwrap();
        apply(&root, true).unwrap();
        apply(&root, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(DROPIN)).unwrap(),
            DROPIN_TEXT
        );
        apply(&root, false).unwrap();
        assert!(!root.join("/etc/default/grub.d").exists());
        assert!(root.join(GRUB_DEFAULT).exists());
    }

    #[test]
    fn without_grub_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(root.join("/boot/firmware")).unwrap();
        std::fs::write(root.join("/boot/firmware/cmdline.txt"), "console=tty1\n").unwrap();
        assert_eq!(
            loader(&root),
            Loader::Other {
                file: "/boot/firmware/cmdline.txt".into(),
                line: "append ' cgroup.memory=nokmem' to its single line".into()
            }
        );
        apply(&root, true).unwrap();
        assert!(!root.join("/etc/default/grub.d").exists());
    }
}
