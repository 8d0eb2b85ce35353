//! Debian's reboot-required convention (Debian Policy 9.12): `/run/reboot-required` says a
//! reboot is needed, `/run/reboot-required.pkgs` lists the packages that asked, one a line.
//! kured, kubespray's upgrade playbook, unattended-upgrades' Automatic-Reboot, motd and
//! node_exporter's apt_info read them. We add ourselves once, atomically, and call
//! update-notifier's helper where it exists (never relied on: Debian 12 has none).

use std::path::Path;
use std::time::Instant;

use log::{debug, info, warn};

use crate::command::Cmd;
use crate::fs::{self, FileError};
use crate::paths::{self, Root};

/// The flag file.
pub const FLAG: &str = "/run/reboot-required";
/// The packages that asked, one a line.
pub const PKGS: &str = "/run/reboot-required.pkgs";
/// update-notifier's helper (Ubuntu): refreshes motd and desktop notices.
pub const NOTIFIER: &str = "/usr/share/update-notifier/notify-reboot-required";
/// What update-notifier writes into the flag file.
const FLAG_TEXT: &str = "*** System restart required ***\n";

/// What the flag files say now.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Flag {
    /// `/run/reboot-required` exists (any package).
    pub required: bool,
    /// `k8s-nokmem` is listed in `/run/reboot-required.pkgs`.
    pub by_us: bool,
    /// Every package listed.
    pub packages: Vec<String>,
}

/// Read the flag files under `root`.
pub fn read(root: &Root) -> Flag {
    let packages: Vec<String> = std::fs::read_to_string(root.join(PKGS))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    Flag {
        required: root.join(FLAG).exists(),
        by_us: packages.iter().any(|p| p == paths::PACKAGE),
        packages,
    }
}

/// The `.pkgs` text with `pkg` added once (pure).
pub fn with_package(text: &str, pkg: &str) -> Option<String> {
    if text.lines().any(|l| l.trim() == pkg) {
        return None;
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(pkg);
    out.push('\n');
    Some(out)
}

/// Ask for a reboot: create the flag file if missing, add `k8s-nokmem` to `.pkgs` if
/// missing (each an atomic write: temp file, fsync, rename, directory fsync), then run
/// update-notifier's helper on the live system when it exists. `why` goes in the log line.
pub fn flag(root: &Root, why: &str) -> Result<(), FileError> {
    let start = Instant::now();
    let run = root.join("/run");
    fs::create_dir_all(&run, 0o755)?;
    let flag = root.join(FLAG);
    let mut changed = Vec::new();
    if !flag.exists() {
        fs::atomic_write_bytes(&flag, 0o644, FLAG_TEXT.as_bytes())?;
        changed.push(FLAG);
    }
    let pkgs = root.join(PKGS);
    let text = match fs::read_to_string(&pkgs) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => String::new(),
        Err(e) => return Err(e),
    };
    if let Some(new) = with_package(&text, paths::PACKAGE) {
        fs::atomic_write_bytes(&pkgs, 0o644, new.as_bytes())?;
        changed.push(PKGS);
    }
    if root.is_host() && !changed.is_empty() && Path::new(NOTIFIER).exists() {
        // without DPKG_MAINTSCRIPT_PACKAGE it only refreshes the notices; .pkgs is ours
        match Cmd::localized(NOTIFIER)
            .env_remove("DPKG_MAINTSCRIPT_PACKAGE")
            .status()
        {
            Ok((s, _)) if s.success() => debug!("`{NOTIFIER}`: ok"),
            Ok((s, _)) => warn!("`{NOTIFIER}` failed ({s}); the reboot-required files are written"),
            Err(e) => warn!(
                "{}; the reboot-required files are written",
                crate::notes::error_chain(&e)
            ),
        }
    }
    info!(
        "reboot-required: {} ({why}) ({} ms)",
        if changed.is_empty() {
            format!("already flagged by {}", paths::PACKAGE)
        } else {
            format!("wrote {}", changed.join(", "))
        },
        start.elapsed().as_millis()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_is_listed_once() {
        let cases = [
            ("", Some("k8s-nokmem\n")),
            (
                "linux-image-5.4.0-150-generic\n",
                Some("linux-image-5.4.0-150-generic\nk8s-nokmem\n"),
            ),
            ("libc6", Some("libc6\nk8s-nokmem\n")),
            ("libc6\nk8s-nokmem\n", None),
            ("k8s-nokmem", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                with_package(text, "k8s-nokmem").as_deref(),
                want,
                "case {text:?}"
            );
        }
    }

    #[test]
    fn flagging_twice_leaves_one_line_and_keeps_others() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(root.join("/run")).unwrap();
        std::fs::write(root.join(PKGS), "linux-base\n").unwrap();
        flag(&root, "test").unwrap();
        flag(&root, "test").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(PKGS)).unwrap(),
            "linux-base\nk8s-nokmem\n"
        );
        assert_eq!(std::fs::read_to_string(root.join(FLAG)).unwrap(), FLAG_TEXT);
        let f = read(&root);
        assert!(f.required && f.by_us);
        let names: Vec<_> = std::fs::read_dir(root.join("/run"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temp file left: {names:?}");
    }
}
