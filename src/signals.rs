//! A transaction is not cut in half by a signal. SIGHUP (an SSH session dropped during
//! `apt upgrade`), SIGINT (Ctrl-C) and SIGTERM are blocked while `install`, `remove` or
//! `recover` runs, so the transaction finishes or rolls back; a signal that arrived
//! meanwhile is logged when the command ends, and the process then exits (the blocked
//! signal is never delivered). SIGKILL and the OOM killer cannot be blocked: the journal
//! and the boot-time `k8s-nokmem-recover.service` cover those.
//!
//! The mask is set before the process starts any thread (zbus's and async-io's inherit
//! it). The programs we start get an empty mask and default dispositions back from
//! `command::Cmd` (std's `Command` alone leaves the mask blocked when it uses posix_spawn).

use std::fs;

use log::warn;
use nix::sys::signal::{SigSet, Signal};

/// The signals held back while a transaction runs.
pub const DEFERRED: [Signal; 3] = [Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM];

/// Holds the signals back for its lifetime; on drop, logs the ones that arrived.
#[derive(Debug)]
pub struct Deferred {
    command: &'static str,
}

impl Deferred {
    /// Block [`DEFERRED`] in this thread (and every thread started later).
    pub fn block(command: &'static str) -> anyhow::Result<Deferred> {
        let mut set = SigSet::empty();
        for sig in DEFERRED {
            set.add(sig);
        }
        set.thread_block()
            .map_err(|e| anyhow::anyhow!("failed to block SIGHUP, SIGINT and SIGTERM: {e}"))?;
        Ok(Deferred { command })
    }

    /// The deferred signals pending now.
    pub fn arrived(&self) -> Vec<Signal> {
        let status = fs::read_to_string("/proc/thread-self/status")
            .or_else(|_| fs::read_to_string("/proc/self/status"))
            .unwrap_or_default();
        pending(&status)
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        for sig in self.arrived() {
            warn!(
                "{sig} arrived during `k8s-nokmem {}`: held back until the transaction was over; exiting now",
                self.command
            );
        }
    }
}

/// The deferred signals pending in a `/proc/PID/status` text (`SigPnd`: this thread,
/// `ShdPnd`: the process), pure for tests.
pub fn pending(status: &str) -> Vec<Signal> {
    let mut mask = 0u64;
    for line in status.lines() {
        if let Some(hex) = line
            .strip_prefix("SigPnd:")
            .or_else(|| line.strip_prefix("ShdPnd:"))
        {
            mask |= u64::from_str_radix(hex.trim(), 16).unwrap_or(0);
        }
    }
    DEFERRED
        .into_iter()
        .filter(|sig| mask & (1u64 << (*sig as i32 - 1)) != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_masks() {
        let table = [
            (
                "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n",
                vec![],
            ),
            (
                "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000001\n",
                vec![Signal::SIGHUP],
            ),
            (
                "SigPnd:\t0000000000000002\nShdPnd:\t0000000000004000\n",
                vec![Signal::SIGINT, Signal::SIGTERM],
            ),
            (
                "ShdPnd:\t0000000000004003\n",
                vec![Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM],
            ),
            ("", vec![]),
        ];
        for (status, want) in table {
            assert_eq!(pending(status), want, "case {status:?}");
        }
    }

    #[test]
    fn a_blocked_signal_waits_and_is_seen() {
        // a thread of its own: the mask is per thread
        std::thread::spawn(|| {
            let deferred = Deferred::block("install").unwrap();
            assert!(deferred.arrived().is_empty());
            // raise() is directed at the calling thread
            nix::sys::signal::raise(Signal::SIGHUP).unwrap();
            assert_eq!(deferred.arrived(), vec![Signal::SIGHUP]);
            // consume it, so that nothing is left pending when the thread ends
            let mut set = SigSet::empty();
            set.add(Signal::SIGHUP);
            assert_eq!(set.wait().unwrap(), Signal::SIGHUP);
        })
        .join()
        .unwrap();
    }
}
