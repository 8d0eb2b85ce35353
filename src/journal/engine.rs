//! The engine: run a planned transaction step by step, journalled; roll it back on a
//! failure; resolve an interrupted one (undo an install, finish a remove).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use log::{error, info, warn};

use super::{
    Executor, FailMode, Failpoint, Journal, Phase, Step, Transaction, FAILPOINT_ENV, JOURNAL_FILE,
};
use crate::notes::{error_chain, with_note};
use crate::paths;

/// Run a planned transaction (`steps[0]` must be [`Step::Preflight`], already checked;
/// `preflight` is how long that took). On failure everything begun is undone in reverse.
pub fn run(
    node: &Executor<'_>,
    command: Transaction,
    steps: Vec<Step>,
    preflight: Duration,
    failpoint: Option<&Failpoint>,
) -> anyhow::Result<()> {
    let n = steps.len();
    let fail_at = failpoint.and_then(|f| f.index_in(&steps).map(|i| (i, f.mode)));
    let mut journal = Journal::new(command, steps);
    journal.failing = node.failing();
    // list the diversions now, before any service stops (see Executor::diversions)
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
                Ok(Some(settled)) => {
                    info!(
                        "{command} [{}/{n}] {}: {did} ({ms} ms); {settled}",
                        i + 1,
                        step.label(),
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
        warn!(
            "failed to close the journal ({}); the next run will redo this transaction",
            error_chain(e.as_ref())
        );
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
            if let Err(e) = crate::fs::remove_file_if_exists(&node.aside_of(path)) {
                warn!(
                    "failed to delete the previous payload kept aside: {}",
                    error_chain(&e)
                );
            }
        }
    }
    Ok(())
}

/// What a rolled-back transaction left the node running, for the error.
fn rolled_back_to(journal: &Journal) -> String {
    if journal.command == Transaction::Remove {
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
    node: &Executor<'_>,
    command: Transaction,
    journal: &mut Journal,
    i: usize,
    err: anyhow::Error,
) -> anyhow::Error {
    let n = journal.steps.len();
    let label = journal.steps[i].plain();
    journal.phase = Phase::RollingBack;
    journal.error = Some(error_chain(err.as_ref()));
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
                "{head}, then rollback failed: {}; journal kept at {}",
                error_chain(rb.as_ref()),
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
fn rollback(node: &Executor<'_>, journal: &Journal) -> anyhow::Result<Undone> {
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
                let why = error_chain(e.as_ref());
                error!(
                    "rollback [{}/{n}] {}: FAILED ({ms} ms): {why}",
                    j + 1,
                    step.label()
                );
                undone.services_failed.push(why);
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
    if journal.command == Transaction::Install {
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
pub fn recover(node: &Executor<'_>) -> anyhow::Result<()> {
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
    node.set_failing(journal.failing.clone());
    let result = if journal.command == Transaction::Remove {
        info!("finishing the interrupted remove: the originals come back");
        mark_recovering(node, &mut journal);
        finish_forward(node, &journal)
    } else {
        info!(
            "undoing the interrupted {}: the node goes back to what it ran before",
            journal.command
        );
        mark_recovering(node, &mut journal);
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

/// Journal that recovery began. A journal that cannot be written does not stop it: the
/// services the interrupted run stopped must come back either way, and the journal as it is
/// still says what to resolve.
fn mark_recovering(node: &Executor<'_>, journal: &mut Journal) {
    journal.phase = Phase::Recovering;
    if let Err(e) = journal.save(&node.root) {
        warn!(
            "failed to mark the journal as being recovered ({}); recovering anyway",
            error_chain(e.as_ref())
        );
    }
}

/// Apply every step of a remove journal again, in order. When a step fails the file work
/// stops there, but every later start step is still taken: a unit the interrupted run (or
/// this one) stopped never stays down because a later step failed.
fn finish_forward(node: &Executor<'_>, journal: &Journal) -> anyhow::Result<()> {
    let n = journal.steps.len();
    for (j, step) in journal.steps.iter().enumerate() {
        let started = Instant::now();
        let result = node.apply(step);
        let ms = started.elapsed().as_millis();
        match result {
            Ok(did) => info!("recover [{}/{n}] {}: {did} ({ms} ms)", j + 1, step.label()),
            Err(e) => {
                error!("recover [{}/{n}] {}: FAILED ({ms} ms)", j + 1, step.label());
                let head = format!("step {}/{n} '{}' failed", j + 1, step.plain());
                let starts = start_again(node, &journal.steps, j + 1);
                return Err(e.context(format!("{head}{starts}")));
            }
        }
    }
    Ok(())
}

/// After a failure: take every start step of `steps[from..]` anyway (logged as `recover`
/// steps); what became of them, for the error (empty when there were none).
fn start_again(node: &Executor<'_>, steps: &[Step], from: usize) -> String {
    let n = steps.len();
    let (mut started, mut failed) = (Vec::new(), Vec::new());
    for (j, step) in steps.iter().enumerate().skip(from) {
        let Step::Start { unit } = step else {
            continue;
        };
        let t0 = Instant::now();
        let result = node.apply(step);
        let ms = t0.elapsed().as_millis();
        match result {
            Ok(did) => {
                info!("recover [{}/{n}] {}: {did} ({ms} ms)", j + 1, step.label());
                started.push(format!("'{unit}'"));
            }
            Err(e) => {
                let why = error_chain(e.as_ref());
                error!(
                    "recover [{}/{n}] {}: FAILED ({ms} ms): {why}",
                    j + 1,
                    step.label()
                );
                failed.push(why);
            }
        }
    }
    match (started.is_empty(), failed.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(
            "; the services it stopped were started again ({})",
            started.join(", ")
        ),
        (_, false) => format!(
            "; and the services it stopped did not all start again: {}",
            failed.join("; ")
        ),
    }
}
