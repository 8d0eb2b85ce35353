//! Where `verify --textfile` (no DIR) writes `k8s_nokmem.prom`: `[verify] textfile-dir`,
//! whose default `auto` is the directory the node's node_exporter actually reads.
//!
//! `auto`, in order:
//! 1. the `--collector.textfile.directory` of a running node_exporter (argv[0]
//!    `node_exporter`, or `prometheus-node-exporter` as Debian and Ubuntu name it) that runs
//!    as root or in a system service's cgroup: no unprivileged user can point the root
//!    helper at a directory of their choosing; one in another mount namespace (a DaemonSet's
//!    container) names a path of its own and is skipped. Old releases (Ubuntu 16.04's 0.11) take Go's
//!    single-dash `-collector.textfile.directory`; both forms, with `=` or a separate value;
//! 2. the same flag in `ARGS` of `/etc/default/prometheus-node-exporter`, the environment
//!    file of Debian's and Ubuntu's `prometheus-node-exporter.service`
//!    (`ExecStart=/usr/bin/prometheus-node-exporter $ARGS`);
//! 3. the first that exists of `/var/lib/prometheus/node-exporter` (the packaged default of
//!    Debian's and Ubuntu's prometheus-node-exporter) and
//!    `/var/lib/node_exporter/textfile_collector` (upstream's documented directory).
//!
//! None found, or the directory node_exporter names does not exist: a warning, once per
//! boot (the marker `/run/k8s-nokmem/textfile-dir-missing` keeps later runs at `info`).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use log::{debug, info, warn};

use super::{bounded, running};
use crate::config::TextfileDir;
use crate::paths::{self, Root};

/// The packaged default of Debian's and Ubuntu's prometheus-node-exporter.
pub const DEBIAN_DIR: &str = "/var/lib/prometheus/node-exporter";
/// Upstream node_exporter's documented textfile directory.
pub const UPSTREAM_DIR: &str = "/var/lib/node_exporter/textfile_collector";
/// The environment file of Debian's and Ubuntu's prometheus-node-exporter.service.
pub const DEFAULTS_FILE: &str = "/etc/default/prometheus-node-exporter";
/// Under [`paths::RUN_DIR`]: the missing-directory warning was given this boot.
pub const MISSING_MARKER: &str = "textfile-dir-missing";

const FLAG: &str = "collector.textfile.directory";
const EXPORTER_NAMES: [&str; 2] = ["node_exporter", "prometheus-node-exporter"];

/// Where the chosen directory came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `[verify] textfile-dir = PATH`.
    Config,
    /// The running node_exporter's flag.
    Process { pid: u32, name: String },
    /// `ARGS` in [`DEFAULTS_FILE`].
    Defaults,
    /// The first existing of the known directories.
    Known(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Config => write!(f, "[verify] textfile-dir"),
            Source::Process { pid, name } => {
                write!(f, "--{FLAG} of {name} (pid {pid})")
            }
            Source::Defaults => write!(f, "--{FLAG} in ARGS of {DEFAULTS_FILE}"),
            Source::Known(what) => write!(f, "{what}"),
        }
    }
}

/// The directory to write to: absolute on the node (join it with the root to open it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub dir: PathBuf,
    pub source: Source,
}

/// Pick the directory, or say why there is none.
pub fn resolve(root: &Root, proc_root: &Path, setting: &TextfileDir) -> Result<Choice, String> {
    let named = |dir: PathBuf, source: Source| {
        if root.join(&dir).is_dir() {
            Ok(Choice { dir, source })
        } else {
            Err(format!(
                "{} does not exist (from {source})",
                root.describe(&dir)
            ))
        }
    };
    match setting {
        TextfileDir::Path(dir) => named(dir.clone(), Source::Config),
        TextfileDir::Auto => {
            if let Some((dir, source)) = from_processes(proc_root) {
                return named(dir, source);
            }
            if let Some(dir) = from_defaults(root) {
                return named(dir, Source::Defaults);
            }
            for (dir, what) in [
                (DEBIAN_DIR, "Debian's prometheus-node-exporter default"),
                (UPSTREAM_DIR, "upstream node_exporter's textfile directory"),
            ] {
                if root.join(dir).is_dir() {
                    return Ok(Choice {
                        dir: dir.into(),
                        source: Source::Known(what),
                    });
                }
            }
            Err(format!(
                "no node_exporter textfile directory: no running node_exporter names one with \
                 --{FLAG}, {} does not, and neither {} nor {} exists",
                root.describe(DEFAULTS_FILE),
                root.describe(DEBIAN_DIR),
                root.describe(UPSTREAM_DIR)
            ))
        }
    }
}

/// Say that no textfile is written: a warning the first time this boot, `info` after.
pub fn report_missing(root: &Root, why: &str) {
    let dir = root.join(paths::RUN_DIR);
    let marker = dir.join(MISSING_MARKER);
    if marker.exists() {
        info!("verify textfile: skipped: {why}");
        return;
    }
    warn!(
        "verify textfile: skipped: {why}; create node_exporter's textfile directory or set \
         [verify] textfile-dir (this warning is given once per boot)"
    );
    let written = crate::fs::create_dir_all(&dir, 0o755).and_then(|()| {
        crate::fs::atomic_write_bytes(&marker, 0o644, format!("{why}\n").as_bytes())
    });
    if let Err(e) = written {
        debug!("verify textfile: marker not written: {e}");
    }
}

