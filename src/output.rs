//! A command's result on stdout. A closed pipe (`k8s-nokmem status | head`) ends the output
//! quietly and is not an error: the exit code still tells the outcome.

use std::io::{self, Write};

use anyhow::Context;

/// Write to stdout with `write`, then flush; EPIPE is success.
pub fn write_with(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("failed to write the result to stdout"),
    }
}

/// Print `text` as it is.
pub fn print(text: &str) -> anyhow::Result<()> {
    write_with(|out| out.write_all(text.as_bytes()))
}

/// Print `value` as pretty JSON and a newline.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    write_with(|out| {
        serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
        writeln!(out)
    })
}
