//! `k8s-nokmem verify`.

use super::{Ctx, Outcome};

#[derive(Debug, clap::Args)]
pub struct Verify {}

impl Verify {
    pub fn run(self, _ctx: &Ctx) -> anyhow::Result<Outcome> {
        anyhow::bail!("'verify' is not implemented yet")
    }
}
