//! The transaction: an ordered list of [`Step`]s, each with an apply and an undo, journalled
//! in `R/var/lib/k8s-nokmem/journal.json` (written atomically BEFORE each step is taken;
//! the previous step is recorded done in the same write) and rolled back in reverse on any
//! failure.
//!
//! install: preflight, stage (copy the payload next to each target while services still
//! run), stop, divert, place (a rename), start (reverse order), record `state.json`.
//! remove: preflight, stop, unplace, undivert, start, record.
//!
//! An upgrade (a new payload over one we placed) plans no divert step for a path we already
//! divert, and its place step first hard-links the previous payload aside: a rollback puts
//! it back and keeps its record in `state.json`, so a failed upgrade leaves the node on the
//! previous payload, never on the kmem-enabling originals. The aside copy is deleted once
//! the transaction is committed.
//!
//! After an interruption (kill -9, power loss) the next run finds the journal and resolves
//! it toward what the node ran before, before doing what it was asked:
//! - an `install` journal is undone: every begun step is undone in reverse. Undo is always
//!   possible, because the originals never leave the node (dpkg keeps them at `.distrib`)
//!   and an upgrade's previous payload is kept aside until it commits, while finishing
//!   could need a payload that changed since (an interrupted upgrade);
//! - a `remove` journal is finished: its steps are applied again from the start. They are
//!   idempotent and need only the originals, not the payload (which `apt remove` may have
//!   deleted meanwhile).
//!
//! Either way every target the transaction touched is then consistent (its original in
//! place and no diversion, or for an upgrade its previous payload; its services started)
//! and the command runs in full; an `install` then swaps again. Every apply and undo checks the node first, so running one twice, a
//! step that was only begun, or one that never ran, is harmless.
//!
//! Fault injection (test-only): `K8S_NOKMEM_FAILPOINT=<step>[:error|:abort]`, `<step>`
//! being a 1-based index as in the log (`[3/12]`) or a step name (`divert`: the first such
//! step). `error` makes that step fail (tests rollback); `abort` calls
//! `std::process::abort()` right after the journal entry for that step is written (kill
//! -9, power loss). It is always compiled (not behind a cargo feature), so that
//! the tests (`cargo test --release` in CI) exercise the very binary that ships; it costs
//! one environment lookup, acts only when the variable is set (root's environment), and
//! logs a warning when armed.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use log::{debug, error, info, warn};

use crate::divert::{Added, Diversion, DpkgDivert, Removed};
use crate::notes::with_note;
use crate::paths::{self, Root};
use crate::policy::SkipReason;
use crate::systemd::{ServiceAction, ServiceManager, Started};
use crate::targets::{self, Original, State};

/// The journal of the transaction in progress, in the state directory.
pub const JOURNAL_FILE: &str = "journal.json";
/// The journal of the last finished transaction, with its result.
pub const LAST_FILE: &str = "last-transaction.json";
/// The fault-injection variable (see the module docs).
pub const FAILPOINT_ENV: &str = "K8S_NOKMEM_FAILPOINT";

/// One step of a transaction. Everything its apply and undo need is in it, so that a later
/// run can finish or undo it from the journal alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Checks only; nothing to undo.
    Preflight,
    Stop {
        unit: String,
    },
    /// `dpkg-divert --add --rename`.
    Divert {
        target: String,
        path: PathBuf,
        divert_to: PathBuf,
        original: Original,
    },
    /// Copy the payload next to `path` (a temp file, checked by sha256 while copied,
    /// fsynced) before the services stop, so that the swap itself is only renames.
    Stage {
        target: String,
        path: PathBuf,
        payload: PathBuf,
        sha256: String,
    },
    /// Rename the staged payload onto `path` (copying it first if it was not staged). On
    /// an upgraded target (`previous`: what `path` held, already diverted by us) that file
    /// is first hard-linked aside (`.NAME.k8s-nokmem-prev`), and undo puts it back, so that
    /// a failed upgrade leaves the node on the previous payload, not the original.
    Place {
        target: String,
        path: PathBuf,
        divert_to: PathBuf,
        payload: PathBuf,
        sha256: String,
        original: Original,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<Original>,
    },
    Start {
        unit: String,
    },
    /// Delete our file at `path` (one of `ours` by sha256), before the diversion goes. A
    /// file we did not place is moved to `foreign_to` instead (never deleted, never
    /// clobbering), so that the diversion can go and the original come back.
    Unplace {
        target: String,
        path: PathBuf,
        divert_to: PathBuf,
        ours: Vec<String>,
        /// The payload to put back when this is undone (a failed remove).
        payload: Option<(PathBuf, String)>,
        /// Where a file that is not ours goes ([`foreign_aside`]); chosen when planned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        foreign_to: Option<PathBuf>,
    },
    /// `dpkg-divert --remove --rename`, then check the original is back.
    Undivert {
        target: String,
        path: PathBuf,
        divert_to: PathBuf,
        original: Option<Original>,
    },
    /// Write `state.json`: this state, or (None) the current one minus the targets that are
    /// no longer diverted. Undo writes `before` (the state when the transaction was planned).
    Record {
        state: Option<State>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<State>,
    },
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::Stop { .. } => "stop",
            Step::Divert { .. } => "divert",
            Step::Stage { .. } => "stage",
            Step::Place { .. } => "place",
            Step::Start { .. } => "start",
            Step::Unplace { .. } => "unplace",
            Step::Undivert { .. } => "undivert",
            Step::Record { .. } => "record",
        }
    }

    /// `divert '/usr/bin/kubelet'`, `stop 'kubelet.service'`, `record`.
    pub fn label(&self) -> String {
        match self {
            Step::Preflight => "preflight".to_string(),
            Step::Record { .. } => format!("record '{}/{}'", paths::STATE_DIR, targets::STATE_FILE),
            Step::Stop { unit } | Step::Start { unit } => format!("{} '{unit}'", self.name()),
            Step::Divert { path, .. }
            | Step::Stage { path, .. }
            | Step::Place { path, .. }
            | Step::Unplace { path, .. }
            | Step::Undivert { path, .. } => format!("{} '{}'", self.name(), path.display()),
        }
    }

    /// `divert /usr/bin/kubelet`: the label without quotes, for use inside quotes.
    pub fn plain(&self) -> String {
        self.label().replace('\'', "")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Forward,
    RollingBack,
    Recovering,
    Done,
    RolledBack,
    RollbackFailed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Forward => "in progress",
            Phase::RollingBack => "rolling back",
            Phase::Recovering => "being recovered",
            Phase::Done => "done",
            Phase::RolledBack => "rolled back",
            Phase::RollbackFailed => "rollback failed",
        })
    }
}

