//! The helper's settings: the conffile `/etc/k8s-nokmem/k8s-nokmem.conf`, then the drop-ins
//! `/etc/k8s-nokmem/conf.d/*.conf` in lexical order, a later key winning (operators set keys
//! in a drop-in, so that a new release's conffile is never held back by an edited one).
//! Every key is optional. Text is read strictly by [`syntax`], then each value is validated
//! into [`Config`] over the defaults. An unknown key is a warning (a newer drop-in on an older
//! helper must not break a node); a bad value is an error naming the file, line, key, value
//! and what would be accepted. [`Sources`] keeps where each effective value came from.
//!
//! Parsing reads the config files and nothing else on the node: a value is checked against
//! the node (a target path through a symlink) where it is used, in `targets::resolve`, with
//! [`Config::bad_setting`] locating the error at the line that set it.

mod sources;
pub mod syntax;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use log::{debug, warn};

use crate::fs;
use crate::paths::Root;

pub use sources::{render, Effective, Origin, Setting, Sources, DROPIN_DIR};
pub use values::{parse_duration, show_duration, MAX_DURATION, MIN_WAIT};

/// `[services] settle` by default: longer than one `RestartSec=10` of kubeadm's kubelet unit,
/// so a kubelet that exits a few seconds after it started is seen restarting.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(20);

/// The helper itself: never a target.
const HELPER_PATH: &str = "/usr/sbin/k8s-nokmem";

/// The two binaries we swap, in install order.
pub const TARGET_NAMES: [&str; 2] = ["runc", "kubelet"];

/// Every key the helper reads, with its default as the conffile writes it (commented out).
pub const KEYS: [(&str, &str, &str); 17] = [
    ("runc", "path", "auto"),
    ("runc", "restart", "docker.service"),
    ("runc", "containerd-skew", "refuse"),
    ("kubelet", "path", "auto"),
    ("kubelet", "restart", "kubelet.service"),
    ("kubelet", "version-skew", "refuse"),
    ("services", "order", "kubelet.service docker.service"),
    ("services", "timeout", "90s"),
    ("services", "apply", "auto"),
    ("services", "settle", "20s"),
    ("kernel", "cmdline", "auto"),
    ("verify", "kernel-wide-kmem", "problem"),
    ("verify", "boot-wait", "120s"),
    ("verify", "cgroup-root", "/sys/fs/cgroup"),
    ("verify", "proc-root", "/proc"),
    ("verify", "zombie-warn-percent", "50"),
    ("verify", "textfile-dir", "auto"),
];

/// The default of a known key, as written in the conffile.
pub fn default_of(section: &str, key: &str) -> Option<&'static str> {
    KEYS.iter()
        .find(|(s, k, _)| *s == section && *k == key)
        .map(|(_, _, d)| *d)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config {0}")]
    Read(String, #[source] fs::FileError),
    #[error("failed to list the config drop-ins in {0}")]
    ReadDir(String, #[source] fs::FileError),
    #[error("syntax error in config {file} at line {line}: {what}; {fix}")]
    Syntax {
        file: String,
        line: usize,
        what: String,
        fix: String,
    },
    #[error("{0}")]
    BadValue(Box<BadValue>),
}

/// A value that does not fit its key, with everything needed to find and fix it.
#[derive(Debug, thiserror::Error)]
#[error(
    "bad value in config {file} line {line}: [{section}] {key} = '{value}': expected {expected}"
)]
pub struct BadValue {
    pub file: String,
    pub line: usize,
    pub section: String,
    pub key: String,
    pub value: String,
    pub expected: String,
}

/// Where a target binary lives on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPath {
    /// Ask dpkg which package ships it, else try the usual places.
    Auto,
    Fixed(PathBuf),
}

/// One binary we replace: where it is and which services run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// `runc` or `kubelet`; also the payload file name.
    pub name: &'static str,
    pub path: TargetPath,
    /// Services restarted when this binary is swapped.
    pub restart: Vec<String>,
}

/// What to do when the payload kubelet's minor version differs from the installed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkewPolicy {
    Warn,
    Refuse,
}

