//! The executor of a transaction's steps on the node ([`Executor`]): what each step's apply and undo do to its
//! services (stop, start, and the settle window after the starts); the file and diversion
//! operations are in [`files`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use log::{info, warn};

use super::Step;
use crate::divert::{Added, Diversion, DivertCache};
use crate::fs;
use crate::notes::with_note;
use crate::paths::{self, Root};
use crate::policy::SkipReason;
use crate::systemd::{ServiceAction, ServiceManager, Started, SystemdError};

mod files;

/// Whether services are acted on, and through what.
pub enum Services<'a> {
    Act {
        manager: &'a dyn ServiceManager,
        /// Units `policy-rc.d` forbids (exit 101): left alone.
        forbidden: Vec<String>,
    },
    Skip(SkipReason),
}

/// What a step's apply or undo did, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Did {
    Ok,
    /// Done, with a detail (`already diverted`).
    OkBecause(String),
    Skipped(String),
}

impl std::fmt::Display for Did {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Did::Ok => write!(f, "ok"),
            Did::OkBecause(why) => write!(f, "ok ({why})"),
            Did::Skipped(why) => write!(f, "skipped ({why})"),
        }
    }
}

/// What the settle window after a run of starts found ([`Executor::settle_started`]).
#[derive(Debug)]
pub struct Settled {
    /// The window (`[services] settle`) and how long watching took.
    pub window: Duration,
    pub took: Duration,
    /// The units that stayed up for it.
    pub watched: Vec<String>,
    /// The units failing before the swap, found no worse than then.
    pub judged: Vec<String>,
}

impl std::fmt::Display for Settled {
    /// `every started service stayed up for 6 s (6003 ms)`, or with failing units
    /// `'docker.service' stayed up for 6 s, and 'kubelet.service', failing before the swap,
    /// no worse (6003 ms)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quoted = |units: &[String]| {
            units
                .iter()
                .map(|u| format!("'{u}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let secs = self.window.as_secs_f32();
        let ms = self.took.as_millis();
        match (self.watched.is_empty(), self.judged.is_empty()) {
            (_, true) => write!(f, "every started service stayed up for {secs} s ({ms} ms)"),
            (true, false) => write!(
                f,
                "{}, failing before the swap, no worse after {secs} s ({ms} ms)",
                quoted(&self.judged)
            ),
            (false, false) => write!(
                f,
                "{} stayed up for {secs} s, and {}, failing before the swap, no worse ({ms} ms)",
                quoted(&self.watched),
                quoted(&self.judged)
            ),
        }
    }
}

/// The node a transaction acts on: files and diversions under a root, and services.
pub struct Executor<'a> {
    pub root: Root,
    pub services: Services<'a>,
    pub timeout: Duration,
    /// How long the services this run started must stay up (see [`Executor::settle_started`]).
    pub settle: Duration,
    /// The units this run's start steps started, as they were right after their job.
    started: RefCell<Vec<Started>>,
    /// Units that were failing before the transaction (unit -> `activating/auto-restart`):
    /// a start of one is judged against that state, not by the settle window.
    failing: RefCell<BTreeMap<String, String>>,
    /// The failing units this run started: checked at the end of the settle window.
    judged: RefCell<Vec<String>>,
    /// Temp files this run staged (a leftover of another run is never renamed into place).
    staged: RefCell<Vec<PathBuf>>,
    /// Our diversions, listed once (see [`DivertCache`]).
    diversions: DivertCache,
}

impl<'a> Executor<'a> {
    pub fn new(root: &Root, services: Services<'a>, timeout: Duration) -> Executor<'a> {
        Executor {
            root: root.clone(),
            services,
            timeout,
            settle: crate::config::DEFAULT_SETTLE,
            started: RefCell::new(Vec::new()),
            failing: RefCell::new(BTreeMap::new()),
            judged: RefCell::new(Vec::new()),
            staged: RefCell::new(Vec::new()),
            diversions: DivertCache::new(root),
        }
    }

    /// Watch the services started since the last call for `settle` (`[services] settle`).
    pub fn with_settle(mut self, settle: Duration) -> Executor<'a> {
        self.settle = settle;
        self
    }

