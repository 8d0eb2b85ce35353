//! Services, through systemd's D-Bus API (org.freedesktop.systemd1.Manager on the system
//! bus). [`ServiceManager`] is what the transaction uses; the zbus client implements it for
//! real, `fake::FakeSystemd` (unit-test builds only) records calls.
//!
//! Contract of `stop`/`start`: Subscribe() and open the JobRemoved stream BEFORE calling
//! StopUnit/StartUnit (mode "replace"), wait for that job's JobRemoved up to `timeout`, then
//! read the unit's ActiveState/SubState/Result. Only job results `done` and `skipped` are
//! success. A unit that does not exist (NoSuchUnit, LoadState not-found) yields
//! [`ServiceAction::Missing`]; a masked one [`ServiceAction::Masked`] (left alone). Only
//! Manager methods that systemd 229 (Ubuntu 16.04) has are used.
//!
//! After a `done` start job the unit must be `active` ([`SystemdError::NotActive`]). Then
//! [`ServiceManager::settle`] watches every unit the transaction started, together, for the
//! settle window (`[services] settle`): systemd reports a `Type=simple` unit started as soon
//! as it forked, so a binary that cannot run, or exits seconds later, only shows then
//! ([`SystemdError::Settle`]; see `settle.rs`).
//!
//! Get the real client with [`connect`] (or [`SystemdClient::system`]); the process keeps one
//! bus connection, made on first use.

// SystemdError carries the unit, states and zbus's error by value; it is returned once per
// failed D-Bus round trip, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use crate::command::CommandError;

mod dbus;
/// A recording test double; compiled only for the unit tests, never shipped.
#[cfg(test)]
pub mod fake;
mod listener;
pub mod settle;
mod systemctl;

pub use dbus::SystemdClient;
pub use settle::Started;
pub use systemctl::Systemctl;

/// systemd's own D-Bus socket (peer to peer, root only; systemd >= 209, so 229 has it):
/// `systemctl` run as root uses it, with or without a dbus-daemon.
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";

/// What happened to a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAction {
    /// The job finished with `done` (or `skipped`: already in the wanted state).
    Done { job_result: String },
    /// No such unit on this node: nothing to do.
    Missing,
    /// The unit is masked: left alone.
    Masked,
}

impl ServiceAction {
    /// A `note:` line for the user when the unit was not acted on.
    pub fn note(&self, unit: &str) -> Option<String> {
        match self {
            ServiceAction::Done { .. } => None,
            ServiceAction::Missing => Some(format!(
                "'{unit}' does not exist on this node, so it was skipped; if it should, check `systemctl status {unit}`, else drop it from the services list in the config"
            )),
            ServiceAction::Masked => Some(format!(
                "'{unit}' is masked, so it was left alone (it keeps running whatever binary it had, if any); `systemctl unmask {unit}` to have it restarted"
            )),
        }
    }
}

