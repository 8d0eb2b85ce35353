//! The [`ServiceManager`] for a node without a system bus (no dbus-daemon running):
//! `systemctl`, which as root talks to systemd over its private socket
//! (`/run/systemd/private`, systemd >= 209, so 229 has it) and waits for each job.
//!
//! Why not zbus over that socket: systemd (at least 252) sends its messages there with the
//! sender `org.freedesktop.systemd1`, which is not a unique name, and zbus 5 panics on it
//! in its reader thread (an abort in the release build). `systemctl` speaks systemd's own
//! dialect on every version.
//!
//! A stop or start: `systemctl show` first (not-found -> [`ServiceAction::Missing`], masked
//! -> [`ServiceAction::Masked`]), then `systemctl --job-mode=replace stop|start UNIT`, which
//! returns when the job is over (killed after the timeout: the job stays queued, as with
//! D-Bus), then the unit's state. Only properties and options systemd 229 has are used
//! (`show -p`, not `--value`, which is 230+).

use std::process::Stdio;
use std::time::{Duration, Instant};

use log::{debug, trace};

use super::{ServiceAction, ServiceManager, SystemdError, UnitState};
use crate::command::{self, Cmd, CommandError};

const SYSTEMCTL: &str = "systemctl";
const PROPS: &str =
    "LoadState,ActiveState,SubState,Result,ActiveEnterTimestampMonotonic,MainPID,Type";

/// systemd through the `systemctl` command.
#[derive(Debug, Clone, Default)]
pub struct Systemctl {}

impl Systemctl {
    /// Check that `systemctl` reaches systemd (`systemctl show -p Version`).
    pub fn probe() -> Result<Systemctl, CommandError> {
        let (out, shown) = Cmd::new(SYSTEMCTL)
            .args(["show", "-p", "Version"])
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.starts_with("Version=") {
            debug!("systemctl reaches systemd {}", stdout.trim());
            Ok(Systemctl {})
        } else {
            Err(command::failed(shown, &out, ""))
        }
    }

    fn show(&self, unit: &str) -> Result<(UnitState, String), SystemdError> {
        let (out, shown) = Cmd::new(SYSTEMCTL)
            .args(["show", "-p", PROPS, "--", unit])
            .output()
            .map_err(|e| failed("show", unit, e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        trace!(
            "systemctl show '{unit}': {}",
            text.trim().replace('\n', " ")
        );
        if !out.status.success() {
            return Err(failed("show", unit, command::failed(shown, &out, "")));
        }
        Ok(parse_show(unit, &text))
    }

    fn act(
        &self,
        verb: &'static str,
        unit: &str,
        timeout: Duration,
    ) -> Result<ServiceAction, SystemdError> {
        let (before, _) = self.show(unit)?;
        match before.load_state.as_str() {
            "not-found" => return Ok(ServiceAction::Missing),
            "masked" => return Ok(ServiceAction::Masked),
            _ => {}
        }
        let started = Instant::now();
        let (mut child, shown) = Cmd::new(SYSTEMCTL)
            .args(["--job-mode=replace", verb, "--", unit])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(verb, unit, e))?;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(SystemdError::Timeout {
                        verb,
                        unit: unit.to_string(),
                        timeout,
                    });
                }
                Err(source) => {
                    let e = CommandError::Wait { cmd: shown, source };
                    return Err(failed(verb, unit, e));
                }
            }
        };
        let stderr = child
            .stderr
            .take()
            .map(|mut s| {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut s, &mut text);
                text
            })
            .unwrap_or_default();
        let (after, service_type) = self.show(unit)?;
        debug!(
            "systemctl {verb} '{unit}': {status} after {} ms",
            started.elapsed().as_millis()
        );
        if !status.success() {
            trace!("systemctl {verb} '{unit}': {}", stderr.trim());
            return Err(SystemdError::JobFailed {
                verb,
                unit: unit.to_string(),
                job_result: format!("failed: {}", one_line(&stderr)),
                active_state: after.active_state,
                sub_state: after.sub_state,
                unit_result: after.result,
            });
        }
        if verb == "start" && !super::dbus::started_ok(&after, &service_type) {
            return Err(SystemdError::NotActive {
                unit: unit.to_string(),
                active_state: after.active_state,
                sub_state: after.sub_state,
                unit_result: after.result,
            });
        }
        Ok(ServiceAction::Done {
            job_result: "done".to_string(),
        })
    }
}

impl ServiceManager for Systemctl {
    fn stop(&self, unit: &str, timeout: Duration) -> Result<ServiceAction, SystemdError> {
        self.act("stop", unit, timeout)
    }

    fn start(&self, unit: &str, timeout: Duration) -> Result<ServiceAction, SystemdError> {
        self.act("start", unit, timeout)
    }

    fn state(&self, unit: &str) -> Result<UnitState, SystemdError> {
        self.show(unit).map(|(state, _)| state)
    }
}

/// `systemctl show -p ...` output -> the state and the service Type (pure, for tests).
/// `active_enter_usec` is the monotonic timestamp here: it only tells restarts apart.
pub fn parse_show(unit: &str, text: &str) -> (UnitState, String) {
    let mut state = UnitState {
        unit: unit.to_string(),
        ..UnitState::default()
    };
    let mut service_type = String::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "LoadState" => state.load_state = value.to_string(),
            "ActiveState" => state.active_state = value.to_string(),
            "SubState" => state.sub_state = value.to_string(),
            "Result" => state.result = value.to_string(),
            "ActiveEnterTimestampMonotonic" => state.active_enter_usec = value.parse().unwrap_or(0),
            "MainPID" => state.main_pid = value.parse().unwrap_or(0),
            "Type" => service_type = value.to_string(),
            _ => {}
        }
    }
    (state, service_type)
}

fn failed(verb: &'static str, unit: &str, source: CommandError) -> SystemdError {
    SystemdError::Systemctl {
        verb,
        unit: unit.to_string(),
        source,
    }
}

/// systemctl's message on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_output_parses() {
        let text = "LoadState=loaded\nActiveState=activating\nSubState=auto-restart\n\
                    Result=exit-code\nActiveEnterTimestampMonotonic=123456\nMainPID=0\nType=simple\n";
        let (s, t) = parse_show("kubelet.service", text);
        assert_eq!(
            (
                s.load_state.as_str(),
                s.active_state.as_str(),
                s.sub_state.as_str(),
                s.result.as_str(),
                s.active_enter_usec,
                s.main_pid,
                t.as_str()
            ),
            (
                "loaded",
                "activating",
                "auto-restart",
                "exit-code",
                123456,
                0,
                "simple"
            )
        );
        let (s, _) = parse_show("x.service", "LoadState=not-found\nActiveState=inactive\n");
        assert_eq!(s.load_state, "not-found");
        assert_eq!(s.unit, "x.service");
    }

    #[test]
    fn no_bus_error_names_both_ways() {
        let err = SystemdError::NoBus {
            bus: zbus::Error::Failure("no bus here".into()),
            private: CommandError::Failed {
                cmd: "systemctl show -p Version".into(),
                status: "exit status: 1".into(),
                stderr: "Failed to connect to bus".into(),
            },
        };
        let msg = crate::notes::error_chain(&err);
        assert!(
            msg.contains("no system bus, and")
                && msg.contains("/run/systemd/private) failed too (`systemctl show -p Version` failed (exit status: 1): Failed to connect to bus)")
                && msg.contains("systemctl start dbus.socket")
                && msg.ends_with(": no bus here"),
            "{msg}"
        );
    }
}