    /// The units that were failing before the transaction (see [`Executor::failing`]).
    pub fn with_failing(self, failing: BTreeMap<String, String>) -> Executor<'a> {
        self.set_failing(failing);
        self
    }

    /// Units failing before the transaction, unit -> the state it was in; journalled, so
    /// that a later run resolving it judges their starts the same way.
    pub fn failing(&self) -> BTreeMap<String, String> {
        self.failing.borrow().clone()
    }

    pub fn set_failing(&self, failing: BTreeMap<String, String>) {
        *self.failing.borrow_mut() = failing;
    }

    /// Remember a unit a start step started, as it is now, for [`Executor::settle_started`].
    fn watch(&self, unit: &str, did: &Did) -> anyhow::Result<()> {
        let Services::Act { manager, .. } = &self.services else {
            return Ok(());
        };
        if *did != Did::Ok {
            return Ok(()); // skipped, missing, masked, or a no-op job: nothing started
        }
        // the state the start read already, else one more read
        let state = match manager.started_state(unit) {
            Some(state) => state,
            None => manager
                .state(unit)
                .with_context(|| format!("failed to read the state of '{unit}' after its start"))?,
        };
        // a oneshot that ran is inactive with Result=success: nothing to watch; a unit
        // already down again (its process exited since the job ended) fails the watch
        if !(state.active_state == "inactive" && state.result == "success") {
            self.started.borrow_mut().push(Started::now(state));
        }
        Ok(())
    }

    /// Wait until every unit started since the last call has stayed up for the settle
    /// window, all watched together; `None` when none was started. A unit that was failing
    /// before is not watched: at the end of the window it must be no worse than it was
    /// (up, or starting or restarting again), see [`Executor::judge_failing`].
    pub fn settle_started(&self) -> anyhow::Result<Option<Settled>> {
        let started = std::mem::take(&mut *self.started.borrow_mut());
        let judged = std::mem::take(&mut *self.judged.borrow_mut());
        let Services::Act { manager, .. } = &self.services else {
            return Ok(None);
        };
        let t0 = Instant::now();
        if !started.is_empty() {
            manager.settle(&started, self.settle).map_err(|e| {
                with_note(
                    anyhow::Error::from(e),
                    "a service that exits or restarts right after it started runs a binary that does not work on this node (a flag, the cgroup driver, a library); its journal says why",
                )
            })?;
        } else if !judged.is_empty() {
            std::thread::sleep(self.settle);
        }
        if started.is_empty() && judged.is_empty() {
            return Ok(None);
        }
        self.judge_failing(*manager, &judged)?;
        Ok(Some(Settled {
            window: self.settle,
            took: t0.elapsed(),
            watched: started.into_iter().map(|s| s.state.unit).collect(),
            judged,
        }))
    }

    /// Each unit that was failing before the transaction and was started again must be no
    /// worse than it was: up, or (re)starting as before; `failed` or stopped is worse.
    fn judge_failing(&self, manager: &dyn ServiceManager, judged: &[String]) -> anyhow::Result<()> {
        for unit in judged {
            let before = self.failing.borrow().get(unit).cloned().unwrap_or_default();
            let now = manager
                .state(unit)
                .with_context(|| format!("failed to read the state of '{unit}' after its start"))?;
            let state = format!("{}/{}", now.active_state, now.sub_state);
            if no_worse(&now.active_state) {
                warn!(
                    "'{unit}' was {before} before the swap and is {state} {} s after its start: no worse than before (it was failing already, so it was not required to stay up); see `journalctl -u {unit}`",
                    self.settle.as_secs_f32()
                );
                continue;
            }
            return Err(with_note(
                anyhow!(
                    "'{unit}' was {before} before the swap, but is {state} (Result={}) {} s after its start: systemd no longer restarts it",
                    now.result,
                    self.settle.as_secs_f32()
                ),
                format!("see `journalctl -u {unit}` for why it fails"),
            ));
        }
        Ok(())
    }

    /// The diversions on the root ([`DivertCache`]: listed once, then kept up to date).
    pub fn diversions(&self) -> anyhow::Result<Vec<Diversion>> {
        Ok(self.diversions.list()?)
    }

    fn service(&self, stop: bool, unit: &str) -> anyhow::Result<Did> {
        let verb = if stop { "stop" } else { "start" };
        let (manager, forbidden) = match &self.services {
            Services::Skip(reason) => return Ok(Did::Skipped(reason.to_string())),
            Services::Act { manager, forbidden } => (manager, forbidden),
        };
        if forbidden.iter().any(|u| u == unit) {
            return Ok(Did::Skipped(format!(
                "{} forbids it (exit 101)",
                paths::POLICY_RC_D
            )));
        }
        let result = if stop {
            manager.stop(unit, self.timeout)
        } else {
            manager.start(unit, self.timeout)
        };
        let failing = self.failing.borrow().get(unit).cloned();
        let result = match (result, failing) {
            (Err(e), Some(before)) if !stop => match back_as_before(&e) {
                Some(now) => {
                    info!("note: '{unit}' was {before} before the swap and is {now} again right after its start: as before");
                    return Ok(Did::OkBecause(format!("{now} again, as before the swap")));
                }
                None => Err(e),
            },
            (result, _) => result,
        };
        let action = result.with_context(|| format!("failed to {verb} '{unit}'"))?;
        if let Some(note) = action.note(unit) {
            info!("note: {note}");
        }
        match action {
            ServiceAction::Done { job_result } if job_result == "done" => Ok(Did::Ok),
            ServiceAction::Done { job_result } => Ok(Did::OkBecause(format!("job {job_result}"))),
            ServiceAction::Missing => Ok(Did::Skipped("no such unit".to_string())),
            ServiceAction::Masked => Ok(Did::Skipped("masked".to_string())),
        }
    }

    /// Take a step.
    pub fn apply(&self, step: &Step) -> anyhow::Result<Did> {
        match step {
            Step::Preflight => Ok(Did::Ok),
            Step::Stop { unit } => self.service(true, unit),
            Step::Start { unit } => {
                let did = self.service(false, unit)?;
                if self.failing.borrow().contains_key(unit) {
                    if !matches!(did, Did::Skipped(_)) {
                        self.judged.borrow_mut().push(unit.clone());
                    }
                } else {
                    self.watch(unit, &did)?;
                }
                Ok(did)
            }
            Step::Divert {
                path, divert_to, ..
            } => {
                let added = self
                    .diversions
                    .add(path, divert_to)
                    .with_context(|| format!("failed to divert {}", self.root.describe(path)))?;
                Ok(match added {
                    Added::Added => Did::Ok,
                    Added::AlreadyThere => Did::OkBecause("already diverted".into()),
                })
            }
            Step::Stage {
                path,
                payload,
                sha256,
                ..
            } => {
                // a previous payload kept aside by an earlier run whose cleanup was cut
                // short: never to be put back by this transaction
                fs::remove_file_if_exists(&self.aside_of(path))?;
                self.stage(path, payload, sha256)?;
                Ok(Did::Ok)
            }
            Step::Place {
                path,
                divert_to,
                payload,
                sha256,
                previous,
                ..
            } => self.place(path, divert_to, payload, sha256, previous.is_some()),
            Step::Unplace {
                path,
                divert_to,
                ours,
                foreign_to,
                ..
            } => self.unplace(path, divert_to, ours, foreign_to.as_deref()),
            Step::Undivert {
                path,
                divert_to,
                original,
                ..
            } => self.undivert(path, divert_to, original.as_ref()),
            Step::Record { state, stamp, .. } => {
                let mut state = match state {
                    Some(s) => s.clone(),
                    None => self.state_without_undiverted()?,
                };
                let now = super::now();
                for name in stamp {
                    if let Some(target) = state.targets.get_mut(name) {
                        target.swapped_at = Some(now);
                    }
                }
                state.save(&self.root)?;
                Ok(Did::Ok)
            }
        }
    }

    /// Undo a step (also one that was only begun).
    pub fn undo(&self, step: &Step) -> anyhow::Result<Did> {
        match step {
            Step::Preflight | Step::Record { before: None, .. } => Ok(Did::Ok),
            Step::Record {
                before: Some(before),
                ..
            } => {
                before.save(&self.root)?;
                Ok(Did::OkBecause("the state before is back".into()))
            }
            Step::Stage { path, .. } => {
                let removed = fs::remove_file_if_exists(&self.temp_of(path))?;
                Ok(Did::OkBecause(
                    if removed {
                        "removed the staged copy"
                    } else {
                        "nothing staged"
                    }
                    .into(),
                ))
            }
            Step::Stop { unit } => self.service(false, unit),
            Step::Start { unit } => self.service(true, unit),
            Step::Divert {
                path,
                divert_to,
                original,
                ..
            } => self.undo_divert(path, divert_to, original),
            Step::Place {
                path,
                divert_to,
                sha256,
                original,
                previous,
                ..
            } => self.undo_place(path, divert_to, sha256, original, previous.as_ref()),
            Step::Unplace {
                path,
                divert_to,
                foreign_to: Some(foreign_to),
                ..
            } if self.diversions.held(path, divert_to)?
                && !self.exists(path)
                && self.exists(foreign_to) =>
            {
                self.move_no_clobber(foreign_to, path)?;
                Ok(Did::OkBecause(format!(
                    "put back the file moved to '{}'",
                    foreign_to.display()
                )))
            }
            Step::Unplace {
                path,
                divert_to,
                payload,
                ..
            } => match payload {
                Some((payload, sha256)) if self.diversions.held(path, divert_to)? => {
                    if self.exists(path) {
                        Ok(Did::OkBecause("already in place".into()))
                    } else {
                        self.place(path, divert_to, payload, sha256, false)
                    }
                }
                _ => Ok(Did::Skipped("nothing to put back".into())),
            },
            Step::Undivert {
                path, divert_to, ..
            } => {
                let added = self.diversions.add(path, divert_to).with_context(|| {
                    format!("failed to divert {} again", self.root.describe(path))
                })?;
                Ok(match added {
                    Added::Added => Did::Ok,
                    Added::AlreadyThere => Did::OkBecause("still diverted".into()),
                })
            }
        }
    }
}

/// Whether a unit in `active_state` is no worse than one that was failing (restarting):
/// up, or starting or restarting again.
fn no_worse(active_state: &str) -> bool {
    matches!(active_state, "active" | "activating" | "reloading")
}

/// A start that "failed" only because the unit went back to restarting, as it was before:
/// its state (`activating/auto-restart`), else `None`.
fn back_as_before(err: &SystemdError) -> Option<String> {
    match err {
        SystemdError::NotActive {
            active_state,
            sub_state,
            ..
        }
        | SystemdError::JobFailed {
            active_state,
            sub_state,
            ..
        } if no_worse(active_state) => Some(format!("{active_state}/{sub_state}")),
        _ => None,
    }
}
