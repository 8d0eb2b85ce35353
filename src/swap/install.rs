//! The install transaction: divert the original runc and kubelet, place the nokmem payload,
//! restart the services that run a changed binary. A re-run with an unchanged payload
//! changes and restarts nothing.

use std::time::Instant;

use log::info;

use super::activation::Applied;
use super::plan::{install_steps, running, units_for, Running};
use super::preflight::{preflight, Found};
use super::session::{log_skipped_restarts, preflight_failed, Session};
use crate::config::Config;
use crate::dpkg::Dpkg;
use crate::journal::{self, Executor, Transaction};
use crate::paths::Root;
use crate::state::{Original, PackageVersion, State, TargetState};
use crate::systemd::ServiceManager;
use crate::targets::InPlace;

/// The install transaction on `root` with `manager` acting on services (None: no service
/// actions, as decided by the session's policy); `applied` says whether the services of
/// changed binaries are restarted.
pub fn install(
    root: &Root,
    session: &Session,
    config: &Config,
    applied: &Applied,
    manager: Option<&dyn ServiceManager>,
) -> anyhow::Result<()> {
    session.resolve_interrupted(root, manager, config)?;

    let started = Instant::now();
    let found = preflight(root, config).map_err(|e| preflight_failed("install", e))?;
    let changed: Vec<&Found> = found
        .iter()
        .filter(|f| !f.ours || f.now != InPlace::Payload)
        .collect();
    let state = State::load(root).map_err(|e| preflight_failed("install", e))?;
    let mut new_state = state.clone();
    let dpkg = Dpkg::new(root);
    for f in &found {
        let stays = f.ours && f.now == InPlace::Payload;
        let recorded = state.targets.get(&f.target.name);
        new_state.targets.insert(
            f.target.name.clone(),
            TargetState {
                path: f.target.path.clone(),
                divert_to: f.target.divert_to.clone(),
                original: f.original.clone(),
                payload_sha256: f.target.payload_sha256.clone(),
                payload_version: f.target.payload_version.clone(),
                original_package: PackageVersion::to_record(&dpkg, &f.target, recorded, stays),
                // a placed payload is stamped by the record step
                swapped_at: recorded.and_then(|r| r.swapped_at).filter(|_| stays),
            },
        );
    }
    if changed.is_empty() && new_state == state {
        info!(
            "install [1/1] preflight: ok, nothing to do: the payload is in place ({} ms)",
            started.elapsed().as_millis()
        );
        return Ok(());
    }

    // not restarted ([services] apply): no service is stopped; the node's reboot starts
    // the new ones
    let units = if applied.restart {
        units_for(config, changed.iter().map(|f| &f.target.restart))
    } else {
        Vec::new()
    };
    let Running { units, failing } = running(manager, units)?;
    let services = session.services(root, manager, &units)?;
    let node = Executor::new(root, services, config.service_timeout)
        .with_settle(config.service_settle)
        .with_failing(failing);
    let steps = install_steps(root, &changed, &units, new_state, state)?;
    journal::run(
        &node,
        Transaction::Install,
        steps,
        started.elapsed(),
        session.failpoint.as_ref(),
    )?;
    for f in &found {
        if f.original == Original::Missing {
            info!(
                "'{}' ({}) did not exist: it is diverted anyway, so a later {} package lands at '{}'",
                f.target.path.display(),
                f.target.name,
                f.target.name,
                f.target.divert_to.display()
            );
        }
    }
    log_skipped_restarts(&node.services, &units, "the old binaries");
    Ok(())
}
