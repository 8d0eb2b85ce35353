//! The journal file: `journal.json` while a transaction runs (written atomically before
//! each step), `last-transaction.json` once it is finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};

use super::Step;
use crate::fs;
use crate::notes::with_note;
use crate::paths::{self, Root};

/// The journal of the transaction in progress, in the state directory.
pub const JOURNAL_FILE: &str = "journal.json";
/// The journal of the last finished transaction, with its result.
pub const LAST_FILE: &str = "last-transaction.json";

/// What a transaction does, journalled as `install` or `remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transaction {
    Install,
    Remove,
}

impl Transaction {
    /// `install`, `remove`: the command's name.
    pub fn name(self) -> &'static str {
        match self {
            Transaction::Install => "install",
            Transaction::Remove => "remove",
        }
    }
}

impl std::fmt::Display for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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
    pub command: Transaction,
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
    /// Units that were failing before the transaction (`kubelet.service` ->
    /// `activating/auto-restart`): their starts are judged against that state ([`Executor`]).
    ///
    /// [`Executor`]: super::Executor
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failing: BTreeMap<String, String>,
}

impl Journal {
    pub fn new(command: Transaction, steps: Vec<Step>) -> Journal {
        Journal {
            version: 1,
            command,
            pid: std::process::id(),
            started: now(),
            steps,
            begun: 0,
            done: 0,
            phase: Phase::Forward,
            error: None,
            failing: BTreeMap::new(),
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
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let move_away = || {
            format!(
                "move '{}' away after checking the node with `k8s-nokmem status`",
                path.display()
            )
        };
        let journal: Journal = serde_json::from_str(&text)
            .with_context(|| format!("failed to parse journal '{}'", path.display()))
            .map_err(|e| with_note(e, move_away()))?;
        if let Some(why) = journal.inconsistency() {
            return Err(with_note(
                anyhow!("journal '{}' is inconsistent: {why}", path.display()),
                move_away(),
            ));
        }
        Ok(Some(journal))
    }

    /// What makes the counters impossible (pure): a journal no run of ours writes, which
    /// neither recovery nor `status` can act on.
    pub fn inconsistency(&self) -> Option<String> {
        let n = self.steps.len();
        if self.version != 1 {
            return Some(format!(
                "version {} (this helper reads version 1)",
                self.version
            ));
        }
        if self.begun > n {
            return Some(format!("{} steps begun, but it has {n} steps", self.begun));
        }
        if self.done > self.begun {
            return Some(format!(
                "{} steps done, but only {} begun",
                self.done, self.begun
            ));
        }
        None
    }

    /// Write the journal atomically (temp file, fsync, rename, fsync directory).
    pub fn save(&self, root: &Root) -> anyhow::Result<()> {
        write_json(&Self::path(root), self)
    }

    /// Keep this journal as the last transaction and delete the live one.
    pub(super) fn finish(&mut self, root: &Root, phase: Phase) -> anyhow::Result<()> {
        self.phase = phase;
        // both fsync the state directory: after the rename, and after an unlink
        write_json(&Self::last_path(root), self)?;
        fs::remove_file_if_exists(&Self::path(root))?;
        Ok(())
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .with_context(|| format!("failed to encode '{}'", path.display()))?;
    text.push('\n');
    fs::atomic_write_bytes(path, 0o644, text.as_bytes())?;
    Ok(())
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
