//! `k8s-nokmem recover`: only resolve an interrupted transaction's journal (what `install`
//! and `remove` do first): an interrupted install is undone, an interrupted remove is
//! finished. Nothing else changes. Run at boot by `k8s-nokmem-recover.service` with
//! `--boot` (before docker and kubelet start: files only, the boot starts the services on
//! the binaries then in place), or by hand ([`crate::swap::run_recover`]).

use super::{Ctx, Outcome};
use crate::swap;

#[derive(Debug, clap::Args)]
pub struct Recover {
    /// Run from the boot unit, ordered before docker and kubelet: leave services alone (they
    /// start after it, on the binaries it put back)
    #[arg(long)]
    pub boot: bool,
}

impl Recover {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<Outcome> {
        swap::run_recover(&ctx.root, ctx.config_path.as_deref(), self.boot)?;
        Ok(Outcome::Ok)
    }
}