/// The journal file's content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Journal {
    pub version: u32,
    /// `install` or `remove`.
    pub command: String,
    pub pid: u32,
    /// Seconds since the epoch.
    pub started: u64,
    pub steps: Vec<Step>,
    /// `steps[..begun]` were begun.
    pub begun: usize,
    /// `steps[..done]` finished.
    pub done: usize,
    pub phase: Phase,
    /// The failure, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Journal {
    pub fn new(command: &str, steps: Vec<Step>) -> Journal {
        Journal {
            version: 1,
            command: command.to_string(),
            pid: std::process::id(),
            started: now(),
            steps,
            begun: 0,
            done: 0,
            phase: Phase::Forward,
            error: None,
        }
    }

    pub fn path(root: &Root) -> PathBuf {
        root.join(Path::new(paths::STATE_DIR).join(JOURNAL_FILE))
    }

    pub fn last_path(root: &Root) -> PathBuf {
        root.join(Path::new(paths::STATE_DIR).join(LAST_FILE))
    }

    /// The interrupted transaction's journal, if any.
    pub fn load(root: &Root) -> anyhow::Result<Option<Journal>> {
        Self::load_from(&Self::path(root))
    }

    /// The last finished transaction, if recorded.
    pub fn load_last(root: &Root) -> anyhow::Result<Option<Journal>> {
        Self::load_from(&Self::last_path(root))
    }

    fn load_from(path: &Path) -> anyhow::Result<Option<Journal>> {
        let text = match paths::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let journal = serde_json::from_str(&text)
            .with_context(|| format!("failed to parse journal '{}'", path.display()))
            .map_err(|e| {
                with_note(
                    e,
                    format!(
                        "move '{}' away after checking the node with `k8s-nokmem status`",
                        path.display()
                    ),
                )
            })?;
        Ok(Some(journal))
    }

    /// Write the journal atomically (temp file, fsync, rename, fsync directory).
    pub fn save(&self, root: &Root) -> anyhow::Result<()> {
        write_json(&Self::path(root), self)
    }

    /// Keep this journal as the last transaction and delete the live one.
    fn finish(&mut self, root: &Root, phase: Phase) -> anyhow::Result<()> {
        self.phase = phase;
        write_json(&Self::last_path(root), self)?;
        paths::remove_file_if_exists(&Self::path(root))?;
        paths::sync_dir(&root.join(paths::STATE_DIR))?;
        Ok(())
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .with_context(|| format!("failed to encode '{}'", path.display()))?;
    text.push('\n');
    paths::atomic_write_bytes(path, 0o644, text.as_bytes())?;
    Ok(())
}

/// Where remove moves a file it did not place: `<path>.k8s-nokmem-foreign-<UTC time>`.
pub fn foreign_aside(path: &Path, secs: u64) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".k8s-nokmem-foreign-{}", utc_stamp(secs)));
    PathBuf::from(name)
}

/// `20261130T221500Z` for seconds since the epoch (civil date from days: H. Hinnant).
fn utc_stamp(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    Error,
    Abort,
}

/// A parsed `K8S_NOKMEM_FAILPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failpoint {
    /// 1-based index, or a step name.
    pub at: FailAt,
    pub mode: FailMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailAt {
    Index(usize),
    Name(String),
}

impl Failpoint {
    /// `3`, `divert`, `place:abort`, `5:error` (pure).
    pub fn parse(spec: &str) -> Option<Failpoint> {
        let (at, mode) = match spec.trim().rsplit_once(':') {
            Some((at, "abort" | "panic")) => (at, FailMode::Abort),
            Some((at, "error")) => (at, FailMode::Error),
            Some(_) => return None,
            None => (spec.trim(), FailMode::Error),
        };
        if at.is_empty() {
            return None;
        }
        let at = match at.parse::<usize>() {
            Ok(0) => return None,
            Ok(i) => FailAt::Index(i),
            Err(_) => FailAt::Name(at.to_string()),
        };
        Some(Failpoint { at, mode })
    }

    /// From the environment; a set but unparsable value is an error.
    pub fn from_env() -> anyhow::Result<Option<Failpoint>> {
        let Some(spec) = std::env::var_os(FAILPOINT_ENV) else {
            return Ok(None);
        };
        let spec = spec.to_string_lossy();
        if spec.is_empty() {
            return Ok(None);
        }
        let fp = Failpoint::parse(&spec).ok_or_else(|| {
            anyhow!("{FAILPOINT_ENV}='{spec}' is not <step index or name>[:error|:abort]")
        })?;
        warn!("test failpoint armed: {FAILPOINT_ENV}={spec}");
        Ok(Some(fp))
    }

    /// Index (0-based) of the step it fires at.
    fn index_in(&self, steps: &[Step]) -> Option<usize> {
        match &self.at {
            FailAt::Index(i) => Some(i - 1).filter(|i| *i < steps.len()),
            FailAt::Name(n) => steps.iter().position(|s| s.name() == n),
        }
    }
}

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

/// The node a transaction acts on: files and diversions under a root, and services.
pub struct Node<'a> {
    pub root: Root,
    pub divert: DpkgDivert,
    pub services: Services<'a>,
    pub timeout: Duration,
    /// How long the services this run started must stay up (see [`Node::settle_started`]).
    pub settle: Duration,
    /// The units this run's start steps started, as they were right after their job.
    started: RefCell<Vec<Started>>,
    /// Temp files this run staged (a leftover of another run is never renamed into place).
    staged: RefCell<Vec<PathBuf>>,
    /// See [`Node::diversions`].
    diversions: RefCell<Option<Vec<Diversion>>>,
}

