//! `k8s-nokmem verify`: run the checks, print the result in the format asked for, write the
//! optional textfile and state file, and return the outcome (0 ok, 1 problem, 2 unknown).

use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{debug, error, info, warn};

use super::{Ctx, Outcome};
use crate::config::Config;
use crate::fs;
use crate::output;
use crate::paths;
use crate::verify::{self, render, Check, Settings, Status};

const AFTER_HELP: &str = "\
What is checked depends on the node:
  cgroup v2 only           not this leak: ok
  cgroup.memory=nokmem     booted with it: kmem is off kernel-wide; every pod cgroup must
                           show 0 (Linux < 4.6 ignores it unless backported: per cgroup)
  Linux >= 4.6 without it  every v1 memory cgroup accounts kmem whatever runc and kubelet
                           do ([verify] kernel-wide-kmem = problem|warning|ignore)
  Linux < 4.6 (4.4, 3.10)  per cgroup: kubepods, QoS, pod, container and docker cgroups with
                           memory.kmem.usage_in_bytes > 0 or slab entries (named with pod UID
                           and container ID; those older than the swap: recreate or reboot)
On every node: zombie memory cgroups against the 65535 IDs (warning at [verify]
zombie-warn-percent, problem at 90% in use) and the leak's kernel messages since boot;
when the package is installed: the payload at the target paths (sha256), the diversions,
the running kubelet and version skew with the kubelet package.

Outputs: a summary on stdout (default), --json, or --npd (one line for a
node-problem-detector custom plugin); --textfile and --state write files as well.
The systemd unit k8s-nokmem-verify.service runs
  k8s-nokmem verify --wait-for-pods --state --textfile
Exit codes: 0 ok (warnings included), 1 problem, 2 unknown or could not run.";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Verify {
    /// Print the result as JSON (status ok|problem|unknown, every check with its evidence)
    #[arg(long, conflicts_with = "npd")]
    json: bool,

    /// Print one line for a node-problem-detector custom plugin (exit 0 ok, 1 problem, 2 unknown)
    #[arg(long)]
    npd: bool,

    /// Also write DIR/k8s_nokmem.prom (Prometheus textfile, atomically). Without DIR:
    /// [verify] textfile-dir (auto: the directory the node's node_exporter reads), if it
    /// exists
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    textfile: Option<Option<PathBuf>>,

    /// Also write the JSON result to /run/k8s-nokmem/verify.json (under --root)
    #[arg(long)]
    state: bool,

    /// First wait for pod cgroups to appear, at most until [verify] boot-wait after boot
    /// (for the boot unit; no wait later than that)
    #[arg(long)]
    wait_for_pods: bool,

    /// Where the node's /sys/fs/cgroup is (a recorded tree) [default: [verify] cgroup-root]
    #[arg(long, value_name = "DIR")]
    cgroup_root: Option<PathBuf>,

    /// Where the node's /proc is (mountinfo, cgroups, cmdline, kernel release) [default:
    /// [verify] proc-root]
    #[arg(long, value_name = "DIR")]
    proc_root: Option<PathBuf>,

    /// Check as if the kernel release were REL (e.g. 4.4.0-131-generic) [default: from
    /// PROC/sys/kernel/osrelease]
    #[arg(long, value_name = "REL")]
    kernel_release: Option<String>,

    /// Scan this saved kernel log (dmesg output or a /dev/kmsg dump) [default: /dev/kmsg,
    /// or nothing when --proc-root points elsewhere than /proc]
    #[arg(long, value_name = "FILE")]
    kernel_log: Option<PathBuf>,
}

impl Verify {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<Outcome> {
        let start = Instant::now();
        let (config, config_check) = match ctx.config() {
            Ok(c) => (c, None),
            Err(e) => {
                warn!("{}: using the defaults", verify::error_chain(e.as_ref()));
                let check = Check::new_unknown(
                    "config",
                    format!(
                        "{}: checked with the defaults",
                        verify::error_chain(e.as_ref())
                    ),
                    "fix the config file, then run `k8s-nokmem verify` again",
                );
                (Config::default(), Some(check))
            }
        };
        let settings = Settings {
            root: ctx.root.clone(),
            cgroup_root: self
                .cgroup_root
                .clone()
                .unwrap_or_else(|| config.verify.cgroup_root.clone()),
            proc_root: self
                .proc_root
                .clone()
                .unwrap_or_else(|| config.verify.proc_root.clone()),
            kernel_release: self.kernel_release.clone(),
            kernel_log: self.kernel_log.clone(),
            config,
        };
        debug!(
            "verify: cgroup root '{}', proc root '{}'",
            settings.cgroup_root.display(),
            settings.proc_root.display()
        );
        if self.wait_for_pods {
            verify::wait_for_pods(&settings);
        }
        let mut report = verify::run(&settings);
        if let Some(check) = config_check {
            report.checks.insert(0, check);
            report.status = report.status.max(Outcome::Unknown);
        }

