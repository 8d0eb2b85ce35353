//! `k8s-nokmem inspect`.

use super::{Ctx, Outcome};

#[derive(Debug, clap::Args)]
pub struct Inspect {}

impl Inspect {
    pub fn run(self, _ctx: &Ctx) -> anyhow::Result<Outcome> {
        anyhow::bail!("'inspect' is not implemented yet")
    }
}