impl<'a> Node<'a> {
    pub fn new(root: &Root, services: Services<'a>, timeout: Duration) -> Node<'a> {
        Node {
            root: root.clone(),
            divert: DpkgDivert::new(root),
            services,
            timeout,
            settle: crate::config::DEFAULT_SETTLE,
            started: RefCell::new(Vec::new()),
            staged: RefCell::new(Vec::new()),
            diversions: RefCell::new(None),
        }
    }

    /// Watch the services started since the last call for `settle` (`[services] settle`).
    pub fn with_settle(mut self, settle: Duration) -> Node<'a> {
        self.settle = settle;
        self
    }

    /// Remember a unit a start step started, as it is now, for [`Node::settle_started`].
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
    /// window, all watched together; `None` when none was started.
    pub fn settle_started(&self) -> anyhow::Result<Option<Duration>> {
        let started = std::mem::take(&mut *self.started.borrow_mut());
        let Services::Act { manager, .. } = &self.services else {
            return Ok(None);
        };
        if started.is_empty() {
            return Ok(None);
        }
        let t0 = Instant::now();
        manager.settle(&started, self.settle).map_err(|e| {
            with_note(
                anyhow::Error::from(e),
                "a service that exits or restarts right after it started runs a binary that does not work on this node (a flag, the cgroup driver, a library); its journal says why",
            )
        })?;
        Ok(Some(t0.elapsed()))
    }

    /// The diversions, listed once and then kept up to date by our own changes (we hold
    /// the lock; dpkg runs maintainer scripts one at a time), so that the steps between
    /// the stops and the starts spawn no `dpkg-divert --list`.
    pub fn diversions(&self) -> anyhow::Result<Vec<Diversion>> {
        if let Some(d) = self.diversions.borrow().as_ref() {
            return Ok(d.clone());
        }
        let listed = self.divert.list()?;
        *self.diversions.borrow_mut() = Some(listed.clone());
        Ok(listed)
    }

    fn held(&self, path: &Path, divert_to: &Path) -> anyhow::Result<bool> {
        let all = self.diversions()?;
        let current = all.iter().find(|d| d.path == path);
        Ok(DpkgDivert::check_ours(current, path, divert_to)?)
    }

    fn div_add(&self, path: &Path, divert_to: &Path) -> anyhow::Result<Added> {
        if self.held(path, divert_to)? {
            return Ok(Added::AlreadyThere);
        }
        let result = self.divert.add(path, divert_to);
        let mut cache = self.diversions.borrow_mut();
        match (&result, cache.as_mut()) {
            (Ok(()), Some(list)) => list.push(Diversion {
                path: path.to_path_buf(),
                divert_to: divert_to.to_path_buf(),
                package: Some(paths::PACKAGE.to_string()),
            }),
            _ => *cache = None,
        }
        result?;
        Ok(Added::Added)
    }

    fn div_remove(&self, path: &Path, divert_to: &Path) -> anyhow::Result<Removed> {
        if !self.held(path, divert_to)? {
            return Ok(Removed::NotThere);
        }
        let result = self.divert.remove(path, divert_to);
        let mut cache = self.diversions.borrow_mut();
        match (&result, cache.as_mut()) {
            (Ok(()), Some(list)) => list.retain(|d| d.path != path),
            _ => *cache = None,
        }
        result?;
        Ok(Removed::Removed)
    }

    fn exists(&self, abs: &Path) -> bool {
        fs::symlink_metadata(self.root.join(abs)).is_ok()
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
                self.watch(unit, &did)?;
                Ok(did)
            }
            Step::Divert {
                path, divert_to, ..
            } => {
                let added = self
                    .div_add(path, divert_to)
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
                self.remove_synced(&self.aside_of(path))?;
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
            Step::Record { state, .. } => {
                let state = match state {
                    Some(s) => s.clone(),
                    None => self.state_without_undiverted()?,
                };
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
                let removed = paths::remove_file_if_exists(&self.temp_of(path))?;
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
            } if self.held(path, divert_to)? && !self.exists(path) && self.exists(foreign_to) => {
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
                Some((payload, sha256)) if self.held(path, divert_to)? => {
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
                let added = self.div_add(path, divert_to).with_context(|| {
                    format!("failed to divert {} again", self.root.describe(path))
                })?;
                Ok(match added {
                    Added::Added => Did::Ok,
                    Added::AlreadyThere => Did::OkBecause("still diverted".into()),
                })
            }
        }
    }

    fn place(
        &self,
        path: &Path,
        divert_to: &Path,
        payload: &Path,
        sha256: &str,
        keep_previous: bool,
    ) -> anyhow::Result<Did> {
        let shown = self.root.describe(path);
        if !self.held(path, divert_to)? {
            bail!("refusing to write {shown}: it is not diverted by k8s-nokmem");
        }
        let dst = self.root.join(path);
        let tmp = self.temp_of(path);
        let staged = self.staged.borrow().contains(&tmp) && tmp.exists();
        if !staged {
            if fs::symlink_metadata(&dst).is_ok_and(|m| m.is_file())
                && paths::sha256_file(&dst)? == sha256
            {
                return Ok(Did::OkBecause("already in place".into()));
            }
            self.stage(path, payload, sha256)?;
        }
        let kept = keep_previous && self.keep_aside(path)?;
        paths::rename(&tmp, &dst)
            .with_context(|| format!("failed to put the payload at {shown}"))?;
        self.staged.borrow_mut().retain(|t| *t != tmp);
        debug!("placed '{}' -> '{}'", tmp.display(), dst.display());
        Ok(if kept {
            Did::OkBecause("the previous payload kept aside".into())
        } else {
            Did::Ok
        })
    }

    /// Where an upgrade keeps the previous payload of `path` until it commits.
    fn aside_of(&self, path: &Path) -> PathBuf {
        let dst = self.root.join(path);
        let name = dst
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dst.with_file_name(format!(".{name}.k8s-nokmem-prev"))
    }

