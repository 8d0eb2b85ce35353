//! `k8s-nokmem status [--json]`: diversions held (ours, and others' of our targets), the
//! binaries in place against the MANIFEST, `state.json`, the last or interrupted
//! transaction, and the services' states when systemd runs. Exit 0 consistent, 1
//! inconsistent, 2 cannot tell.

use super::{Ctx, Outcome};
use crate::output;
use crate::policy::ServicePolicy;
use crate::status::{collect, render, ServiceSource};

#[derive(Debug, clap::Args)]
pub struct Status {
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

impl Status {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<Outcome> {
        let (root, path) = (&ctx.root, ctx.config_path.as_deref());
        let policy = ServicePolicy::detect(root);
        let manager = match policy {
            ServicePolicy::Act => Some(crate::systemd::connect()),
            ServicePolicy::Skip(_) => None,
        };
        let report = match &manager {
            Some(Ok(m)) => collect(root, path, ServiceSource::Manager(m.as_ref())),
            Some(Err(e)) => collect(root, path, ServiceSource::Unreachable(e)),
            None => collect(root, path, ServiceSource::Skipped(policy)),
        };
        if self.json {
            output::print_json(&report)?;
        } else {
            output::print(&render(&report))?;
        }
        Ok(report.outcome)
    }
}
