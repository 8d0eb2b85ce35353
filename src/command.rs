//! Running an external program (dpkg-divert, dpkg-query): a failure to start it and a
//! non-zero exit become errors that name the exact command line and carry its stderr.

use std::ffi::OsStr;
use std::process::{Command, Output};

use log::{debug, trace};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("failed to run `{cmd}`")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
}

/// A command and how to show it to a user (`program arg arg`).
pub struct Cmd {
    inner: Command,
    shown: Vec<String>,
}

impl Cmd {
    /// `program` with `LC_ALL=C`, so its output can be parsed.
    pub fn new(program: &str) -> Cmd {
        let mut inner = Command::new(program);
        inner.env("LC_ALL", "C");
        Cmd {
            inner,
            shown: vec![program.to_string()],
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.shown.push(arg.as_ref().to_string_lossy().into_owned());
        self.inner.arg(arg);
        self
    }

    pub fn args<I, S>(self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, Cmd::arg)
    }

    /// The command line as a user would type it.
    pub fn shown(&self) -> String {
        self.shown.join(" ")
    }

    /// Run it and return its output whatever the exit status (logged at debug/trace).
    pub fn output(mut self) -> Result<(Output, String), CommandError> {
        let shown = self.shown();
        debug!("running `{shown}`");
        let out = self.inner.output().map_err(|source| CommandError::Spawn {
            cmd: shown.clone(),
            source,
        })?;
        trace!(
            "`{shown}`: {}; stdout: {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out, shown))
    }
}

/// The error for a run that exited badly: stderr trimmed to one line, without the
/// program's own `prefix` (e.g. `dpkg-divert: error: `).
pub fn failed(shown: String, out: &Output, prefix: &str) -> CommandError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    CommandError::Failed {
        cmd: shown,
        status: out.status.to_string(),
        stderr: stderr.trim().trim_start_matches(prefix).replace('\n', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_command_line() {
        let err = Cmd::new("/nonexistent/dpkg-divert")
            .args(["--list", "k8s-nokmem"])
            .output()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to run `/nonexistent/dpkg-divert --list k8s-nokmem`"
        );
        let (out, shown) = Cmd::new("sh")
            .args(["-c", "echo 'x: error: bad thing' >&2; exit 3"])
            .output()
            .unwrap();
        let err = failed(shown, &out, "x: error: ");
        assert!(
            err.to_string()
                .ends_with("failed (exit status: 3): bad thing"),
            "{err}"
        );
    }
}
