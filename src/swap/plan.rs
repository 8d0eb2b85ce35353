//! Planning: which units a swap stops and starts (only running ones, in the configured
//! order, a socket with its service), and the steps of an install and of a remove.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use log::{debug, info, warn};

use super::preflight::{previous_of, Found};
use crate::config::Config;
use crate::divert::Diversion;
use crate::journal::{foreign_aside, Step};
use crate::paths::Root;
use crate::state::{Original, State};
use crate::systemd::settle::went_down;
use crate::systemd::{ServiceManager, UnitState};

/// The units a swap stops and starts, and those of them that were failing before it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Running {
    pub units: Vec<String>,
    /// Units crash-looping now (`activating/auto-restart`), unit -> that state: stopped and
    /// started like the others, then judged against that state, not by the settle window
    /// (a kubelet before `kubeadm join`).
    pub failing: BTreeMap<String, String>,
}

/// Keep the units that run now (try-restart semantics: a stopped or failed unit is not
/// started by us; it gets the new binary whenever it starts). A unit restarting after a
/// failure is kept and noted as failing. Without a manager all are kept, for the log's
/// "skipped" lines.
pub fn running(
    manager: Option<&dyn ServiceManager>,
    units: Vec<String>,
) -> anyhow::Result<Running> {
    let Some(manager) = manager else {
        return Ok(Running {
            units,
            ..Running::default()
        });
    };
    let mut out = Vec::new();
    let mut failing = BTreeMap::new();
    for unit in units {
        let state = state_of(manager, &unit)?;
        let (state, restarted) = unless_just_started(manager, state)?;
        if let Some(restarted) = restarted {
            note_failing(&mut failing, &unit, &restarted, "restarting".to_string());
        }
        match (state.load_state.as_str(), state.active_state.as_str()) {
            ("not-found", _) => info!("'{unit}' does not exist on this node: nothing to restart"),
            ("masked", _) => info!("'{unit}' is masked: left alone"),
            (_, active @ ("active" | "activating" | "reloading")) => {
                if active == "activating" && state.sub_state == "auto-restart" {
                    let was = format!("{active}/{}", state.sub_state);
                    let why = format!("{was}, Result={}", state.result);
                    note_failing(&mut failing, &unit, &why, was);
                }
                // its socket (docker.socket) stops before it and starts after it, so that
                // socket activation cannot start it mid-swap
                if let Some(socket) = active_socket(manager, &unit)? {
                    info!(
                        "'{socket}' is active: it is stopped before '{unit}' and started after it"
                    );
                    out.push(socket);
                }
                out.push(unit)
            }
            (_, "failed") => warn!(
                "'{unit}' is failed (Result={}) before the swap: left alone; it runs the new binary when it starts; see `journalctl -u {unit}`",
                state.result
            ),
            (_, other) => {
                info!("'{unit}' is {other}: not restarted; it runs the new binary when it starts")
            }
        }
    }
    Ok(Running {
        units: out,
        failing,
    })
}

/// The state of `unit` before the swap; an error says nothing was changed.
fn state_of(manager: &dyn ServiceManager, unit: &str) -> anyhow::Result<UnitState> {
    manager.state(unit).with_context(|| {
        format!("failed to read the state of '{unit}' over D-Bus; nothing was changed")
    })
}

/// `unit` is failing before the swap (`why`: what was seen): restarted like the others,
/// then judged against `was` ([`Running::failing`]).
fn note_failing(failing: &mut BTreeMap<String, String>, unit: &str, why: &str, was: String) {
    warn!(
        "'{unit}' is failing before the swap ({why}): it is restarted like the others and must come back no worse (restarting or up), not stay up; see `journalctl -u {unit}`"
    );
    failing.insert(unit.to_string(), was);
}

/// How long a unit must have been active to count as up before the swap: a crash-looping
/// unit is `active` for a moment after each restart (kubelet before `kubeadm join` fails
/// within a second of each start).
pub const JUST_STARTED: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(250);

/// A unit that became active less than [`JUST_STARTED`] ago is watched until it has been
/// up that long: the state to judge it by, and (when it exited and was restarted
/// meanwhile, still `active`) why it counts as failing.
fn unless_just_started(
    manager: &dyn ServiceManager,
    state: UnitState,
) -> anyhow::Result<(UnitState, Option<String>)> {
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let age = Duration::from_micros(
        u64::try_from(now_us.saturating_sub(u128::from(state.active_enter_usec)))
            .unwrap_or(u64::MAX),
    );
    if state.active_state != "active" || state.active_enter_usec == 0 || age >= JUST_STARTED {
        return Ok((state, None));
    }
    let unit = state.unit.clone();
    info!(
        "'{unit}' became active {} ms ago: watching it until it has been up for {} s, in case it is restarting in a loop",
        age.as_millis(),
        JUST_STARTED.as_secs()
    );
    let until = Instant::now() + (JUST_STARTED - age);
    loop {
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
        let now = state_of(manager, &unit)?;
        if let Some(why) = went_down(&state, &now) {
            debug!("'{unit}' before the swap: {why}");
            // still active (restarted between two polls): restarting all the same
            let restarted = (now.active_state == "active").then_some(why);
            return Ok((now, restarted));
        }
        if Instant::now() >= until {
            return Ok((now, None));
        }
    }
}

