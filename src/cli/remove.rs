//! `k8s-nokmem remove`.

use super::{Ctx, Outcome};

#[derive(Debug, clap::Args)]
pub struct Remove {}

impl Remove {
    pub fn run(self, _ctx: &Ctx) -> anyhow::Result<Outcome> {
        anyhow::bail!("'remove' is not implemented yet")
    }
}
