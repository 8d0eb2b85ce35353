//! The swap as a library: the transactions `install`, `remove` and `recover` that the CLI
//! calls. [`session`] (the lock, the failpoint, the service policy, the D-Bus connection),
//! [`preflight`] (targets, version skew, free space), [`plan`] (which units and which steps),
//! the two transactions ([`install()`], [`remove()`]) run by [`crate::journal`], and
//! [`activation`] (the kernel command line and the reboot flag afterwards).

use std::path::Path;

use log::{info, warn};

use crate::config::Config;
use crate::journal::{self, Executor, Journal, Services};
use crate::paths::Root;
use crate::policy::SkipReason;
use crate::signals::Deferred;
use crate::targets;

pub mod activation;
pub mod containerd;
mod install;
pub mod plan;
pub mod preflight;
mod remove;
pub mod session;
#[cfg(test)]
mod tests;

pub use install::install;
pub use remove::remove;
pub use session::Session;

/// What every transaction does first: block SIGHUP/SIGINT/SIGTERM until it is over (before
/// any thread starts), log the version, take the lock.
fn begin(root: &Root, command: &'static str, detail: &str) -> anyhow::Result<(Deferred, Session)> {
    let signals = Deferred::block(command)?;
    info!(
        "{command} v{} root={root}{detail}",
        env!("CARGO_PKG_VERSION")
    );
    Ok((signals, Session::open(root, command)?))
}

/// The config, or the defaults when it cannot be read: remove and recover must work with a
/// broken conffile (they need only the services from it), not leave the node half-swapped.
fn config_or_default(root: &Root, config_path: Option<&Path>, doing: &str) -> Config {
    targets::load_config(root, config_path).unwrap_or_else(|e| {
        warn!(
            "{}; {doing} with the default settings",
            crate::notes::error_chain(&e)
        );
        Config::default()
    })
}

/// `k8s-nokmem install`: the install transaction, then its effect on the kernel command
/// line and the reboot flag.
pub fn run_install(root: &Root, config_path: Option<&Path>) -> anyhow::Result<()> {
    let (_signals, session) = begin(root, "install", "")?;
    let config =
        Config::load(root, config_path).map_err(|e| session::preflight_failed("install", e))?;
    let connected = session.connect()?;
    let judged = activation::Judged::of(&session.policy);
    let applied = activation::Applied::decide(root, &config, &judged);
    let before = activation::state_stamp(root);
    install(root, &session, &config, &applied, connected.as_deref())?;
    let swapped = activation::state_stamp(root) != before;
    activation::after_install(root, &config, &applied, swapped, &judged);
    Ok(())
}

/// `k8s-nokmem remove`: the remove transaction, then our kernel command line goes.
pub fn run_remove(root: &Root, config_path: Option<&Path>) -> anyhow::Result<()> {
    let (_signals, session) = begin(root, "remove", "")?;
    let config = config_or_default(root, config_path, "removing");
    let connected = session.connect()?;
    let judged = activation::Judged::of(&session.policy);
    let applied = activation::Applied::decide(root, &config, &judged);
    let running = remove(root, &session, &config, &applied, connected.as_deref())?;
    activation::after_remove(root, &applied, &running, &judged);
    Ok(())
}

/// `k8s-nokmem recover`: only resolve an interrupted transaction's journal (an install is
/// undone, a remove finished). At `boot` services are left alone: the boot starts them
/// afterwards, on the binaries then in place.
pub fn run_recover(root: &Root, config_path: Option<&Path>, boot: bool) -> anyhow::Result<()> {
    let (_signals, session) = begin(root, "recover", if boot { " (boot)" } else { "" })?;
    if Journal::load(root)?.is_none() {
        info!("recover: no interrupted transaction: nothing to do");
        return Ok(());
    }
    let config = config_or_default(root, config_path, "recovering");
    let connected = if boot { None } else { session.connect()? };
    let services = match connected.as_deref() {
        _ if boot => Services::Skip(SkipReason::Boot),
        manager => session.services(root, manager, &config.service_order)?,
    };
    journal::recover(&Executor::new(root, services, config.service_timeout))
}