/// Connect to systemd on the system bus (`$DBUS_SYSTEM_BUS_ADDRESS` honoured) and subscribe
/// to job signals; the process's one connection is reused by later calls. Without a system
/// bus (no dbus-daemon) and without `$DBUS_SYSTEM_BUS_ADDRESS` naming one, [`Systemctl`]:
/// `systemctl` reaches systemd over its private socket.
pub fn connect() -> Result<Box<dyn ServiceManager>, SystemdError> {
    match SystemdClient::system() {
        Ok(client) => Ok(Box::new(client)),
        Err(SystemdError::Connect(bus))
            if std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS").is_none() =>
        {
            log::debug!(
                "no system bus ({}); trying systemctl",
                crate::notes::error_chain(&bus)
            );
            let systemctl =
                Systemctl::probe().map_err(|private| SystemdError::NoBus { bus, private })?;
            log::info!(
                "no system bus: talking to systemd through systemctl (its private socket {PRIVATE_SOCKET})"
            );
            Ok(Box::new(systemctl))
        }
        Err(e) => Err(e),
    }
}

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct UnitState {
    pub unit: String,
    /// `loaded`, `not-found`, `masked`, ...
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, ...
    pub active_state: String,
    pub sub_state: String,
    /// The service's `Result` (`success`, `exit-code`, ...); empty for non-services.
    pub result: String,
    /// `ActiveEnterTimestamp` in µs since the epoch (0: never), to tell whether it restarted.
    pub active_enter_usec: u64,
    /// `MainPID`: the service's running main process (0: not running).
    pub main_pid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("failed to connect to the system bus")]
    Connect(#[source] zbus::Error),
    /// `bus` is the cause; `private` (a second, independent one) is shown in the message.
    #[error("failed to reach systemd: no system bus, and `systemctl` (systemd's private socket {PRIVATE_SOCKET}) failed too ({}); start dbus (`systemctl start dbus.socket`) or run as root", crate::notes::error_chain(private))]
    NoBus {
        #[source]
        bus: zbus::Error,
        private: CommandError,
    },
    #[error("`systemctl {verb} {unit}` failed")]
    Systemctl {
        verb: &'static str,
        unit: String,
        #[source]
        source: CommandError,
    },
    #[error("D-Bus call {method}('{unit}') failed")]
    Call {
        method: &'static str,
        unit: String,
        #[source]
        source: zbus::Error,
    },
    #[error("{verb} job for '{unit}' ended with result '{job_result}' (unit: {active_state}/{sub_state}, Result={unit_result}); see `journalctl -u {unit}`")]
    JobFailed {
        verb: &'static str,
        unit: String,
        job_result: String,
        active_state: String,
        sub_state: String,
        unit_result: String,
    },
    #[error("'{unit}' is {active_state}/{sub_state} (Result={unit_result}) right after its start job finished: its process exited or is restarting; see `journalctl -u {unit}`")]
    NotActive {
        unit: String,
        active_state: String,
        sub_state: String,
        unit_result: String,
    },
    #[error("'{unit}' did not stay up for {}s after it started: {why} (after {after_ms} ms; now {active_state}/{sub_state}); see `journalctl -u {unit}`", window.as_secs_f32())]
    Settle {
        unit: String,
        /// How long after its start job it was seen down.
        after_ms: u64,
        window: Duration,
        why: String,
        active_state: String,
        sub_state: String,
    },
    #[error("lost the D-Bus signal stream while waiting for the {verb} job of '{unit}' (systemd or the bus went away); see `systemctl status {unit}`")]
    Lost { verb: &'static str, unit: String },
    #[error("{verb} job for '{unit}' did not finish within {}s; see `journalctl -u {unit}` or raise [services] timeout", timeout.as_secs())]
    Timeout {
        verb: &'static str,
        unit: String,
        timeout: Duration,
    },
}

/// The service operations the transaction and `status` need.
pub trait ServiceManager {
    /// Stop `unit` and wait for its job.
    fn stop(&self, unit: &str, timeout: Duration) -> Result<ServiceAction, SystemdError>;
    /// Start `unit` and wait for its job, then check it is active.
    fn start(&self, unit: &str, timeout: Duration) -> Result<ServiceAction, SystemdError>;
    /// Read a unit's state (a missing unit gives `load_state: "not-found"`).
    fn state(&self, unit: &str) -> Result<UnitState, SystemdError>;
    /// The unit's state as read right after its last start job, if this client kept it
    /// (saves a round trip while the services are down); `None`: ask [`Self::state`].
    fn started_state(&self, _unit: &str) -> Option<UnitState> {
        None
    }
    /// Watch the units started (each as read right after its start job) until every one
    /// has been up for `window`; the first that went down, restarted, or (kubelet) answers
    /// its healthz with an error is the error. See `settle.rs`.
    fn settle(&self, started: &[Started], window: Duration) -> Result<(), SystemdError> {
        settle::watch(self, started, window)
    }
}
