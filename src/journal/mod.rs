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
//!   deleted meanwhile). When one fails, the file work stops there but every later start
//!   step is still taken, so no unit the remove stopped stays down; the journal stays.
//!
//! Units that were failing before the transaction (restarting after a failure: kubelet
//! before `kubeadm join`) are journalled (`failing`): their starts, in the run and in any
//! later resolution, are judged against that state (restarting or up again is fine) rather
//! than by the settle window.
//!
//! Either way every target the transaction touched is then consistent (its original in
//! place and no diversion, or for an upgrade its previous payload; its services started)
//! and the command runs in full; an `install` then swaps again. Every apply and undo checks the node first, so running one twice, a
//! step that was only begun, or one that never ran, is harmless.
//!
//! Modules: [`file`] (the journal file: load, save, finish), [`step`] (the [`Step`] model and
//! its labels), [`failpoint`] (fault injection), [`executor`] (the operations a step takes
//! on the node: services, files, diversions through [`crate::divert::DivertCache`]) and
//! [`engine`] (run, rollback, recover).
//!
//! Fault injection (test-only): `K8S_NOKMEM_FAILPOINT=<step>[:error|:abort]`, `<step>`
//! being a 1-based index as in the log (`[3/12]`) or a step name (`divert`: the first such
//! step). `error` makes that step fail (tests rollback); `abort` calls
//! `std::process::abort()` right after the journal entry for that step is written (kill
//! -9, power loss). It is always compiled (not behind a cargo feature), so that
//! the tests (`cargo test --release` in CI) exercise the very binary that ships; it costs
//! one environment lookup, acts only when the variable is set (root's environment), and
//! logs a warning when armed.

mod engine;
mod executor;
mod failpoint;
mod file;
mod step;

pub use engine::{recover, run};
pub use executor::{Did, Executor, Services, Settled};
pub use failpoint::{FailAt, FailMode, Failpoint, FAILPOINT_ENV};
pub use file::{now, Journal, Phase, Transaction, JOURNAL_FILE, LAST_FILE};
pub use step::{foreign_aside, Step};

#[cfg(test)]
mod tests;
