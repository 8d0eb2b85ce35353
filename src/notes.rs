//! `note:` lines attached to an error: the next step a user can take.
//!
//! Attach with `.note("run `k8s-nokmem status`")` on a result or [`with_note`] on an error; the
//! printer in `main` prints each note after the cause chain.

use std::fmt;

/// Extension to add a note to any `anyhow::Result`.
pub trait WithNote<T> {
    fn note(self, note: impl Into<String>) -> anyhow::Result<T>;
}

impl<T> WithNote<T> for anyhow::Result<T> {
    fn note(self, note: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|err| with_note(err, note))
    }
}

/// Add a note to an error without changing its message or causes.
pub fn with_note(err: anyhow::Error, note: impl Into<String>) -> anyhow::Error {
    let mut notes = Notes::take(&err);
    notes.push(note.into());
    anyhow::Error::new(NotedError { inner: err, notes })
}

/// Every note attached to `err`, outermost first.
pub fn of(err: &anyhow::Error) -> Vec<String> {
    Notes::take(err)
}

struct Notes;

impl Notes {
    fn take(err: &anyhow::Error) -> Vec<String> {
        err.downcast_ref::<NotedError>()
            .map(|n| n.notes.clone())
            .unwrap_or_default()
    }
}

/// Wraps an error transparently, carrying the notes beside it.
#[derive(Debug)]
struct NotedError {
    inner: anyhow::Error,
    notes: Vec<String>,
}

impl fmt::Display for NotedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl std::error::Error for NotedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{anyhow, Context};

    #[test]
    fn notes_survive_and_do_not_change_the_chain() {
        let err: anyhow::Result<()> = Err(anyhow!("root cause")).context("failed to do x");
        let err = err.note("try y").note("or z").unwrap_err();
        assert_eq!(err.to_string(), "failed to do x");
        let chain: Vec<String> = err.chain().map(|c| c.to_string()).collect();
        assert_eq!(chain, vec!["failed to do x", "root cause"]);
        assert_eq!(of(&err), vec!["try y", "or z"]);
    }
}