    /// Hard-link what is at `path` to its aside name (a rename if the file system cannot
    /// link), replacing an older aside; directory fsynced. False when `path` is empty.
    fn keep_aside(&self, path: &Path) -> anyhow::Result<bool> {
        let (dst, aside) = (self.root.join(path), self.aside_of(path));
        if !self.exists(path) {
            return Ok(false);
        }
        self.remove_synced(&aside)?;
        if let Err(e) = fs::hard_link(&dst, &aside) {
            debug!(
                "cannot link '{}' to '{}' ({e}): renaming it",
                dst.display(),
                aside.display()
            );
            paths::rename(&dst, &aside).context("failed to keep the previous payload")?;
        }
        if let Some(dir) = aside.parent() {
            paths::sync_dir(dir)?;
        }
        debug!("kept '{}' as '{}'", dst.display(), aside.display());
        Ok(true)
    }

    /// Put the previous payload kept aside back at `path` (replacing what is there, in one
    /// rename). None when there is nothing aside.
    fn restore_aside(&self, path: &Path, previous: &Original) -> anyhow::Result<Option<Did>> {
        use std::os::unix::fs::MetadataExt;
        let (dst, aside) = (self.root.join(path), self.aside_of(path));
        let Ok(kept) = fs::symlink_metadata(&aside) else {
            return Ok(None);
        };
        let now = Original::probe("previous", &aside)?;
        if !previous.same_as(&now) {
            warn!(
                "'{}' is {}, not the previous payload ({}): left alone",
                aside.display(),
                now.describe(),
                previous.describe()
            );
            return Ok(None);
        }
        // a rename between two links of one file does nothing: then drop the extra link
        let same = fs::symlink_metadata(&dst)
            .is_ok_and(|m| m.dev() == kept.dev() && m.ino() == kept.ino());
        if same {
            paths::remove_file_if_exists(&aside)?;
        } else {
            paths::rename(&aside, &dst).with_context(|| {
                format!(
                    "failed to put the previous payload back at {}",
                    self.root.describe(path)
                )
            })?;
        }
        if let Some(dir) = dst.parent() {
            paths::sync_dir(dir)?;
        }
        Ok(Some(Did::OkBecause("the previous payload is back".into())))
    }

    /// Remove a file if it exists, then fsync its directory.
    fn remove_synced(&self, file: &Path) -> anyhow::Result<()> {
        if paths::remove_file_if_exists(file)? {
            if let Some(dir) = file.parent() {
                paths::sync_dir(dir)?;
            }
        }
        Ok(())
    }

    /// Copy the payload to `path`'s temp file, hashing while copying; a mismatch with the
    /// MANIFEST removes the copy and fails.
    fn stage(&self, path: &Path, payload: &Path, sha256: &str) -> anyhow::Result<()> {
        let (src, tmp) = (self.root.join(payload), self.temp_of(path));
        let got = targets::copy_hashed(&src, &tmp, targets::PAYLOAD_MODE).with_context(|| {
            format!(
                "failed to stage the payload next to {}",
                self.root.describe(path)
            )
        })?;
        if got != sha256 {
            paths::remove_file_if_exists(&tmp)?;
            bail!(
                "the copy of {} has sha256 {}, the MANIFEST says {}",
                self.root.describe(payload),
                targets::short(&got),
                targets::short(sha256)
            );
        }
        self.staged.borrow_mut().push(tmp);
        Ok(())
    }

    /// The staged copy of the payload next to `path`: a fixed name, so that an undo after
    /// a crash finds it; `targets::copy_hashed` creates it afresh, never through a link.
    fn temp_of(&self, path: &Path) -> PathBuf {
        let dst = self.root.join(path);
        let name = dst
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dst.with_file_name(format!(".{name}.k8s-nokmem-new"))
    }

    fn remove_ours(&self, path: &Path) -> anyhow::Result<()> {
        let dst = self.root.join(path);
        paths::remove_file_if_exists(&dst)?;
        if let Some(dir) = dst.parent() {
            paths::sync_dir(dir)?;
        }
        Ok(())
    }

    fn undo_place(
        &self,
        path: &Path,
        divert_to: &Path,
        sha256: &str,
        original: &Original,
        previous: Option<&Original>,
    ) -> anyhow::Result<Did> {
        paths::remove_file_if_exists(&self.temp_of(path))?;
        if let Some(previous) = previous {
            if let Some(did) = self.restore_aside(path, previous)? {
                return Ok(did);
            }
        }
        if !self.held(path, divert_to)? || !self.exists(path) {
            return Ok(Did::OkBecause("nothing placed".into()));
        }
        // The rename into place is atomic: anything but the payload was not placed by this
        // step (the original not yet renamed away, or an upgrade's previous payload).
        let now = Original::probe("target", &self.root.join(path))?;
        let is_payload = matches!(&now, Original::File { sha256: s, .. } if s == sha256);
        if !is_payload {
            let aside = self.exists(divert_to) || *original == Original::Missing;
            return Ok(Did::OkBecause(
                if !aside && original.same_as(&now) {
                    "the original is still there"
                } else {
                    "not placed: kept"
                }
                .into(),
            ));
        }
        self.remove_ours(path)?;
        Ok(Did::OkBecause("removed ours".into()))
    }

    fn undo_divert(
        &self,
        path: &Path,
        divert_to: &Path,
        original: &Original,
    ) -> anyhow::Result<Did> {
        let shown = self.root.describe(path);
        if self.held(path, divert_to)? {
            // A diversion this step added left nothing at `path` (dpkg-divert renamed the
            // original away and place's undo, which runs first, removed the payload). A file
            // there with the original aside means the diversion predates the transaction:
            // an older helper journalled a divert step for an upgrade. That divert added
            // nothing, so its undo removes nothing.
            if self.exists(path) && self.exists(divert_to) {
                return Ok(Did::OkBecause(
                    "diverted before this transaction: kept".into(),
                ));
            }
            self.div_remove(path, divert_to)
                .with_context(|| format!("failed to remove the diversion of {shown}"))?;
            return Ok(Did::Ok);
        }
        // Not (or no longer) diverted: if dpkg-divert was cut short between its rename and
        // its database write, the original sits at `.distrib` with nothing at `path`.
        if *original != Original::Missing && !self.exists(path) && self.exists(divert_to) {
            let (from, to) = (self.root.join(divert_to), self.root.join(path));
            paths::rename(&from, &to)
                .with_context(|| format!("failed to move '{}' back", from.display()))?;
            return Ok(Did::OkBecause("moved the original back".into()));
        }
        Ok(Did::OkBecause("not diverted".into()))
    }

