//! Running an external program (dpkg-divert, dpkg-query, systemctl, update-grub,
//! policy-rc.d, notify-reboot-required): a failure to start it and a non-zero exit become
//! errors that name the exact command line and carry its stderr.
//!
//! Every program the helper starts goes through [`Cmd`], the one place that hands the child
//! a clean signal state: an empty signal mask and every signal at its default disposition,
//! whatever the helper blocks (`signals.rs` holds SIGHUP, SIGINT and SIGTERM back during a
//! transaction) or inherited as ignored (`nohup`, a shell's background job, Rust's own
//! SIGPIPE). A child that ran with SIGTERM blocked or ignored could not be stopped by
//! systemd or a timeout, and programs do not reset these themselves.
//!
//! Each child also starts in a process group of its own, with stdin from /dev/null unless
//! the caller says otherwise: the SIGINT and SIGHUP that a terminal sends to its foreground
//! process group (Ctrl-C, a closed ssh session during `apt upgrade`) reach the helper, which
//! holds them until the transaction is over, and not a `dpkg-divert` or `systemctl` halfway
//! through its work. A signal sent to the child itself still ends it.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use log::{debug, trace};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("failed to run `{cmd}`")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to wait for `{cmd}`")]
    Wait {
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
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd::localized(program).env("LC_ALL", "C")
    }

    /// `program` in the helper's own locale (for programs that write text for people).
    pub fn localized(program: impl AsRef<OsStr>) -> Cmd {
        let mut inner = Command::new(program.as_ref());
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (sigprocmask, sigaction); it allocates nothing.
        unsafe { inner.pre_exec(default_signals) };
        // not in the terminal's foreground process group (see the module doc); with no
        // terminal to read, a background group never stops on SIGTTIN
        inner.process_group(0);
        inner.stdin(Stdio::null());
        Cmd {
            inner,
            shown: vec![program.as_ref().to_string_lossy().into_owned()],
        }
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.inner.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Cmd {
        self.inner.env_remove(key);
        self
    }

    pub fn stdin(mut self, cfg: Stdio) -> Cmd {
        self.inner.stdin(cfg);
        self
    }

    pub fn stdout(mut self, cfg: Stdio) -> Cmd {
        self.inner.stdout(cfg);
        self
    }

    pub fn stderr(mut self, cfg: Stdio) -> Cmd {
        self.inner.stderr(cfg);
        self
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

    /// Run `how` on the command, logged; a failure to start names the command line.
    fn run<T>(
        mut self,
        how: impl FnOnce(&mut Command) -> std::io::Result<T>,
    ) -> Result<(T, String), CommandError> {
        let shown = self.shown();
        debug!("running `{shown}`");
        match how(&mut self.inner) {
            Ok(done) => Ok((done, shown)),
            Err(source) => Err(CommandError::Spawn { cmd: shown, source }),
        }
    }

    /// Run it and return its output whatever the exit status (logged at debug/trace).
    pub fn output(self) -> Result<(Output, String), CommandError> {
        let (out, shown) = self.run(Command::output)?;
        trace!(
            "`{shown}`: {}; stdout: {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out, shown))
    }

    /// Run it with the stdio set up so far (stdin /dev/null, stdout and stderr inherited by
    /// default) and wait for its exit.
    pub fn status(self) -> Result<(ExitStatus, String), CommandError> {
        let (status, shown) = self.run(Command::status)?;
        trace!("`{shown}`: {status}");
        Ok((status, shown))
    }

    /// Start it; the caller waits.
    pub fn spawn(self) -> Result<(Child, String), CommandError> {
        self.run(Command::spawn)
    }
}

/// Linux's signals, 1 to 64 (`SigIgn`/`SigBlk` in /proc/PID/status have one bit each).
const LAST_SIGNAL: i32 = 64;

/// The kernel's `struct sigaction` as `rt_sigaction(2)` takes it: the handler first, then
/// flags, restorer and mask (x86_64, aarch64); all zero is `SIG_DFL`, nothing else set.
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// In the child, between fork and exec: no signal blocked, none ignored. Handlers the
/// helper installed are reset by exec itself; ignored signals and the mask are not. The
/// raw `rt_sigaction` also reaches the C library's own realtime signals (32-34), which
/// glibc's and musl's `sigaction()` refuse and glibc's `posix_spawn` leaves ignored.
/// Async-signal-safe: system calls only, no allocation.
fn default_signals() -> std::io::Result<()> {
    use nix::libc;
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    // SAFETY: plain system calls on stack values of the kernel's layout; the kernel
    // writes at most `sizeof(struct sigaction)` (<= ours) into `old`.
    unsafe {
        let dfl = KernelSigaction::default();
        for signo in 1..=LAST_SIGNAL {
            if signo == libc::SIGKILL || signo == libc::SIGSTOP {
                continue;
            }
            let mut old = KernelSigaction::default();
            let queried = libc::syscall(
                libc::SYS_rt_sigaction,
                signo,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                8usize,
            ) == 0;
            if queried && old.handler == libc::SIG_IGN {
                let set = libc::syscall(
                    libc::SYS_rt_sigaction,
                    signo,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
                if set != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
    }
    Ok(())
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
