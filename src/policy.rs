//! May we touch services? The debhelper guards, in Rust: no service action under a root
//! other than `/` (`--root`/`$DPKG_ROOT`), none when systemd is not running
//! (`/run/systemd/system` missing: a chroot, an image build), and none for a unit that
//! `/usr/sbin/policy-rc.d <unit> <action>` forbids (exit 101).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use log::debug;

use crate::command::Cmd;
use crate::paths::{self, Root};

/// policy-rc.d's "action forbidden" exit code.
pub const POLICY_FORBIDDEN: i32 = 101;

/// Why no service is touched at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `--root`/`$DPKG_ROOT` names a root other than `/`.
    ForeignRoot(PathBuf),
    /// `/run/systemd/system` does not exist.
    SystemdNotRunning,
    /// `recover --boot`: ordered before the services, which start after it.
    Boot,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::ForeignRoot(r) => write!(f, "root is '{}', not /", r.display()),
            SkipReason::SystemdNotRunning => {
                write!(f, "systemd is not running: no {}", paths::SYSTEMD_RUNNING)
            }
            SkipReason::Boot => write!(f, "at boot: the services start after this"),
        }
    }
}

/// Whether services may be acted on at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicePolicy {
    Act,
    Skip(SkipReason),
}

impl ServicePolicy {
    /// Decide for `root` on this machine.
    pub fn detect(root: &Root) -> ServicePolicy {
        if !root.is_host() {
            return ServicePolicy::Skip(SkipReason::ForeignRoot(root.path().to_path_buf()));
        }
        Self::detect_at(Path::new(paths::SYSTEMD_RUNNING))
    }

    /// Decide from a given `/run/systemd/system` (tests point it elsewhere).
    pub fn detect_at(systemd_dir: &Path) -> ServicePolicy {
        if systemd_dir.is_dir() {
            ServicePolicy::Act
        } else {
            ServicePolicy::Skip(SkipReason::SystemdNotRunning)
        }
    }
}

/// policy-rc.d could not be run (`failed to run `…``, with the OS error as its cause).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PolicyError(#[from] crate::command::CommandError);

/// policy-rc.d's answer for one unit and action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Exit 101.
    Forbidden,
}

/// Ask `helper <unit> <action>` (normally [`paths::POLICY_RC_D`]); no helper means allowed.
/// Only exit 101 forbids; other codes (104, 105, 106, errors) do not, as deb-systemd-invoke.
pub fn ask_policy_rc_d(helper: &Path, unit: &str, action: &str) -> Result<Verdict, PolicyError> {
    use std::os::unix::fs::PermissionsExt;
    let executable = std::fs::metadata(helper)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if !executable {
        return Ok(Verdict::Allowed);
    }
    let (status, cmd) = Cmd::localized(helper)
        .arg(unit)
        .arg(action)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(PolicyError)?;
    debug!("`{cmd}`: {status}");
    Ok(if status.code() == Some(POLICY_FORBIDDEN) {
        Verdict::Forbidden
    } else {
        Verdict::Allowed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn foreign_root_and_no_systemd_skip_services() {
        assert_eq!(
            ServicePolicy::detect(&Root::new("/tmp/r")),
            ServicePolicy::Skip(SkipReason::ForeignRoot("/tmp/r".into()))
        );
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("run/systemd/system");
        assert_eq!(
            ServicePolicy::detect_at(&sd),
            ServicePolicy::Skip(SkipReason::SystemdNotRunning)
        );
        std::fs::create_dir_all(&sd).unwrap();
        assert_eq!(ServicePolicy::detect_at(&sd), ServicePolicy::Act);
    }

    #[test]
    fn policy_rc_d_101_forbids_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("policy-rc.d");
        assert_eq!(
            ask_policy_rc_d(&helper, "kubelet.service", "stop").unwrap(),
            Verdict::Allowed,
            "no helper"
        );
        std::fs::write(
            &helper,
            "#!/bin/sh\n[ \"$1\" = docker.service ] && exit 101\nexit 104\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            ask_policy_rc_d(&helper, "docker.service", "start").unwrap(),
            Verdict::Forbidden
        );
        assert_eq!(
            ask_policy_rc_d(&helper, "kubelet.service", "start").unwrap(),
            Verdict::Allowed
        );
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            ask_policy_rc_d(&helper, "docker.service", "start").unwrap(),
            Verdict::Allowed,
            "not executable: ignored, as invoke-rc.d does"
        );
    }
}