    fn unplace(
        &self,
        path: &Path,
        divert_to: &Path,
        ours: &[String],
        foreign_to: Option<&Path>,
    ) -> anyhow::Result<Did> {
        paths::remove_file_if_exists(&self.temp_of(path))?;
        self.remove_synced(&self.aside_of(path))?;
        if !self.held(path, divert_to)? {
            return Ok(Did::OkBecause("not diverted".into()));
        }
        match Original::probe("target", &self.root.join(path))? {
            Original::Missing => Ok(Did::OkBecause("nothing there".into())),
            Original::File { sha256, .. } if ours.contains(&sha256) => {
                self.remove_ours(path)?;
                Ok(Did::Ok)
            }
            other => {
                // someone else's file (a hand-copied hotfix): keeping it there would keep
                // the diversion, and every later runc/kubelet upgrade would land aside
                let to = foreign_to
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| foreign_aside(path, now()));
                self.move_no_clobber(path, &to).map_err(|e| {
                    with_note(
                        e,
                        format!(
                            "move {} away by hand and run `k8s-nokmem remove` again",
                            self.root.describe(path)
                        ),
                    )
                })?;
                warn!(
                    "{} was {}, not a payload k8s-nokmem placed: moved it to {} so that the original can come back",
                    self.root.describe(path),
                    other.describe(),
                    self.root.describe(&to)
                );
                Ok(Did::OkBecause(format!(
                    "not ours: moved to '{}'",
                    to.display()
                )))
            }
        }
    }

    /// Rename `from` to `to` (in-system paths, one directory) without replacing anything at
    /// `to`: a hard link, then the unlink of `from`, then a directory fsync. Finishes a move
    /// that was cut short between the two (both names on one file).
    fn move_no_clobber(&self, from: &Path, to: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let (src, dst) = (self.root.join(from), self.root.join(to));
        if let Err(e) = fs::hard_link(&src, &dst) {
            let same = match (fs::symlink_metadata(&src), fs::symlink_metadata(&dst)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                return Err(anyhow::Error::new(e).context(format!(
                    "failed to move {} to {} (without replacing anything there)",
                    self.root.describe(from),
                    self.root.describe(to)
                )));
            }
        }
        paths::remove_file_if_exists(&src)?;
        if let Some(dir) = src.parent() {
            paths::sync_dir(dir)?;
        }
        Ok(())
    }

    fn undivert(
        &self,
        path: &Path,
        divert_to: &Path,
        original: Option<&Original>,
    ) -> anyhow::Result<Did> {
        let shown = self.root.describe(path);
        if self.held(path, divert_to)? {
            // both present: the path holds someone else's file and the original is aside.
            // (Path present, nothing aside: the original was renamed back by a cut-short
            // dpkg-divert, or there never was one; removing the diversion is then right.)
            // (unplace moved anything there aside: this is someone writing meanwhile)
            if self.exists(path) && self.exists(divert_to) {
                return Err(with_note(
                    anyhow!(
                        "cannot remove the diversion of {shown}: the path holds a file that is not k8s-nokmem's, and the original is at {}",
                        self.root.describe(divert_to)
                    ),
                    format!(
                        "move {shown} away and run `k8s-nokmem remove` again"
                    ),
                ));
            }
            match self
                .div_remove(path, divert_to)
                .with_context(|| format!("failed to remove the diversion of {shown}"))?
            {
                Removed::Removed | Removed::NotThere => {}
            }
        } else if original.is_some_and(|o| *o != Original::Missing)
            && !self.exists(path)
            && self.exists(divert_to)
        {
            let (from, to) = (self.root.join(divert_to), self.root.join(path));
            paths::rename(&from, &to)
                .with_context(|| format!("failed to move '{}' back", from.display()))?;
        }
        let Some(original) = original else {
            return Ok(Did::OkBecause("original not recorded: not checked".into()));
        };
        let now = Original::probe("target", &self.root.join(path))?;
        if original.same_as(&now) {
            Ok(Did::OkBecause("original back".into()))
        } else {
            warn!(
                "{shown} is now {}, not {} as recorded at install: a package upgrade while it \
                 was diverted replaces it; check with `dpkg -S {}`",
                now.describe(),
                original.describe(),
                path.display()
            );
            Ok(Did::OkBecause(
                "original differs from the recorded one".into(),
            ))
        }
    }

    /// The current state minus the targets we no longer divert.
    fn state_without_undiverted(&self) -> anyhow::Result<State> {
        let mut state = State::load(&self.root).unwrap_or_else(|e| {
            warn!("{e}: rewriting it");
            State::default()
        });
        let ours: Vec<_> = self
            .diversions()?
            .into_iter()
            .filter(|d| d.is_ours())
            .collect();
        state
            .targets
            .retain(|_, t| ours.iter().any(|d| d.path == t.path));
        Ok(state)
    }
}

