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

use std::mem::MaybeUninit;

use log::warn;
use nix::errno::Errno;
use nix::libc;
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

    /// The deferred signals pending now, for this thread or the process.
    pub fn arrived(&self) -> Vec<Signal> {
        match sigpending() {
            Ok(set) => DEFERRED.into_iter().filter(|s| set.contains(*s)).collect(),
            Err(e) => {
                warn!("failed to read the pending signals (sigpending): {e}");
                Vec::new()
            }
        }
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

/// `sigpending(2)` (nix has no wrapper): the signals pending for the calling thread or the
/// process, blocked ones included.
fn sigpending() -> nix::Result<SigSet> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending writes a whole sigset_t through the pointer when it returns 0
    Errno::result(unsafe { libc::sigpending(set.as_mut_ptr()) })?;
    // SAFETY: initialised by the successful sigpending above
    Ok(unsafe { SigSet::from_sigset_t_unchecked(set.assume_init()) })
}

#[cfg(test)]
mod tests {
    use super::*;

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
