//! `k8s-nokmem config [--json]`: every setting's effective value and where it came from (the
//! conffile or a drop-in, with the line, or the default). Exit 0, or 2 when a file cannot be
//! read or has an error (named with its file and line).

use super::{Ctx, Outcome};
use crate::config;
use crate::notes::WithNote;
use crate::output;

const AFTER_HELP: &str = "\
Settings are read from /etc/k8s-nokmem/k8s-nokmem.conf (the packaged conffile: do not edit
it), then from /etc/k8s-nokmem/conf.d/*.conf in lexical order; a later file's key wins.
Set your own values in a drop-in, e.g. /etc/k8s-nokmem/conf.d/50-local.conf:
  [services]
  apply = reboot
With --config FILE, FILE alone is read.";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ShowConfig {
    /// Print the settings as JSON (section, key, value, file and line; null file: the default)
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Json<'a> {
    files: &'a [std::path::PathBuf],
    settings: Vec<config::Effective>,
}

impl ShowConfig {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<Outcome> {
        let config = ctx.config().note(
            "fix the line named above; `k8s-nokmem config` then shows each value and its file",
        )?;
        let effective = config.effective();
        if self.json {
            output::print_json(&Json {
                files: &config.sources.files,
                settings: effective,
            })?;
        } else {
            output::print(&config::render(&effective, &config.sources.files))?;
        }
        Ok(Outcome::Ok)
    }
}