        // files first, so that a failure to write one shows in the printed status (the
        // textfile before the state, which then holds a warning about it)
        let mut failed = false;
        if let Some(dir) = &self.textfile {
            match write_textfile(dir.as_deref(), &settings, &report) {
                Ok(None) => {}
                Ok(Some(warning)) => report.checks.push(warning),
                Err(()) => failed = true,
            }
        }
        if self.state {
            failed |= !write_state(ctx, &report);
            crate::swap::activation::after_verify(&ctx.root, &report);
        }
        if failed {
            report.status = report.status.max(Outcome::Unknown);
        }

        let text = if self.json {
            render::json(&report)
        } else if self.npd {
            format!("{}\n", render::npd(&report))
        } else {
            render::human(&report)
        };
        output::print(&text)?;
        let findings: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.status >= Status::Warning)
            .map(|c| format!("{} {}", c.name, c.status))
            .collect();
        // at the level of the worst finding, so that `journalctl -p warning` on the verify
        // unit shows a node with a problem
        let level = match report.checks.iter().map(|c| c.status).max() {
            Some(Status::Problem) => log::Level::Error,
            Some(Status::Unknown | Status::Warning) => log::Level::Warn,
            _ => log::Level::Info,
        };
        log::log!(
            level,
            "verify: {} ({} ms)",
            if findings.is_empty() {
                "all ok".to_string()
            } else {
                findings.join(", ")
            },
            start.elapsed().as_millis()
        );
        Ok(report.status)
    }
}

/// Write `R/run/k8s-nokmem/verify.json` atomically; false (logged) on failure.
fn write_state(ctx: &Ctx, report: &verify::VerifyReport) -> bool {
    let dir = ctx.root.join(paths::RUN_DIR);
    let path = dir.join(paths::VERIFY_FILE);
    let result = fs::create_dir_all(&dir, 0o755)
        .and_then(|()| fs::atomic_write_bytes(&path, 0o644, render::json(report).as_bytes()));
    match result {
        Ok(()) => {
            info!(
                "verify state {}: ok",
                ctx.root
                    .describe(Path::new(paths::RUN_DIR).join(paths::VERIFY_FILE))
            );
            true
        }
        Err(e) => {
            error!("{}", verify::error_chain(&e));
            false
        }
    }
}

/// Write the textfile; no DIR means `[verify] textfile-dir` (`auto`: the directory the
/// node's node_exporter reads), skipped with a warning once per boot when there is none.
/// Ok(Some): not written, a warning for the report (a directory holds its name: every run
/// would fail the same way until someone removes it); Err: failed (logged).
fn write_textfile(
    dir: Option<&Path>,
    settings: &Settings,
    report: &verify::VerifyReport,
) -> Result<Option<Check>, ()> {
    let dir = if let Some(dir) = dir {
        dir.to_path_buf()
    } else {
        let setting = &settings.config.verify.textfile_dir;
        match verify::textfile::resolve(&settings.root, &settings.proc_root, setting) {
            Ok(choice) => {
                debug!(
                    "verify textfile: {} (from {})",
                    settings.root.describe(&choice.dir),
                    choice.source
                );
                verify::textfile::clear_missing(&settings.root);
                settings.root.join(&choice.dir)
            }
            Err(why) => {
                verify::textfile::report_missing(&settings.root, &why);
                return Ok(None);
            }
        }
    };
    match render::write_textfile(&dir, report) {
        Ok(path) => {
            info!("verify textfile '{}': ok", path.display());
            Ok(None)
        }
        Err(e @ render::TextfileError::Directory { .. }) => {
            let fix = "remove that directory (node_exporter reads only files named *.prom), or point --textfile ([verify] textfile-dir) at another directory";
            warn!("{e}\nnote: {fix}");
            Ok(Some(Check::new_warning("textfile", e.to_string(), fix)))
        }
        Err(e) => {
            let read_only = matches!(
                &e,
                render::TextfileError::Write(f)
                    if f.source.raw_os_error() == Some(nix::errno::Errno::EROFS as i32)
            );
            let note = if read_only {
                format!(
                    "'{}' is read-only here: k8s-nokmem-verify.service writes only its \
                     ReadWriteDirectories=; add it with `systemctl edit \
                     k8s-nokmem-verify.service` ([Service] ReadWriteDirectories={})",
                    dir.display(),
                    dir.display()
                )
            } else {
                "create the directory or point --textfile at node_exporter's \
                 --collector.textfile.directory"
                    .to_string()
            };
            error!("{}\nnote: {note}", verify::error_chain(&e));
            Err(())
        }
    }
}
