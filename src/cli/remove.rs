//! `k8s-nokmem remove`: put the original runc and kubelet back and remove the diversions
//! ([`crate::swap::run_remove`]).

use super::{Ctx, Outcome};
use crate::swap;

#[derive(Debug, clap::Args)]
pub struct Remove {}

impl Remove {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<Outcome> {
        swap::run_remove(&ctx.root, ctx.config_path.as_deref())?;
        Ok(Outcome::Ok)
    }
}
