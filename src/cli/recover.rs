//! `k8s-nokmem recover`: only resolve an interrupted transaction's journal (what `install`
//! and `remove` do first): an interrupted install is undone, an interrupted remove is
//! finished. Nothing else changes. Run at boot by `k8s-nokmem-recover.service` with
//! `--boot` (before docker and kubelet start: files only, the boot starts the services on
//! the binaries then in place), or by hand.

use log::{info, warn};

use super::install::Session;
use super::{Ctx, Outcome};
use crate::config::Config;
use crate::journal::{self, Journal, Node, Services};
use crate::policy::SkipReason;

#[derive(Debug, clap::Args)]
pub struct Recover {
    /// Run from the boot unit, ordered before docker and kubelet: leave services alone (they
    /// start after it, on the binaries it put back)
    #[arg(long)]
    pub boot: bool,
}

impl Recover {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<Outcome> {
        let _signals = crate::signals::Deferred::block("recover")?;
        info!(
            "recover v{} root={}{}",
            env!("CARGO_PKG_VERSION"),
            ctx.root,
            if self.boot { " (boot)" } else { "" }
        );
        let session = Session::open(ctx, "recover")?;
        if Journal::load(&ctx.root)?.is_none() {
            info!("recover: no interrupted transaction: nothing to do");
            return Ok(Outcome::Ok);
        }
        // like remove: a broken conffile must not keep the node half-swapped
        let config = ctx.config().unwrap_or_else(|e| {
            warn!("{e:#}; recovering with the default settings");
            Config::default()
        });
        let connected = if self.boot { None } else { session.connect()? };
        let services = match connected.as_deref() {
            _ if self.boot => Services::Skip(SkipReason::Boot),
            manager => session.services(&ctx.root, manager, &config.service_order)?,
        };
        let node = Node::new(&ctx.root, services, config.service_timeout);
        journal::recover(&node)?;
        Ok(Outcome::Ok)
    }
}