/// The values of `[kubelet] version-skew` and `[runc] containerd-skew`.
const SKEW_POLICIES: [(&str, SkewPolicy); 2] =
    [("warn", SkewPolicy::Warn), ("refuse", SkewPolicy::Refuse)];

/// How a finding counts in the overall verify status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Problem,
    Warning,
    Ignore,
}

/// `[kernel] cmdline`: who puts `cgroup.memory=nokmem` on the kernel command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CmdlineMode {
    /// Manage it on nodes that use a cgroup v1 memory controller; leave v2-only nodes alone.
    Auto,
    /// Always manage it (grub drop-in).
    Manage,
    /// Never touch it: the operator owns the kernel command line.
    Leave,
}

/// `[services] apply`: how a swap takes effect in the running services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Apply {
    /// Stop the services, swap, start them (containers restart with docker).
    Restart,
    /// Swap with no service stopped, flag reboot-required for the fleet's reboot engine.
    Reboot,
    /// Restart where a restart puts the fix in effect now (Linux < 4.6 with a clean
    /// kubepods); as `reboot` where the running binaries matter and only a reboot replaces
    /// them (a kmem-active kubepods); neither where they make no difference to kmem (no
    /// cgroup v1 memory controller, Linux >= 4.6). Decided from verify's evidence before
    /// anything stops. The default.
    Auto,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyConfig {
    /// Linux >= 4.6 without `cgroup.memory=nokmem` accounts kmem in every memory cgroup.
    pub kernel_wide_kmem: Severity,
    /// How long the boot check waits for pod cgroups to appear.
    pub boot_wait: Duration,
    /// The cgroup file system (recorded trees can be checked by pointing elsewhere).
    pub cgroup_root: PathBuf,
    /// procfs.
    pub proc_root: PathBuf,
    /// Warn when zombie memory cgroups exceed this share of the 65535 IDs (percent).
    pub zombie_warn_percent: u8,
    /// node_exporter's textfile collector directory (`verify --textfile` without DIR).
    pub textfile_dir: TextfileDir,
}

/// `[verify] textfile-dir`: `auto` (the directory the node's node_exporter reads, see
/// `crate::verify::textfile`) or a path.
#[derive(Debug, Clone, PartialEq)]
pub enum TextfileDir {
    Auto,
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where each effective value came from, and the files read.
    pub sources: Sources,
    pub targets: Vec<TargetConfig>,
    /// Services stop in this order and start in reverse.
    pub service_order: Vec<String>,
    pub service_timeout: Duration,
    /// How long every (re)started service is watched after its start job (see
    /// `crate::systemd::settle`).
    pub service_settle: Duration,
    pub version_skew: SkewPolicy,
    /// `[runc] containerd-skew`: a payload runc the node's containerd does not support.
    pub containerd_skew: SkewPolicy,
    pub verify: VerifyConfig,
    /// `[kernel] cmdline`.
    pub kernel_cmdline: CmdlineMode,
    /// `[services] apply`.
    pub apply: Apply,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            sources: Sources::default(),
            targets: vec![
                TargetConfig {
                    name: "runc",
                    path: TargetPath::Auto,
                    restart: vec!["docker.service".into()],
                },
                TargetConfig {
                    name: "kubelet",
                    path: TargetPath::Auto,
                    restart: vec!["kubelet.service".into()],
                },
            ],
            service_order: vec!["kubelet.service".into(), "docker.service".into()],
            service_timeout: Duration::from_secs(90),
            service_settle: DEFAULT_SETTLE,
            version_skew: SkewPolicy::Refuse,
            containerd_skew: SkewPolicy::Refuse,
            verify: VerifyConfig {
                kernel_wide_kmem: Severity::Problem,
                boot_wait: Duration::from_secs(120),
                cgroup_root: "/sys/fs/cgroup".into(),
                proc_root: "/proc".into(),
                zombie_warn_percent: 50,
                textfile_dir: TextfileDir::Auto,
            },
            kernel_cmdline: CmdlineMode::Auto,
            apply: Apply::Auto,
        }
    }
}

