//! `k8s-nokmem status`.

use super::{Ctx, Outcome};

#[derive(Debug, clap::Args)]
pub struct Status {}

impl Status {
    pub fn run(self, _ctx: &Ctx) -> anyhow::Result<Outcome> {
        anyhow::bail!("'status' is not implemented yet")
    }
}
