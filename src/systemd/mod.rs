//! Services, through systemd's D-Bus API (org.freedesktop.systemd1.Manager on the system
//! bus). [`ServiceManager`] is what the transaction uses; the zbus client implements it for
//! real, [`fake::FakeSystemd`] records calls for unit tests.
//!
//! Contract of `stop`/`start`: Subscribe() and open the JobRemoved stream BEFORE calling
//! StopUnit/StartUnit (mode "replace"), wait for that job's JobRemoved up to `timeout`, then
//! read the unit's ActiveState/SubState/Result. Only job results `done` and `skipped` are
//! success. A unit that does not exist (NoSuchUnit, LoadState not-found) yields
//! [`ServiceAction::Missing`]; a masked one [`ServiceAction::Masked`] (left alone). Only
//! Manager methods that systemd 229 (Ubuntu 16.04) has are used.
//!
//! After a `done` start job the unit must be `active`; a `Type=simple` unit that was really
//! (re)started must also stay active for [`SystemdClient::settle`] (default
//! [`DEFAULT_SETTLE`]), since systemd reports it started as soon as it forked: a binary that
//! cannot run fails a moment later ([`SystemdError::NotActive`]). See `dbus.rs`.
//!
//! Get the real client with [`connect`] (or [`SystemdClient::system`]); the process keeps one
//! bus connection, made on first use.

// SystemdError carries the unit, states and zbus's error by value; it is returned once per
// failed D-Bus round trip, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::time::Duration;

mod dbus;
pub mod fake;

pub use dbus::{SystemdClient, DEFAULT_SETTLE};

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
/// to job signals; the process's one connection is reused by later calls.
pub fn connect() -> Result<Box<dyn ServiceManager>, SystemdError> {
    Ok(Box::new(SystemdClient::system()?))
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
}