/// A directory was found: a later loss of it warns again.
pub fn clear_missing(root: &Root) {
    let marker = root.join(paths::RUN_DIR).join(MISSING_MARKER);
    if marker.exists() {
        if let Err(e) = crate::fs::remove_file_if_exists(&marker) {
            debug!("verify textfile: marker not removed: {e}");
        }
    }
}

/// The flag of the first trusted running node_exporter that has it.
fn from_processes(proc_root: &Path) -> Option<(PathBuf, Source)> {
    let pids = match running::pids(proc_root) {
        Ok(p) => p,
        Err(e) => {
            debug!("verify textfile: reading {}: {e}", proc_root.display());
            return None;
        }
    };
    // the node's mount namespace is init's: verify itself runs in a private one under its
    // unit (PrivateTmp=, ProtectSystem=), as running.rs says
    let node_ns = fs::read_link(proc_root.join(running::INIT_MNT_NS)).ok();
    for pid in pids {
        let proc_dir = proc_root.join(pid.to_string());
        let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(name) = args
            .first()
            .and_then(|a0| Path::new(a0).file_name()?.to_str().map(str::to_string))
            .filter(|n| EXPORTER_NAMES.contains(&n.as_str()))
        else {
            continue;
        };
        if !trusted(&proc_dir) {
            debug!(
                "verify textfile: {name} (pid {pid}) is neither root nor a system service: ignored"
            );
            continue;
        }
        if !same_mount_namespace(&proc_dir, node_ns.as_deref()) {
            debug!(
                "verify textfile: {name} (pid {pid}) runs in a container (another mount \
                 namespace): its paths are not the node's, ignored"
            );
            continue;
        }
        match flag_value(args.iter().skip(1).map(String::as_str)) {
            Some(dir) => return Some((dir, Source::Process { pid, name })),
            None => debug!("verify textfile: {name} (pid {pid}) has no --{FLAG}"),
        }
    }
    None
}

/// Root (real uid 0) or in a system service's cgroup (only root places processes there).
fn trusted(proc_dir: &Path) -> bool {
    let read = |name: &str| bounded::read_to_string(&proc_dir.join(name), bounded::PROC_TEXT_MAX);
    let root_uid = read("status")
        .ok()
        .and_then(|s| running::uids(&s))
        .is_some_and(|u| u[0] == 0);
    root_uid
        || read("cgroup")
            .map(|s| {
                s.lines().any(|l| {
                    let path = l.splitn(3, ':').nth(2).unwrap_or("");
                    path.starts_with("/system.slice/") && path.ends_with(".service")
                })
            })
            .unwrap_or(false)
}

/// The process sees the node's file system (a node_exporter DaemonSet's flag names a path
/// inside its container). Unknown (no ns links, as in a recorded tree) counts as the same.
fn same_mount_namespace(proc_dir: &Path, node_ns: Option<&Path>) -> bool {
    match (fs::read_link(proc_dir.join("ns/mnt")), node_ns) {
        (Ok(theirs), Some(node)) => theirs == node,
        _ => true,
    }
}

/// `--collector.textfile.directory[=]DIR` (or one dash), the last one winning as with Go's
/// flag package and kingpin; only absolute paths.
fn flag_value<'a>(args: impl Iterator<Item = &'a str>) -> Option<PathBuf> {
    let mut found = None;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let Some(bare) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        let value = if bare == FLAG {
            args.next().map(str::to_string)
        } else {
            bare.strip_prefix(FLAG)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        };
        if let Some(v) = value {
            let v = v.trim_matches(|c| c == '"' || c == '\'');
            if v.starts_with('/') {
                found = Some(PathBuf::from(v));
            } else {
                debug!("verify textfile: --{FLAG} '{v}' is not absolute: ignored");
            }
        }
    }
    found
}

/// The flag in the last `ARGS=` of [`DEFAULTS_FILE`].
fn from_defaults(root: &Root) -> Option<PathBuf> {
    let text = fs::read_to_string(root.join(DEFAULTS_FILE)).ok()?;
    let args = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ARGS="))
        .next_back()?;
    let args = args.trim().trim_matches(|c| c == '"' || c == '\'');
    flag_value(args.split_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_in_every_spelling_the_last_one_winning() {
        let v = |args: &[&str]| flag_value(args.iter().copied());
        assert_eq!(v(&["--collector.textfile.directory=/a"]), Some("/a".into()));
        assert_eq!(
            v(&["-collector.textfile.directory", "/b"]),
            Some("/b".into())
        );
        assert_eq!(
            v(&[
                "--collector.textfile.directory=\"/c\"",
                "--web.listen-address=:9100"
            ]),
            Some("/c".into())
        );
        assert_eq!(
            v(&[
                "--collector.textfile.directory=/a",
                "--collector.textfile.directory=/d"
            ]),
            Some("/d".into())
        );
        assert_eq!(v(&["--collector.textfile.directory=rel"]), None);
        assert_eq!(v(&["--collector.textfile.directoryx=/a"]), None);
        assert_eq!(v(&["--collector.textfile"]), None);
    }
}