/// Run a planned transaction (`steps[0]` must be [`Step::Preflight`], already checked;
/// `preflight` is how long that took). On failure everything begun is undone in reverse.
pub fn run(
    node: &Node<'_>,
    command: &str,
    steps: Vec<Step>,
    preflight: Duration,
    failpoint: Option<&Failpoint>,
) -> anyhow::Result<()> {
    let n = steps.len();
    let fail_at = failpoint.and_then(|f| f.index_in(&steps).map(|i| (i, f.mode)));
    let mut journal = Journal::new(command, steps);
    // list the diversions now, before any service stops (see Node::diversions)
    node.diversions()
        .context("failed to list diversions; nothing was changed")?;
    for i in 0..n {
        journal.begun = i + 1;
        journal.done = i;
        let started = Instant::now();
        let step = journal.steps[i].clone();
        if let Err(err) = journal.save(&node.root) {
            let err = err.context("failed to write the journal");
            error!("{command} [{}/{n}] {}: FAILED (0 ms)", i + 1, step.label());
            return Err(fail(node, command, &mut journal, i, err));
        }
        let result = match fail_at {
            Some((at, FailMode::Abort)) if at == i => {
                error!(
                    "failpoint: aborting at step {}/{n} '{}'",
                    i + 1,
                    step.label()
                );
                std::process::abort();
            }
            Some((at, FailMode::Error)) if at == i => Err(anyhow!(
                "failpoint {FAILPOINT_ENV} fired at step {}/{n}",
                i + 1
            )),
            _ => node.apply(&step),
        };
        let ms = if i == 0 {
            preflight + started.elapsed()
        } else {
            started.elapsed()
        }
        .as_millis();
        // after the last start of a run of starts: the started services must stay up
        let last_start = matches!(step, Step::Start { .. })
            && !matches!(journal.steps.get(i + 1), Some(Step::Start { .. }));
        let result = match result {
            Ok(did) if last_start => match node.settle_started() {
                Ok(Some(took)) => {
                    info!(
                        "{command} [{}/{n}] {}: {did} ({ms} ms); every started service stayed up for {} s ({} ms)",
                        i + 1,
                        step.label(),
                        node.settle.as_secs_f32(),
                        took.as_millis()
                    );
                    continue;
                }
                Ok(None) => Ok(did),
                Err(e) => Err(e.context("a service did not stay up after it started")),
            },
            other => other,
        };
        match result {
            Ok(did) => info!(
                "{command} [{}/{n}] {}: {did} ({ms} ms)",
                i + 1,
                step.label()
            ),
            Err(err) => {
                error!(
                    "{command} [{}/{n}] {}: FAILED ({ms} ms)",
                    i + 1,
                    step.label()
                );
                return Err(fail(node, command, &mut journal, i, err));
            }
        }
    }
    // the node is done; a journal that cannot be closed is resolved by the next run
    journal.done = n;
    if let Err(e) = journal
        .save(&node.root)
        .and_then(|_| journal.finish(&node.root, Phase::Done))
    {
        warn!("failed to close the journal ({e:#}); the next run will redo this transaction");
        return Ok(());
    }
    // committed: the previous payloads kept for a rollback go (a leftover is removed by
    // the next run's stage or by remove)
    for step in &journal.steps {
        if let Step::Place {
            path,
            previous: Some(_),
            ..
        } = step
        {
            if let Err(e) = node.remove_synced(&node.aside_of(path)) {
                warn!("failed to delete the previous payload kept aside: {e:#}");
            }
        }
    }
    Ok(())
}

/// What a rolled-back transaction left the node running, for the error.
fn rolled_back_to(journal: &Journal) -> String {
    if journal.command == "remove" {
        return "k8s-nokmem's binaries are back in place".into();
    }
    let (mut previous, mut original) = (Vec::new(), Vec::new());
    for step in &journal.steps {
        if let Step::Place {
            target,
            previous: p,
            ..
        } = step
        {
            if p.is_some() {
                previous.push(target.as_str());
            } else {
                original.push(target.as_str());
            }
        }
    }
    match (previous.is_empty(), original.is_empty()) {
        (true, _) => "the original binaries are back in place".into(),
        (false, true) => format!(
            "the node runs the previous payload again ({})",
            previous.join(", ")
        ),
        (false, false) => format!(
            "the node runs the previous payload again ({}) and the original {}",
            previous.join(", "),
            original.join(", ")
        ),
    }
}

/// Roll back after step `i` failed with `err`; the error to report.
fn fail(
    node: &Node<'_>,
    command: &str,
    journal: &mut Journal,
    i: usize,
    err: anyhow::Error,
) -> anyhow::Error {
    let n = journal.steps.len();
    let label = journal.steps[i].plain();
    journal.phase = Phase::RollingBack;
    journal.error = Some(format!("{err:#}"));
    let _ = journal.save(&node.root);
    let head = format!("{command} step {}/{n} '{label}' failed", i + 1);
    match rollback(node, journal) {
        Ok(undone) => {
            let _ = journal.finish(&node.root, Phase::RolledBack);
            let what = rolled_back_to(journal);
            let services = if undone.services_failed.is_empty() {
                String::new()
            } else {
                format!(
                    "; but services did not all come back: {}",
                    undone.services_failed.join("; ")
                )
            };
            let err = err.context(format!(
                "{head}; rolled back {} step{}: {what}{services}",
                undone.steps,
                if undone.steps == 1 { "" } else { "s" }
            ));
            let err = with_note(err, "run `k8s-nokmem status` to see the node's state");
            with_note(err, format!("run `k8s-nokmem {command} -v` for details"))
        }
        Err(rb) => {
            journal.phase = Phase::RollbackFailed;
            let _ = journal.save(&node.root);
            let err = err.context(format!(
                "{head}, then rollback failed: {rb:#}; journal kept at {}",
                node.root
                    .describe(Path::new(paths::STATE_DIR).join(JOURNAL_FILE))
            ));
            let err = with_note(
                err,
                "the next `k8s-nokmem install` or `k8s-nokmem remove` resolves the journal first",
            );
            with_note(err, "run `k8s-nokmem status` to see the node's state")
        }
    }
}

