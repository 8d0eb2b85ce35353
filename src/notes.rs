//! How an error reaches a user: its cause chain, and the `note:` lines attached to it.
//!
//! The chain is the error, then each `source()` under it ([`causes`]), walked the same way
//! everywhere and laid out in one of two ways: where the error is the whole message (what
//! `main` prints for a failed command) as the top error and one `  -> cause` line per
//! source ([`error_lines`], [`error_report`]; zincati's `log_error_chain`, cargo-deb's
//! `cause:` lines); where it is part of a line (a log line, a `status` problem, a verify
//! check's summary, a JSON string, the node-problem-detector line) as `error: cause: cause`
//! ([`error_chain`]). Never show an error with `{e}` or `{e:#}` where it has a source:
//! thiserror's `Display` is the top message only, and `{:#}` does not change that.
//!
//! Attach notes with `.note("run `k8s-nokmem status`")` on a result or [`with_note`] on an
//! error; the printer in `main` prints each note after the cause chain.

use std::error::Error;
use std::fmt;

/// The causes under `err`, outermost first. A cause whose message the one above already
/// ends with is left out (zbus's `I/O error: No such file or directory (os error 2)` over
/// the `io::Error` it wraps), so no line only repeats the one before.
pub fn causes<'a>(err: &'a (dyn Error + 'a)) -> impl Iterator<Item = String> + 'a {
    let mut above = err.to_string();
    let mut next = err.source();
    std::iter::from_fn(move || loop {
        let cause = next?;
        next = cause.source();
        let text = cause.to_string();
        if above.ends_with(&text) {
            continue;
        }
        above = text.clone();
        return Some(text);
    })
}

/// `err`, then one `  -> cause` line per cause: an error shown on its own.
pub fn error_lines(err: &dyn Error) -> String {
    joined(err, "\n  -> ")
}

/// `err` and its causes on one line, `failed to x: cause: cause`: an error shown as one
/// field of something else.
pub fn error_chain(err: &dyn Error) -> String {
    joined(err, ": ")
}

/// `err`, then each of its [`causes`] after `separator`.
fn joined(err: &dyn Error, separator: &str) -> String {
    let mut text = err.to_string();
    for cause in causes(err) {
        text.push_str(separator);
        text.push_str(&cause);
    }
    text
}

/// What `main` prints for a failed command: `k8s-nokmem: error: ` and the [`error_lines`],
/// then one `note: ` line per note.
pub fn error_report(err: &dyn Error, notes: &[String]) -> String {
    let mut text = format!("k8s-nokmem: error: {}", error_lines(err));
    for note in notes {
        text.push_str("\nnote: ");
        text.push_str(note);
    }
    text
}

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

    #[derive(Debug, thiserror::Error)]
    #[error("failed to connect to the system bus")]
    struct Connect(#[source] Wrapper);

    /// zbus's shape: the wrapped error is both in the message and the source.
    #[derive(Debug, thiserror::Error)]
    #[error("I/O error: {0}")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn every_cause_is_shown_once_in_both_layouts() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = Connect(Wrapper(io));
        assert_eq!(
            error_lines(&err),
            "failed to connect to the system bus\n  -> I/O error: entity not found"
        );
        assert_eq!(
            error_chain(&err),
            "failed to connect to the system bus: I/O error: entity not found"
        );
        let err = anyhow::Error::new(err).context("failed to read the services");
        let err = with_note(err, "run `k8s-nokmem status`");
        assert_eq!(
            error_report(err.as_ref(), &of(&err)),
            "k8s-nokmem: error: failed to read the services\n  -> failed to connect to the system bus\n  -> I/O error: entity not found\nnote: run `k8s-nokmem status`"
        );
        assert_eq!(
            error_lines(&Wrapper(std::io::Error::other("x"))),
            "I/O error: x"
        );
    }
}
