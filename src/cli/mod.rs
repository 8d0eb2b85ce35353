//! Command line: global flags, the subcommand enum and dispatch. One file per subcommand,
//! each exposing `run(self, &Ctx) -> anyhow::Result<Outcome>`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use log::LevelFilter;

use crate::config::Config;
use crate::paths::Root;
use crate::targets;

mod completions;
mod config;
mod inspect;
mod install;
mod recover;
mod remove;
mod status;
mod verify;

pub use crate::outcome::{Outcome, EXIT_ERROR, EXIT_PROBLEM};

const AFTER_HELP: &str = "\
Lifecycle (run by the package's maintainer scripts; safe to run by hand):
  apt install k8s-nokmem    -> k8s-nokmem install   (divert, place payload, restart services)
  apt remove k8s-nokmem     -> k8s-nokmem remove    (restore the original binaries)

Everyday:
  k8s-nokmem status         what is diverted and running
  k8s-nokmem verify         is kmem accounting really off for pod cgroups?
  k8s-nokmem inspect BIN    does this Go binary enable kmem?
  k8s-nokmem config         each setting's value and the file:line it comes from

Settings: /etc/k8s-nokmem/k8s-nokmem.conf, then /etc/k8s-nokmem/conf.d/*.conf (a later key
wins). Set yours in a drop-in such as conf.d/50-local.conf; do not edit the conffile.

Exit codes: 0 ok, 1 problem found, 2 could not run or unknown.
Logs go to stderr (RUST_LOG overrides -v/-q); results go to stdout.";

/// Swap nokmem builds of runc and kubelet onto a Kubernetes node (cgroup v1) and verify
/// that kernel-memory accounting stays off for pod cgroups.
#[derive(Debug, Parser)]
#[command(name = "k8s-nokmem", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Args {
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Less log output (-q errors only)
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Act on the system unpacked at DIR instead of / (default: $DPKG_ROOT, else /).
    /// Services are never touched under a root other than /.
    #[arg(long, value_name = "DIR", global = true)]
    pub root: Option<PathBuf>,

    /// Read settings from FILE alone instead of /etc/k8s-nokmem/k8s-nokmem.conf and
    /// /etc/k8s-nokmem/conf.d/*.conf (under --root)
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Divert the original runc and kubelet, put the nokmem payload in place, restart services
    Install(install::Install),
    /// Put the original runc and kubelet back and remove the diversions
    Remove(remove::Remove),
    /// Only resolve an interrupted install or remove (run at boot by k8s-nokmem-recover.service)
    Recover(recover::Recover),
    /// Show diversions, binaries in place and service states
    Status(status::Status),
    /// Check that kmem accounting is off for pod and container memory cgroups
    Verify(verify::Verify),
    /// Tell from a Go binary's bytes whether it switches kmem accounting on
    Inspect(inspect::Inspect),
    /// Show each setting's effective value and where it came from (file:line or default)
    Config(config::ShowConfig),
    /// Print a shell completion script (the package ships bash's)
    #[command(hide = true)]
    Completions(completions::Completions),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Install(_) => "install",
            Command::Remove(_) => "remove",
            Command::Recover(_) => "recover",
            Command::Status(_) => "status",
            Command::Verify(_) => "verify",
            Command::Inspect(_) => "inspect",
            Command::Config(_) => "config",
            Command::Completions(_) => "completions",
        }
    }

    /// install and remove leave an audit trail in apt's term.log; queries stay quiet.
    fn default_level(&self) -> LevelFilter {
        match self {
            Command::Install(_) | Command::Remove(_) | Command::Recover(_) => LevelFilter::Info,
            _ => LevelFilter::Warn,
        }
    }
}

/// What every subcommand gets: the root it acts on and where its config comes from.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub root: Root,
    pub config_path: Option<PathBuf>,
}

impl Ctx {
    /// Load the config (explicit `--config`, else the default file under the root), its
    /// target paths checked against the node.
    pub fn config(&self) -> anyhow::Result<Config> {
        Ok(targets::load_config(
            &self.root,
            self.config_path.as_deref(),
        )?)
    }
}

/// Parse argv (a function so tests can call it).
pub fn parse<I, T>(argv: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Args::try_parse_from(argv)
}

/// `k8s-nokmem: <level>: <msg>` on stderr at the level of `-q`/`-v` (see [`crate::logging`]).
pub fn init_logging(args: &Args, style: crate::logging::Style) {
    let base = args.command.default_level();
    let level = match (args.verbose, args.quiet) {
        (0, 0) => base,
        (0, _) => LevelFilter::Error,
        (1, _) => base.max(LevelFilter::Debug),
        _ => LevelFilter::Trace,
    };
    crate::logging::init(level, style);
}

/// Dispatch to the subcommand.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let ctx = Ctx {
        root: Root::from_args(args.root),
        config_path: args.config,
    };
    log::debug!(
        "{} v{} root={}",
        args.command.name(),
        env!("CARGO_PKG_VERSION"),
        ctx.root
    );
    match args.command {
        Command::Install(cmd) => cmd.run(&ctx),
        Command::Remove(cmd) => cmd.run(&ctx),
        Command::Recover(cmd) => cmd.run(&ctx),
        Command::Status(cmd) => cmd.run(&ctx),
        Command::Verify(cmd) => cmd.run(&ctx),
        Command::Inspect(cmd) => cmd.run(&ctx),
        Command::Config(cmd) => cmd.run(&ctx),
        Command::Completions(cmd) => cmd.run(&ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let args = parse(["k8s-nokmem", "status", "--root", "/tmp/r", "-vv"]).unwrap();
        assert_eq!(args.root, Some(PathBuf::from("/tmp/r")));
        assert_eq!(args.verbose, 2);
    }
}
