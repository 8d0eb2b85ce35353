//! The session every transaction runs in: the root check (a dpkg database), the lock (one
//! run at a time) and dpkg's frontend lock (not while apt or dpkg runs, unless dpkg runs
//! us), the test failpoint, the service policy (act on services, or why not), the D-Bus
//! connection to systemd, and the services a node's steps act on (minus what `policy-rc.d`
//! forbids).

use anyhow::{anyhow, Context};
use log::{debug, info, warn};

use crate::config::Config;
use crate::fs;
use crate::journal::{self, Executor, Failpoint, Services};
use crate::lock::{DpkgLock, Lock, LOCK_FILE};
use crate::notes::{with_note, WithNote};
use crate::paths::{self, Root};
use crate::policy::{self, ServicePolicy, Verdict};
use crate::systemd::ServiceManager;

/// What install, remove and recover set up first: the lock (held while the session
/// lives), the failpoint and the service policy.
pub struct Session {
    _lock: Lock,
    /// dpkg's frontend lock, when not run from dpkg's maintainer scripts.
    _dpkg_lock: Option<DpkgLock>,
    pub failpoint: Option<Failpoint>,
    pub policy: ServicePolicy,
}

impl Session {
    /// Take the lock under `root`'s state directory (created if missing); an error names
    /// `command` and says to wait when another run holds it.
    pub fn open(root: &Root, command: &str) -> anyhow::Result<Session> {
        let failpoint = Failpoint::from_env()?;
        let admin = root.join(crate::dpkg::ADMINDIR);
        if !admin.is_dir() {
            return Err(with_note(
                anyhow!(
                    "{command}: '{}' is not the root of a Debian system: it has no dpkg database ('{}' is not a directory); nothing was changed",
                    root.path().display(),
                    admin.display()
                ),
                "give --root (or DPKG_ROOT) the root of a Debian or Ubuntu tree (a debootstrap or mounted image), where dpkg keeps var/lib/dpkg",
            ));
        }
        let dir = root.join(paths::STATE_DIR);
        fs::create_dir_all(&dir, 0o755)
            .with_context(|| format!("failed to prepare the state directory for {command}"))?;
        let lock = Lock::acquire(&dir.join(LOCK_FILE))
            .map_err(anyhow::Error::from)
            .note("wait for the other run to finish (dpkg may be running it); `k8s-nokmem status` shows the node")?;
        debug!("holding lock '{}'", lock.path().display());
        let dpkg_lock = match from_maintainer_script() {
            Some((package, script)) => {
                debug!("run from {package}'s {script}: dpkg holds its own locks");
                None
            }
            None => {
                let dpkg_lock = DpkgLock::acquire(&admin)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("{command} refused: nothing was changed"))
                    .note(format!(
                        "wait for apt or dpkg to finish, then run `k8s-nokmem {command}` again; installing or removing the package runs it anyway"
                    ))?;
                debug!("holding dpkg's lock '{}'", dpkg_lock.path().display());
                Some(dpkg_lock)
            }
        };
        Ok(Session {
            _lock: lock,
            _dpkg_lock: dpkg_lock,
            failpoint,
            policy: ServicePolicy::detect(root),
        })
    }

    /// The systemd client when services are acted on; unreachable D-Bus while systemd runs
    /// is an error before any change.
    pub fn connect(&self) -> anyhow::Result<Option<Box<dyn ServiceManager>>> {
        if self.policy != ServicePolicy::Act {
            return Ok(None);
        }
        let manager = crate::systemd::connect()
            .context("failed to reach systemd over D-Bus, although /run/systemd/system exists; nothing was changed")
            .note("check `systemctl is-system-running` and `busctl status`; rerun with -v")?;
        Ok(Some(manager))
    }

    /// Read every configured unit once: systemd must answer before anything changes.
    pub fn check_reachable(
        manager: Option<&dyn ServiceManager>,
        config: &Config,
    ) -> anyhow::Result<()> {
        let Some(manager) = manager else {
            return Ok(());
        };
        for unit in &config.service_order {
            manager
                .state(unit)
                .with_context(|| {
                    format!("failed to read the state of '{unit}' over D-Bus; nothing was changed")
                })
                .note("check `systemctl is-system-running` and `busctl status`")?;
        }
        Ok(())
    }

    /// What a transaction does first: check that systemd answers, then resolve an
    /// interrupted transaction's journal, with every service in the config.
    pub fn resolve_interrupted(
        &self,
        root: &Root,
        manager: Option<&dyn ServiceManager>,
        config: &Config,
    ) -> anyhow::Result<()> {
        Self::check_reachable(manager, config)?;
        let services = self.services(root, manager, &config.service_order)?;
        journal::recover(&Executor::new(root, services, config.service_timeout))
    }

    /// Services for the node: the given manager (tests may pass one whatever the root), else
    /// the skip reason.
    pub fn services<'a>(
        &self,
        root: &Root,
        manager: Option<&'a dyn ServiceManager>,
        units: &[String],
    ) -> anyhow::Result<Services<'a>> {
        let Some(manager) = manager else {
            return Ok(match &self.policy {
                ServicePolicy::Skip(reason) => Services::Skip(reason.clone()),
                ServicePolicy::Act => Services::Skip(policy::SkipReason::SystemdNotRunning),
            });
        };
        let helper = root.join(paths::POLICY_RC_D);
        let helper = helper.as_path();
        let mut forbidden = Vec::new();
        for unit in units {
            for action in ["stop", "start"] {
                if policy::ask_policy_rc_d(helper, unit, action)? == Verdict::Forbidden
                    && !forbidden.contains(unit)
                {
                    warn!("{} forbids '{action}' of '{unit}' (exit 101): leaving it alone; it keeps running the old binary until it restarts", paths::POLICY_RC_D);
                    forbidden.push(unit.clone());
                }
            }
        }
        Ok(Services::Act { manager, forbidden })
    }
}

/// The package and script when dpkg runs us from a maintainer script (it sets both
/// variables, and holds its locks meanwhile).
fn from_maintainer_script() -> Option<(String, String)> {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    Some((
        var("DPKG_MAINTSCRIPT_PACKAGE")?,
        var("DPKG_MAINTSCRIPT_NAME")?,
    ))
}

/// `<command> step 1 'preflight' failed: nothing was changed`, with the cause under it.
pub fn preflight_failed(command: &str, err: impl Into<anyhow::Error>) -> anyhow::Error {
    let err: anyhow::Error = err.into();
    log::error!("{command} [1] preflight: FAILED");
    err.context(format!(
        "{command} step 1 'preflight' failed: nothing was changed"
    ))
}

/// Say which services keep running `binaries` when services were not touched (a chroot,
/// policy-rc.d, another root).
pub fn log_skipped_restarts(services: &Services, units: &[String], binaries: &str) {
    if let Services::Skip(reason) = services {
        if !units.is_empty() {
            info!(
                "services not restarted ({reason}): {} keep {binaries} until they restart",
                units.join(", ")
            );
        }
    }
}
