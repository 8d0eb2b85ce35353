//! `k8s-nokmem remove`: the install in reverse. Stop the services of swapped binaries,
//! delete our file, remove the diversion (dpkg renames the original back), check the
//! original is the one recorded at install, start the services. Idempotent; a file at the
//! path that k8s-nokmem did not place is moved next to it
//! (`<path>.k8s-nokmem-foreign-<UTC time>`, logged), never kept under a diversion.

use std::path::Path;
use std::time::Instant;

use log::{info, warn};

use super::install::{
    log_skipped_restarts, preflight_failed, running, start_order, units_for, Session,
};
use super::{Ctx, Outcome};
use crate::config::Config;
use crate::divert::DpkgDivert;
use crate::journal::{self, Node, Step};
use crate::manifest::Manifest;
use crate::paths;
use crate::systemd::ServiceManager;
use crate::targets::State;

#[derive(Debug, clap::Args)]
pub struct Remove {}

impl Remove {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<Outcome> {
        // before any thread starts: SIGHUP/SIGINT/SIGTERM wait until the transaction is over
        let _signals = crate::signals::Deferred::block("remove")?;
        info!("remove v{} root={}", env!("CARGO_PKG_VERSION"), ctx.root);
        let session = Session::open(ctx, "remove")?;
        // removal must work even with a broken conffile: it needs only services from it
        let config = ctx.config().unwrap_or_else(|e| {
            warn!("{e:#}; removing with the default settings");
            Config::default()
        });
        let connected = session.connect()?;
        remove(ctx, &session, &config, connected.as_deref())?;
        super::effect::after_remove(ctx);
        Ok(Outcome::Ok)
    }
}

/// The remove transaction on `ctx.root`.
pub(super) fn remove(
    ctx: &Ctx,
    session: &Session,
    config: &Config,
    manager: Option<&dyn ServiceManager>,
) -> anyhow::Result<()> {
    let root = &ctx.root;
    Session::check_reachable(manager, config)?;
    let services = session.services(root, manager, &config.service_order)?;
    let node = Node::new(root, services, config.service_timeout);
    journal::recover(&node)?;

    let started = Instant::now();
    let diversions = DpkgDivert::new(root)
        .list()
        .map_err(|e| preflight_failed("remove", e))?;
    // removal must not be blocked by a damaged state file: the diversions are the truth
    let state = State::load(root).unwrap_or_else(|e| {
        warn!("{e}; going by the diversions alone");
        State::default()
    });
    // the payload may be gone already (a forced removal): then only recorded sha256s count
    let manifest = Manifest::load(
        &root.join(paths::MANIFEST_FILE),
        &root.describe(paths::MANIFEST_FILE),
    )
    .map_err(|e| warn!("{e}: k8s-nokmem's files are recognised from the state file only"))
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
        swapped.push((
            name,
            d.clone(),
            ours,
            recorded.map(|(_, t)| t.original.clone()),
            bin.map(|b| {
                (
                    Path::new(paths::PAYLOAD_DIR).join(&b.file),
                    b.sha256.clone(),
                )
            }),
        ));
    }
    if swapped.is_empty() && state.targets.is_empty() {
        info!(
            "remove [1/1] preflight: ok, nothing to do: nothing is swapped ({} ms)",
            started.elapsed().as_millis()
        );
        return Ok(());
    }
    let restart: Vec<Vec<String>> = swapped
        .iter()
        .map(|(name, ..)| {
            config
                .target(name)
                .map(|t| t.restart.clone())
                .unwrap_or_default()
        })
        .collect();
    let units = running(manager, units_for(config, restart.iter()))?;
    let services = session.services(root, manager, &units)?;
    let node = Node::new(root, services, config.service_timeout).with_settle(config.service_settle);

    let now = journal::now();
    let mut steps = vec![Step::Preflight];
    steps.extend(units.iter().map(|u| Step::Stop { unit: u.clone() }));
    for (name, d, ours, original, payload) in &swapped {
        steps.push(Step::Unplace {
            target: name.clone(),
            path: d.path.clone(),
            divert_to: d.divert_to.clone(),
            ours: ours.clone(),
            payload: payload.clone(),
            foreign_to: Some(journal::foreign_aside(&d.path, now)),
        });
        steps.push(Step::Undivert {
            target: name.clone(),
            path: d.path.clone(),
            divert_to: d.divert_to.clone(),
            original: original.clone(),
        });
    }
    steps.extend(
        start_order(&units)
            .into_iter()
            .map(|unit| Step::Start { unit }),
    );
    steps.push(Step::Record {
        state: None,
        before: None,
    });
    journal::run(
        &node,
        journal::Transaction::Remove,
        steps,
        started.elapsed(),
        session.failpoint.as_ref(),
    )?;
    log_skipped_restarts(&node.services, &units, "running k8s-nokmem's binaries");
    Ok(())
}
