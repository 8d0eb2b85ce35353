//! `k8s-nokmem install`.

use super::{Ctx, Outcome};

#[derive(Debug, clap::Args)]
pub struct Install {}

impl Install {
    pub fn run(self, _ctx: &Ctx) -> anyhow::Result<Outcome> {
        anyhow::bail!("'install' is not implemented yet")
    }
}