/// The units in start order: the stop order reversed, except that a socket starts right
/// before its service (systemd refuses to start a socket whose service already runs).
pub fn start_order(units: &[String]) -> Vec<String> {
    let mut out: Vec<String> = units.iter().rev().cloned().collect();
    for i in 1..out.len() {
        let service = out[i]
            .strip_suffix(".socket")
            .map(|name| format!("{name}.service"));
        if service.as_deref() == Some(out[i - 1].as_str()) {
            out.swap(i - 1, i);
        }
    }
    out
}

/// `X.socket` for `X.service` when that socket unit is active (listening).
fn active_socket(manager: &dyn ServiceManager, unit: &str) -> anyhow::Result<Option<String>> {
    let Some(name) = unit.strip_suffix(".service") else {
        return Ok(None);
    };
    let socket = format!("{name}.socket");
    let state = state_of(manager, &socket)?;
    Ok((state.load_state == "loaded" && state.active_state == "active").then_some(socket))
}

/// The units to stop (in this order) and start (in reverse) for these targets: the
/// configured order first, then any other unit a target names.
pub fn units_for<'a>(
    config: &Config,
    restart: impl Iterator<Item = &'a Vec<String>>,
) -> Vec<String> {
    let wanted: Vec<String> = restart.flatten().cloned().collect();
    let mut out: Vec<String> = config
        .service_order
        .iter()
        .filter(|u| wanted.contains(u))
        .cloned()
        .collect();
    for u in wanted {
        if !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

/// The install steps for the targets that change: stage every payload while the services
/// still run, stop, divert (a path we already divert is not diverted again: its undo would
/// drop our diversion), place, start in reverse, record `new_state` (undo: `state`).
pub fn install_steps(
    root: &Root,
    changed: &[&Found],
    units: &[String],
    new_state: State,
    state: State,
) -> anyhow::Result<Vec<Step>> {
    let mut steps = vec![Step::Preflight];
    for f in changed {
        steps.push(Step::Stage {
            target: f.target.name.clone(),
            path: f.target.path.clone(),
            payload: f.target.payload.clone(),
            sha256: f.target.payload_sha256.clone(),
        });
    }
    steps.extend(units.iter().map(|u| Step::Stop { unit: u.clone() }));
    for f in changed.iter().filter(|f| !f.ours) {
        steps.push(Step::Divert {
            target: f.target.name.clone(),
            path: f.target.path.clone(),
            divert_to: f.target.divert_to.clone(),
            original: f.original.clone(),
        });
    }
    for f in changed {
        steps.push(Step::Place {
            target: f.target.name.clone(),
            path: f.target.path.clone(),
            divert_to: f.target.divert_to.clone(),
            payload: f.target.payload.clone(),
            sha256: f.target.payload_sha256.clone(),
            original: f.original.clone(),
            previous: previous_of(root, f)?,
        });
    }
    steps.extend(
        start_order(units)
            .into_iter()
            .map(|unit| Step::Start { unit }),
    );
    steps.push(Step::Record {
        state: Some(new_state),
        before: Some(state),
        stamp: changed.iter().map(|f| f.target.name.clone()).collect(),
    });
    Ok(steps)
}

/// One swapped target as remove finds it: our diversion, the sha256s of files we placed,
/// the original recorded at install, and the payload to put back if remove is undone.
pub struct Swapped {
    pub name: String,
    pub diversion: Diversion,
    pub ours: Vec<String>,
    pub original: Option<Original>,
    pub payload: Option<(PathBuf, String)>,
}

/// The remove steps: stop, then per target unplace (a file we did not place goes to
/// [`foreign_aside`] with the time `now`) and undivert, start in reverse, record.
pub fn remove_steps(units: &[String], swapped: &[Swapped], now: u64) -> Vec<Step> {
    let mut steps = vec![Step::Preflight];
    steps.extend(units.iter().map(|u| Step::Stop { unit: u.clone() }));
    for s in swapped {
        let d = &s.diversion;
        steps.push(Step::Unplace {
            target: s.name.clone(),
            path: d.path.clone(),
            divert_to: d.divert_to.clone(),
            ours: s.ours.clone(),
            payload: s.payload.clone(),
            foreign_to: Some(foreign_aside(&d.path, now)),
        });
        steps.push(Step::Undivert {
            target: s.name.clone(),
            path: d.path.clone(),
            divert_to: d.divert_to.clone(),
            original: s.original.clone(),
        });
    }
    steps.extend(
        start_order(units)
            .into_iter()
            .map(|unit| Step::Start { unit }),
    );
    steps.push(Step::Record {
        state: None,
        before: None,
        stamp: Vec::new(),
    });
    steps
}
