//! The remove transaction: the install in reverse. Stop the services of swapped binaries,
//! delete our file, remove the diversion (dpkg renames the original back), check the
//! original is the one recorded at install, start the services. Idempotent; a file at the
//! path that k8s-nokmem did not place is moved next to it
//! (`<path>.k8s-nokmem-foreign-<UTC time>`, logged), never kept under a diversion.

use std::path::Path;
use std::time::Instant;

use log::{info, warn};

use super::activation::Applied;
use super::plan::{remove_steps, running, units_for, Running, Swapped};
use super::session::{log_skipped_restarts, preflight_failed, Session};
use crate::config::Config;
use crate::divert::DpkgDivert;
use crate::journal::{self, Executor};
use crate::manifest::Manifest;
use crate::paths::{self, Root};
use crate::state::{State, StateError};
use crate::systemd::ServiceManager;

/// The remove transaction on `root`. With `applied` not restarting, no service is stopped
/// or started: the originals are put back underneath the running services. Returns the
/// running units left on k8s-nokmem's binaries that way (empty when they were restarted).
pub fn remove(
    root: &Root,
    session: &Session,
    config: &Config,
    applied: &Applied,
    manager: Option<&dyn ServiceManager>,
) -> anyhow::Result<Vec<String>> {
    session.resolve_interrupted(root, manager, config)?;

    let started = Instant::now();
    let diversions = DpkgDivert::new(root)
        .list()
        .map_err(|e| preflight_failed("remove", e))?;
    // removal must not be blocked by a damaged state file: the diversions are the truth;
    // but a newer k8s-nokmem's state is not ours to rewrite
    let state = match State::load(root) {
        Ok(state) => state,
        Err(e @ StateError::Newer { .. }) => return Err(preflight_failed("remove", e)),
        Err(e) => {
            warn!(
                "{}; going by the diversions alone",
                crate::notes::error_chain(&e)
            );
            State::default()
        }
    };
    // the payload may be gone already (a forced removal): then only recorded sha256s count
    let manifest = Manifest::installed(root)
        .map_err(|e| {
            warn!(
                "{}: k8s-nokmem's files are recognised from the state file only",
                crate::notes::error_chain(&e)
            )
        })
        .ok();

    let mut swapped = Vec::new();
    for d in diversions.iter().filter(|d| d.is_ours()) {
        let recorded = state.targets.iter().find(|(_, t)| t.path == d.path);
        let name = match recorded {
            Some((name, _)) => name.clone(),
            None => config
                .targets
                .iter()
                .find(|t| Some(t.name) == d.path.file_name().and_then(|n| n.to_str()))
                .map(|t| t.name.to_string())
                .unwrap_or_else(|| d.path.display().to_string()),
        };
        let bin = manifest.as_ref().and_then(|m| m.binary(&name));
        let mut ours: Vec<String> = recorded
            .map(|(_, t)| t.payload_sha256.clone())
            .into_iter()
            .collect();
        ours.extend(bin.map(|b| b.sha256.clone()));
        swapped.push(Swapped {
            name,
            diversion: d.clone(),
            ours,
            original: recorded.map(|(_, t)| t.original.clone()),
            payload: bin.map(|b| {
                (
                    Path::new(paths::PAYLOAD_DIR).join(&b.file),
                    b.sha256.clone(),
                )
            }),
        });
    }
    if swapped.is_empty() && state.targets.is_empty() {
        info!(
            "remove [1/1] preflight: ok, nothing to do: nothing is swapped ({} ms)",
            started.elapsed().as_millis()
        );
        return Ok(Vec::new());
    }
    let restart: Vec<Vec<String>> = swapped
        .iter()
        .map(|s| {
            config
                .target(&s.name)
                .map(|t| t.restart.clone())
                .unwrap_or_default()
        })
        .collect();
    let Running {
        units: wanted,
        failing,
    } = running(manager, units_for(config, restart.iter()))?;
    // not restarted ([services] apply): the running services keep k8s-nokmem's binaries
    // until the node reboots
    let (units, left) = if applied.restart || manager.is_none() {
        (wanted, Vec::new())
    } else {
        // a socket runs no binary of ours
        let services = wanted.into_iter().filter(|u| !u.ends_with(".socket"));
        (Vec::new(), services.collect())
    };
    let services = session.services(root, manager, &units)?;
    let node = Executor::new(root, services, config.service_timeout)
        .with_settle(config.service_settle)
        .with_failing(failing);

    let steps = remove_steps(&units, &swapped, journal::now());
    journal::run(
        &node,
        journal::Transaction::Remove,
        steps,
        started.elapsed(),
        session.failpoint.as_ref(),
    )?;
    log_skipped_restarts(&node.services, &units, "running k8s-nokmem's binaries");
    if !left.is_empty() {
        info!(
            "services not restarted ({}): {} keep running k8s-nokmem's binaries until the node reboots",
            applied.why,
            left.join(", ")
        );
    }
    Ok(left)
}