/// Undo `journal.steps[..begun]` in reverse. Returns how many steps were undone. A failed
/// file undo stops the file work, but services are still started again.
fn rollback(node: &Node<'_>, journal: &Journal) -> anyhow::Result<Undone> {
    let n = journal.steps.len();
    let mut first_err: Option<anyhow::Error> = None;
    let mut undone = Undone::default();
    for j in (0..journal.begun).rev() {
        let step = &journal.steps[j];
        let is_service = matches!(step, Step::Stop { .. } | Step::Start { .. });
        if first_err.is_some() && !is_service {
            continue;
        }
        let started = Instant::now();
        let result = node.undo(step);
        let ms = started.elapsed().as_millis();
        match result {
            Ok(did) => {
                undone.steps += 1;
                info!("rollback [{}/{n}] {}: {did} ({ms} ms)", j + 1, step.label());
            }
            // a service that does not come back is reported, but the files are what
            // rollback guarantees: it goes on
            Err(e) if is_service => {
                error!(
                    "rollback [{}/{n}] {}: FAILED ({ms} ms): {e:#}",
                    j + 1,
                    step.label()
                );
                undone.services_failed.push(format!("{e:#}"));
            }
            Err(e) => {
                error!(
                    "rollback [{}/{n}] {}: FAILED ({ms} ms)",
                    j + 1,
                    step.label()
                );
                let e = e.context(format!("undo of step {}/{n} '{}'", j + 1, step.plain()));
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if journal.command == "install" {
        // the state as before (Record's undo), minus what is no longer diverted: an
        // upgraded target keeps the record of its previous payload
        node.state_without_undiverted()?.save(&node.root)?;
    }
    Ok(undone)
}

/// What a rollback did.
#[derive(Debug, Default)]
struct Undone {
    steps: usize,
    /// Services that could not be stopped or started again (the files are back anyway).
    services_failed: Vec<String>,
}

/// Resolve an interrupted transaction's journal, if there is one (see the module docs).
pub fn recover(node: &Node<'_>) -> anyhow::Result<()> {
    let Some(mut journal) = Journal::load(&node.root)? else {
        return Ok(());
    };
    let n = journal.steps.len();
    let shown = node
        .root
        .describe(Path::new(paths::STATE_DIR).join(JOURNAL_FILE));
    if journal.done >= n {
        info!(
            "found the journal of a finished {} transaction: closing it",
            journal.command
        );
        return journal.finish(&node.root, Phase::Done);
    }
    warn!(
        "found the journal of an interrupted {} transaction (pid {}, {} of {n} steps begun, {}) at {shown}",
        journal.command, journal.pid, journal.begun, journal.phase
    );
    let result = if journal.command == "remove" {
        info!("finishing the interrupted remove: the originals come back");
        journal.phase = Phase::Recovering;
        journal.save(&node.root)?;
        finish_forward(node, &journal)
    } else {
        info!(
            "undoing the interrupted {}: the node goes back to what it ran before",
            journal.command
        );
        journal.phase = Phase::Recovering;
        journal.save(&node.root)?;
        rollback(node, &journal).map(|undone| {
            for e in undone.services_failed {
                warn!("{e}");
            }
        })
    };
    match result {
        Ok(()) => {
            journal.finish(&node.root, Phase::RolledBack)?;
            info!("interrupted {} transaction resolved", journal.command);
            Ok(())
        }
        Err(e) => {
            let e = e.context(format!(
                "failed to resolve the interrupted {} transaction journalled at {shown}",
                journal.command
            ));
            Err(with_note(
                e,
                "fix the cause above and run the command again; `k8s-nokmem status` shows the node",
            ))
        }
    }
}

/// Apply every step of a remove journal again, in order.
fn finish_forward(node: &Node<'_>, journal: &Journal) -> anyhow::Result<()> {
    let n = journal.steps.len();
    for (j, step) in journal.steps.iter().enumerate() {
        let started = Instant::now();
        let result = node.apply(step);
        let ms = started.elapsed().as_millis();
        match result {
            Ok(did) => info!("recover [{}/{n}] {}: {did} ({ms} ms)", j + 1, step.label()),
            Err(e) => {
                error!("recover [{}/{n}] {}: FAILED ({ms} ms)", j + 1, step.label());
                return Err(e.context(format!("step {}/{n} '{}'", j + 1, step.plain())));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failpoint_specs() {
        let cases = [
            ("3", Some((FailAt::Index(3), FailMode::Error))),
            ("3:abort", Some((FailAt::Index(3), FailMode::Abort))),
            (
                "divert:error",
                Some((FailAt::Name("divert".into()), FailMode::Error)),
            ),
            (
                "place:panic",
                Some((FailAt::Name("place".into()), FailMode::Abort)),
            ),
            ("0", None),
            (":abort", None),
            ("3:maybe", None),
        ];
        for (spec, want) in cases {
            let got = Failpoint::parse(spec).map(|f| (f.at, f.mode));
            assert_eq!(got, want, "case '{spec}'");
        }
    }

    #[test]
    fn failpoint_finds_its_step() {
        let steps = vec![
            Step::Preflight,
            Step::Stop {
                unit: "a.service".into(),
            },
            Step::Record {
                state: None,
                before: None,
            },
        ];
        let at = |s: &str| Failpoint::parse(s).unwrap().index_in(&steps);
        assert_eq!(at("1"), Some(0));
        assert_eq!(at("3"), Some(2));
        assert_eq!(at("4"), None);
        assert_eq!(at("stop"), Some(1));
        assert_eq!(at("divert"), None);
    }

    /// A root with dpkg's admin dir and `/usr/bin/kubelet` = `bytes`.
    fn node_root(bytes: &[u8]) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        fs::create_dir_all(root.join("/var/lib/dpkg")).unwrap();
        fs::write(root.join("/var/lib/dpkg/status"), b"").unwrap();
        fs::create_dir_all(root.join("/usr/bin")).unwrap();
        fs::write(root.join("/usr/bin/kubelet"), bytes).unwrap();
        (dir, root)
    }

    fn skip_services() -> Services<'static> {
        Services::Skip(SkipReason::SystemdNotRunning)
    }

    /// `dpkg-divert --add` without `--rename`: the database says diverted, the file did
    /// not move (dpkg-divert cut short between its two writes).
    fn divert_db_only(root: &Root) {
        let out = std::process::Command::new("dpkg-divert")
            .arg("--root")
            .arg(root.path())
            .args(["--package", "k8s-nokmem", "--add", "--divert"])
            .args(["/usr/bin/kubelet.distrib", "/usr/bin/kubelet"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    fn original(bytes: &[u8]) -> Original {
        Original::File {
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)),
            size: bytes.len() as u64,
            mode: 0o644,
        }
    }

    fn kubelet_steps(orig: &Original) -> (Step, Step) {
        let (path, divert_to) = (
            PathBuf::from("/usr/bin/kubelet"),
            PathBuf::from("/usr/bin/kubelet.distrib"),
        );
        (
            Step::Divert {
                target: "kubelet".into(),
                path: path.clone(),
                divert_to: divert_to.clone(),
                original: orig.clone(),
            },
            Step::Place {
                target: "kubelet".into(),
                path,
                divert_to,
                payload: "/usr/lib/k8s-nokmem/kubelet".into(),
                sha256: "f".repeat(64),
                original: orig.clone(),
                previous: None,
            },
        )
    }

    #[test]
    fn undo_after_a_rename_without_database_write_moves_the_original_back() {
        let (_dir, root) = node_root(b"orig");
        fs::rename(
            root.join("/usr/bin/kubelet"),
            root.join("/usr/bin/kubelet.distrib"),
        )
        .unwrap();
        let node = Node::new(&root, skip_services(), Duration::from_secs(1));
        let (divert, place) = kubelet_steps(&original(b"orig"));
        assert_eq!(
            node.undo(&place).unwrap(),
            Did::OkBecause("nothing placed".into())
        );
        assert_eq!(
            node.undo(&divert).unwrap(),
            Did::OkBecause("moved the original back".into())
        );
        assert_eq!(fs::read(root.join("/usr/bin/kubelet")).unwrap(), b"orig");
    }

    #[test]
    fn undo_after_a_database_write_without_rename_keeps_the_original() {
        let (_dir, root) = node_root(b"orig");
        divert_db_only(&root);
        let node = Node::new(&root, skip_services(), Duration::from_secs(1));
        let (divert, place) = kubelet_steps(&original(b"orig"));
        assert_eq!(
            node.undo(&place).unwrap(),
            Did::OkBecause("the original is still there".into())
        );
        node.undo(&divert).unwrap();
        assert_eq!(fs::read(root.join("/usr/bin/kubelet")).unwrap(), b"orig");
        assert!(node.divert.list().unwrap().is_empty());
    }

    #[test]
    fn undivert_after_a_rename_back_without_database_write_finishes() {
        let (_dir, root) = node_root(b"orig");
        divert_db_only(&root);
        let node = Node::new(&root, skip_services(), Duration::from_secs(1));
        let undivert = Step::Undivert {
            target: "kubelet".into(),
            path: "/usr/bin/kubelet".into(),
            divert_to: "/usr/bin/kubelet.distrib".into(),
            original: Some(original(b"orig")),
        };
        assert_eq!(
            node.apply(&undivert).unwrap(),
            Did::OkBecause("original back".into())
        );
        assert!(node.divert.list().unwrap().is_empty());
        assert_eq!(fs::read(root.join("/usr/bin/kubelet")).unwrap(), b"orig");
    }

    #[test]
    fn undoing_a_divert_of_a_path_diverted_before_keeps_the_diversion() {
        let (_dir, root) = node_root(b"orig");
        let node = Node::new(&root, skip_services(), Duration::from_secs(1));
        let (divert, _) = kubelet_steps(&original(b"orig"));
        node.apply(&divert).unwrap();
        fs::write(root.join("/usr/bin/kubelet"), b"previous payload").unwrap();
        assert_eq!(
            node.undo(&divert).unwrap(),
            Did::OkBecause("diverted before this transaction: kept".into())
        );
        assert_eq!(node.divert.list().unwrap().len(), 1);
        assert_eq!(
            fs::read(root.join("/usr/bin/kubelet")).unwrap(),
            b"previous payload"
        );
        assert_eq!(
            fs::read(root.join("/usr/bin/kubelet.distrib")).unwrap(),
            b"orig"
        );
    }

    #[test]
    fn utc_stamps() {
        for (secs, want) in [
            (0, "19700101T000000Z"),
            (951_782_400, "20000229T000000Z"),
            (1_796_164_261, "20261201T223101Z"),
        ] {
            assert_eq!(utc_stamp(secs), want, "case {secs}");
        }
        assert_eq!(
            foreign_aside(Path::new("/usr/bin/kubelet"), 0),
            PathBuf::from("/usr/bin/kubelet.k8s-nokmem-foreign-19700101T000000Z")
        );
    }

    #[test]
    fn a_foreign_file_move_cut_short_is_finished() {
        let (_dir, root) = node_root(b"hotfix");
        divert_db_only(&root);
        let to = PathBuf::from("/usr/bin/kubelet.k8s-nokmem-foreign-x");
        // killed between the link and the unlink
        fs::hard_link(root.join("/usr/bin/kubelet"), root.join(&to)).unwrap();
        let node = Node::new(&root, skip_services(), Duration::from_secs(1));
        let unplace = Step::Unplace {
            target: "kubelet".into(),
            path: "/usr/bin/kubelet".into(),
            divert_to: "/usr/bin/kubelet.distrib".into(),
            ours: vec![],
            payload: None,
            foreign_to: Some(to.clone()),
        };
        node.apply(&unplace).unwrap();
        assert!(!root.join("/usr/bin/kubelet").exists());
        assert_eq!(fs::read(root.join(&to)).unwrap(), b"hotfix");
        // a name that holds another file is never replaced
        fs::write(root.join("/usr/bin/kubelet"), b"another").unwrap();
        fs::write(root.join(&to), b"taken").unwrap();
        let err = node.apply(&unplace).unwrap_err();
        assert!(format!("{err:#}").contains("without replacing"), "{err:#}");
        assert_eq!(fs::read(root.join(&to)).unwrap(), b"taken");
        // undo puts the moved file back
        fs::remove_file(root.join("/usr/bin/kubelet")).unwrap();
        node.undo(&unplace).unwrap();
        assert_eq!(fs::read(root.join("/usr/bin/kubelet")).unwrap(), b"taken");
    }

    #[test]
    fn journal_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        fs::create_dir_all(root.join(paths::STATE_DIR)).unwrap();
        let mut j = Journal::new(
            "install",
            vec![
                Step::Preflight,
                Step::Divert {
                    target: "runc".into(),
                    path: "/usr/bin/runc".into(),
                    divert_to: "/usr/bin/runc.distrib".into(),
                    original: Original::Symlink {
                        target: "runc-1".into(),
                    },
                },
            ],
        );
        j.begun = 2;
        j.save(&root).unwrap();
        assert_eq!(Journal::load(&root).unwrap(), Some(j.clone()));
        j.finish(&root, Phase::Done).unwrap();
        assert_eq!(Journal::load(&root).unwrap(), None);
        assert_eq!(
            Journal::load_last(&root).unwrap().unwrap().phase,
            Phase::Done
        );
    }
}
