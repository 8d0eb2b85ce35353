//! `k8s-nokmem install`: divert the original runc and kubelet, place the nokmem payload,
//! restart the services that run a changed binary ([`crate::swap::run_install`]).

use super::{Ctx, Outcome};
use crate::swap;

#[derive(Debug, clap::Args)]
pub struct Install {}

impl Install {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<Outcome> {
        swap::run_install(&ctx.root, ctx.config_path.as_deref())?;
        Ok(Outcome::Ok)
    }
}