impl Config {
    /// Load the config: `explicit` (from `--config`: that file alone, which must exist), or
    /// the conffile under `root` (missing: defaults) and then its drop-ins, in lexical order.
    pub fn load(root: &Root, explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for file in sources::files(root, explicit)? {
            config.read(&file)?;
        }
        config.check_same_path()?;
        Ok(config)
    }

    /// Parse one file's text over the defaults; `file` names it in messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let source = sources::File::named(file);
        config.apply_text(text, &source)?;
        config.check_same_path()?;
        Ok(config)
    }

    fn read(&mut self, file: &sources::File) -> Result<(), ConfigError> {
        let text = match fs::read_to_string(&file.host) {
            Ok(text) => text,
            Err(e) if e.is_not_found() && file.optional => {
                debug!("no config at {}: using defaults", file.shown);
                return Ok(());
            }
            Err(e) => return Err(ConfigError::Read(file.shown.clone(), e)),
        };
        self.apply_text(&text, file)?;
        self.sources.files.push(file.path.clone());
        Ok(())
    }

    /// Apply every entry of `text` (the file `file`) in order.
    fn apply_text(&mut self, text: &str, file: &sources::File) -> Result<(), ConfigError> {
        let entries = syntax::parse(text).map_err(|e| ConfigError::Syntax {
            file: file.shown.clone(),
            line: e.line,
            what: e.what,
            fix: e.fix,
        })?;
        for e in entries {
            let at = Located {
                file: &file.shown,
                line: e.line,
                section: e.section,
                key: e.key,
                value: e.value,
            };
            if default_of(e.section, e.key).is_none() {
                warn_unknown(&at);
                continue;
            }
            self.apply(&at)?;
            self.sources.record(file, &at);
        }
        Ok(())
    }

    /// runc and kubelet are two binaries: the same fixed path for both is refused, at the
    /// later of the two settings.
    fn check_same_path(&self) -> Result<(), ConfigError> {
        let (Some(runc), Some(kubelet)) = (self.target("runc"), self.target("kubelet")) else {
            return Ok(());
        };
        let TargetPath::Fixed(path) = &runc.path else {
            return Ok(());
        };
        if kubelet.path != runc.path {
            return Ok(());
        }
        let (name, other) = match (
            self.sources.get("runc", "path"),
            self.sources.get("kubelet", "path"),
        ) {
            (Some(r), Some(k)) if r.origin.seq > k.origin.seq => ("runc", "kubelet"),
            _ => ("kubelet", "runc"),
        };
        let value = path.display().to_string();
        Err(self.bad_setting(
            name,
            "path",
            &value,
            &format!(
                "a path different from [{other}] path: runc and kubelet are two binaries; set each to its own file"
            ),
        ))
    }

    /// A bad value found after parsing (across keys here, against the node where the value
    /// is used: `targets::resolve`), located where it was set.
    pub fn bad_setting(
        &self,
        section: &str,
        key: &str,
        value: &str,
        expected: &str,
    ) -> ConfigError {
        let (file, line) = match self.sources.get(section, key) {
            Some(s) => (s.origin.shown.as_str(), s.origin.line),
            None => ("(default)", 0),
        };
        Located {
            file,
            line,
            section,
            key,
            value,
        }
        .bad(expected)
    }

    fn apply(&mut self, at: &Located<'_>) -> Result<(), ConfigError> {
        let v = at.value;
        if v.is_empty() && !matches!(at.key, "restart" | "order") {
            return Err(at.bad(&format!(
                "a value; write one, or delete the line for the default '{}'",
                default_of(at.section, at.key).unwrap_or_default()
            )));
        }
        match (at.section, at.key) {
            (name @ ("runc" | "kubelet"), "path") => {
                let path = if v == "auto" {
                    TargetPath::Auto
                } else {
                    TargetPath::Fixed(values::target_path(at)?)
                };
                self.target_mut(name, |t| t.path = path);
            }
            (name @ ("runc" | "kubelet"), "restart") => {
                let default = default_of(name, "restart").unwrap_or_default();
                let restart = values::units(at, default)?;
                self.target_mut(name, |t| t.restart = restart);
            }
            ("kubelet", "version-skew") => {
                self.version_skew = values::one_of(at, &SKEW_POLICIES)?;
            }
            ("runc", "containerd-skew") => {
                self.containerd_skew = values::one_of(at, &SKEW_POLICIES)?;
            }
            ("services", "order") => {
                let default = default_of("services", "order").unwrap_or_default();
                self.service_order = values::units(at, default)?;
            }
            ("services", "timeout") => self.service_timeout = values::duration(at, MIN_WAIT)?,
            ("services", "settle") => self.service_settle = values::duration(at, MIN_WAIT)?,
            ("verify", "kernel-wide-kmem") => {
                self.verify.kernel_wide_kmem = values::one_of(
                    at,
                    &[
                        ("problem", Severity::Problem),
                        ("warning", Severity::Warning),
                        ("ignore", Severity::Ignore),
                    ],
                )?;
            }
            ("kernel", "cmdline") => {
                self.kernel_cmdline = values::one_of(
                    at,
                    &[
                        ("auto", CmdlineMode::Auto),
                        ("manage", CmdlineMode::Manage),
                        ("leave", CmdlineMode::Leave),
                    ],
                )?;
            }
            ("services", "apply") => {
                self.apply = values::one_of(
                    at,
                    &[
                        ("restart", Apply::Restart),
                        ("reboot", Apply::Reboot),
                        ("auto", Apply::Auto),
                    ],
                )?;
            }
            // 0s: do not wait for pods at boot
            ("verify", "boot-wait") => {
                self.verify.boot_wait = values::duration(at, Duration::ZERO)?;
            }
            ("verify", "cgroup-root") => self.verify.cgroup_root = values::abs_path(at)?,
            ("verify", "proc-root") => self.verify.proc_root = values::abs_path(at)?,
            ("verify", "textfile-dir") => {
                self.verify.textfile_dir = if at.value == "auto" {
                    TextfileDir::Auto
                } else if at.value.starts_with('/') {
                    TextfileDir::Path(at.value.into())
                } else {
                    return Err(at.bad("'auto' or an absolute path"));
                };
            }
            ("verify", "zombie-warn-percent") => {
                self.verify.zombie_warn_percent = match v.parse::<u8>() {
                    Ok(p) if (1..=100).contains(&p) => p,
                    _ => return Err(at.bad("a whole number from 1 to 100")),
                };
            }
            _ => warn_unknown(at),
        }
        Ok(())
    }

    fn target_mut(&mut self, name: &str, change: impl FnOnce(&mut TargetConfig)) {
        if let Some(target) = self.targets.iter_mut().find(|t| t.name == name) {
            change(target);
        }
    }

    /// The configured target named `name` (`runc` or `kubelet`).
    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// Every known key, its effective value and where it came from.
    pub fn effective(&self) -> Vec<Effective> {
        self.sources.effective()
    }
}

/// An unknown key: a warning naming where it is, and the known key it may be a typo of.
fn warn_unknown(at: &Located<'_>) {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let near = |a: &str, b: &str| a == b || (a.len() > 3 && edit_distance(a, b) <= 2);
    let hint = KEYS
        .iter()
        .find(|(s, k, _)| near(&norm(s), &norm(at.section)) && near(&norm(k), &norm(at.key)))
        .map(|(s, k, _)| format!(" (did you mean [{s}] {k}?)"))
        .unwrap_or_default();
    warn!(
        "config {} line {}: unknown key '{}' in section [{}] ignored{hint}",
        at.file, at.line, at.key, at.section
    );
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// A key being applied, with what is needed to point at it in an error.
pub(crate) struct Located<'a> {
    file: &'a str,
    /// 1-based line of the key in `file`.
    line: usize,
    section: &'a str,
    key: &'a str,
    value: &'a str,
}

impl Located<'_> {
    fn bad(&self, expected: &str) -> ConfigError {
        ConfigError::BadValue(Box::new(BadValue {
            file: self.file.to_string(),
            line: self.line,
            section: self.section.to_string(),
            key: self.key.to_string(),
            value: self.value.to_string(),
            expected: expected.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests;
