//! `/etc/k8s-nokmem/k8s-nokmem.conf`: an INI file whose every key is optional. Raw text is
//! parsed by rust-ini, then validated into [`Config`] with defaults. An unknown key is a
//! warning (a newer conffile on an older helper must not break a node); a bad value is an
//! error naming the file, line, key, value and what would be accepted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ini::Ini;
use log::{debug, warn};

use crate::paths::{self, Root};

/// `[services] settle` by default: longer than one `RestartSec=10` of kubeadm's kubelet unit,
/// so a kubelet that exits a few seconds after it started is seen restarting.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(20);

/// The helper itself: never a target.
const HELPER_PATH: &str = "/usr/sbin/k8s-nokmem";

/// The two binaries we swap, in install order.
pub const TARGET_NAMES: [&str; 2] = ["runc", "kubelet"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config {0}")]
    Read(String, #[source] paths::FileError),
    #[error("syntax error in config {file} at line {line}, column {col}: {msg}")]
    Syntax {
        file: String,
        line: usize,
        col: usize,
        msg: String,
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
    /// The file the settings came from (None: defaults only).
    pub file: Option<PathBuf>,
    pub targets: Vec<TargetConfig>,
    /// Services stop in this order and start in reverse.
    pub service_order: Vec<String>,
    pub service_timeout: Duration,
    /// How long every (re)started service is watched after its start job (see
    /// `crate::systemd::settle`).
    pub service_settle: Duration,
    pub version_skew: SkewPolicy,
    pub verify: VerifyConfig,
    /// `[kernel] cmdline`.
    pub kernel_cmdline: CmdlineMode,
    /// `[services] apply`.
    pub apply: Apply,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            file: None,
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
            verify: VerifyConfig {
                kernel_wide_kmem: Severity::Problem,
                boot_wait: Duration::from_secs(120),
                cgroup_root: "/sys/fs/cgroup".into(),
                proc_root: "/proc".into(),
                zombie_warn_percent: 50,
                textfile_dir: TextfileDir::Auto,
            },
            kernel_cmdline: CmdlineMode::Auto,
            apply: Apply::Restart,
        }
    }
}

impl Config {
    /// Load the config: `explicit` (from `--config`, must exist) or the default file under
    /// `root` (a missing default file means defaults).
    pub fn load(root: &Root, explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, shown) = match explicit {
            Some(p) => (p.to_path_buf(), format!("'{}'", p.display())),
            None => (
                root.join(paths::CONFIG_FILE),
                root.describe(paths::CONFIG_FILE),
            ),
        };
        let text = match paths::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.is_not_found() && explicit.is_none() => {
                debug!("no config at {shown}: using defaults");
                return Ok(Config::default());
            }
            Err(e) => return Err(ConfigError::Read(shown, e)),
        };
        let mut config = Config::parse(&text, &shown)?;
        config.check_real_paths(root, &text, &shown)?;
        config.file = Some(path);
        Ok(config)
    }

    /// A fixed target path must be the file itself as seen inside `root`, not an alias
    /// through a symlinked directory (`/sbin/runc` when `/sbin -> usr/sbin`) or a symlink:
    /// dpkg knows, diverts and upgrades the real path only.
    fn check_real_paths(&self, root: &Root, text: &str, file: &str) -> Result<(), ConfigError> {
        for t in &self.targets {
            let TargetPath::Fixed(path) = &t.path else {
                continue;
            };
            let Some(real) = real_path_in(root, path) else {
                continue;
            };
            if real != *path {
                let value = path.display().to_string();
                let at = Located {
                    file,
                    text,
                    section: t.name,
                    key: "path",
                    value: &value,
                };
                return Err(at.bad(&format!(
                    "the real path '{}' ('{value}' goes through a symlink on this node); set path = {}",
                    real.display(),
                    real.display()
                )));
            }
        }
        Ok(())
    }

    /// Parse config text; `file` names it in messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let ini = Ini::load_from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            line: e.line,
            col: e.col,
            msg: e.msg.to_string(),
        })?;
        let mut config = Config::default();
        for (section, props) in ini.iter() {
            let section = section.unwrap_or("");
            for (key, value) in props.iter() {
                let at = Located {
                    file,
                    text,
                    section,
                    key,
                    value: value.trim(),
                };
                config.apply(&at)?;
            }
        }
        Ok(config)
    }

    fn apply(&mut self, at: &Located<'_>) -> Result<(), ConfigError> {
        let v = at.value;
        match (at.section, at.key) {
            (name @ ("runc" | "kubelet"), "path") => {
                let path = if v == "auto" {
                    TargetPath::Auto
                } else {
                    TargetPath::Fixed(target_path(at)?)
                };
                let other = if name == "runc" { "kubelet" } else { "runc" };
                if path != TargetPath::Auto && self.target(other).is_some_and(|t| t.path == path) {
                    return Err(at.bad(&format!(
                        "a path different from [{other}] path: runc and kubelet are two binaries; set each to its own file"
                    )));
                }
                self.target_mut(name, |t| t.path = path);
            }
            (name @ ("runc" | "kubelet"), "restart") => {
                let restart = units(at)?;
                self.target_mut(name, |t| t.restart = restart);
            }
            ("kubelet", "version-skew") => {
                self.version_skew = match v {
                    "warn" => SkewPolicy::Warn,
                    "refuse" => SkewPolicy::Refuse,
                    _ => return Err(at.bad("'warn' or 'refuse'")),
                };
            }
            ("services", "order") => self.service_order = units(at)?,
            ("services", "timeout") => self.service_timeout = positive_duration(at)?,
            ("services", "settle") => self.service_settle = positive_duration(at)?,
            ("verify", "kernel-wide-kmem") => {
                self.verify.kernel_wide_kmem = match v {
                    "problem" => Severity::Problem,
                    "warning" => Severity::Warning,
                    "ignore" => Severity::Ignore,
                    _ => return Err(at.bad("'problem', 'warning' or 'ignore'")),
                };
            }
            ("kernel", "cmdline") => {
                self.kernel_cmdline = match v {
                    "auto" => CmdlineMode::Auto,
                    "manage" => CmdlineMode::Manage,
                    "leave" => CmdlineMode::Leave,
                    _ => return Err(at.bad("'auto', 'manage' or 'leave'")),
                };
            }
            ("services", "apply") => {
                self.apply = match v {
                    "restart" => Apply::Restart,
                    "reboot" => Apply::Reboot,
                    _ => return Err(at.bad("'restart' or 'reboot'")),
                };
            }
            ("verify", "boot-wait") => self.verify.boot_wait = duration(at)?,
            ("verify", "cgroup-root") => self.verify.cgroup_root = abs_path(at)?,
            ("verify", "proc-root") => self.verify.proc_root = abs_path(at)?,
            ("verify", "textfile-dir") => {
                self.verify.textfile_dir = match v {
                    "auto" => TextfileDir::Auto,
                    _ if v.starts_with('/') => TextfileDir::Path(v.into()),
                    _ => return Err(at.bad("'auto' or an absolute path")),
                };
            }
            ("verify", "zombie-warn-percent") => {
                self.verify.zombie_warn_percent = match v.parse::<u8>() {
                    Ok(p) if (1..=100).contains(&p) => p,
                    _ => return Err(at.bad("a whole number from 1 to 100")),
                };
            }
            _ => warn!(
                "config {} line {}: unknown key '{}' in section [{}] ignored",
                at.file,
                at.line(),
                at.key,
                at.section
            ),
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
}

/// A key being applied, with what is needed to point at it in an error.
struct Located<'a> {
    file: &'a str,
    text: &'a str,
    section: &'a str,
    key: &'a str,
    value: &'a str,
}

impl Located<'_> {
    /// 1-based line of the key in its section (the last one when repeated), 0 if not found.
    fn line(&self) -> usize {
        let mut in_section = self.section.is_empty();
        let mut found = 0;
        for (i, raw) in self.text.lines().enumerate() {
            let line = raw.trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                in_section = name.trim() == self.section;
            } else if in_section
                && line
                    .split_once('=')
                    .is_some_and(|(k, _)| k.trim() == self.key)
            {
                found = i + 1;
            }
        }
        found
    }

    fn bad(&self, expected: &str) -> ConfigError {
        ConfigError::BadValue(Box::new(BadValue {
            file: self.file.to_string(),
            line: self.line(),
            section: self.section.to_string(),
            key: self.key.to_string(),
            value: self.value.to_string(),
            expected: expected.to_string(),
        }))
    }
}

/// A space-separated list of systemd unit names.
fn units(at: &Located<'_>) -> Result<Vec<String>, ConfigError> {
    let units: Vec<String> = at.value.split_whitespace().map(str::to_string).collect();
    let valid = |u: &String| {
        u.contains('.')
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
    };
    if units.iter().all(valid) {
        Ok(units)
    } else {
        Err(at.bad("unit names separated by spaces, such as 'kubelet.service docker.service'"))
    }
}

/// `90`, `90s`, `2m`, `500ms`.
fn duration(at: &Located<'_>) -> Result<Duration, ConfigError> {
    parse_duration(at.value).ok_or_else(|| at.bad("a duration such as 90s, 2m or 500ms"))
}

/// Parse `90`, `90s`, `2m`, `1h`, `500ms` (pure, for tests).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

/// A duration above zero (`0s` would wait for nothing).
fn positive_duration(at: &Located<'_>) -> Result<Duration, ConfigError> {
    match parse_duration(at.value) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(at.bad("a duration above zero such as 90s, 2m or 500ms")),
    }
}

/// A binary to divert: an absolute path in canonical form (no `.`, `..`, `//` or trailing
/// `/`), not one of ours.
fn target_path(at: &Located<'_>) -> Result<PathBuf, ConfigError> {
    let path = Path::new(at.value);
    if !path.is_absolute() {
        return Err(
            at.bad("'auto' or an absolute path such as /usr/bin/kubelet; write the full path")
        );
    }
    let lexical = lexical_form(path);
    if lexical.as_os_str() != path.as_os_str() {
        return Err(at.bad(&format!(
            "a canonical path without '.', '..', '//' or a trailing '/', such as '{}'; write the binary's real path",
            lexical.display()
        )));
    }
    if path.starts_with(paths::PAYLOAD_DIR) {
        return Err(at.bad(&format!(
            "a path outside {}/ (that is k8s-nokmem's payload, not the node's binary); set the path of the node's {}",
            paths::PAYLOAD_DIR,
            at.section
        )));
    }
    if path == Path::new(HELPER_PATH) {
        return Err(at.bad(&format!(
            "the path of the node's {}, not k8s-nokmem's own helper",
            at.section
        )));
    }
    Ok(path.to_path_buf())
}

/// Where `path` really is inside `root`: every symlink resolved, also the last component
/// when it is a link to an existing file; `None` when its directory does not exist.
fn real_path_in(root: &Root, path: &Path) -> Option<PathBuf> {
    if let Some(real) = crate::targets::resolve_in_root(root, path) {
        return Some(real);
    }
    let (dir, name) = (path.parent()?, path.file_name()?);
    crate::targets::resolve_in_root(root, dir).map(|d| d.join(name))
}

/// `path` with `.` dropped and `..` applied, without touching the disk.
fn lexical_form(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn abs_path(at: &Located<'_>) -> Result<PathBuf, ConfigError> {
    if at.value.starts_with('/') {
        Ok(at.value.into())
    } else {
        Err(at.bad("an absolute path"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_conffile_parses_to_the_defaults() {
        let text = include_str!("../debian/k8s-nokmem.conf");
        let parsed = Config::parse(text, "debian/k8s-nokmem.conf").unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn values_override_defaults() {
        let text = "[kubelet]\npath = /usr/local/bin/kubelet\nversion-skew = warn\n\
                    [services]\norder = kubelet.service containerd.service\ntimeout = 2m\n\
                    [verify]\nkernel-wide-kmem = warning\nboot-wait = 500ms\n";
        let c = Config::parse(text, "t").unwrap();
        assert_eq!(
            c.target("kubelet").unwrap().path,
            TargetPath::Fixed("/usr/local/bin/kubelet".into())
        );
        assert_eq!(c.version_skew, SkewPolicy::Warn);
        assert_eq!(
            c.service_order,
            vec!["kubelet.service", "containerd.service"]
        );
        assert_eq!(c.service_timeout, Duration::from_secs(120));
        assert_eq!(c.verify.kernel_wide_kmem, Severity::Warning);
        assert_eq!(c.verify.boot_wait, Duration::from_millis(500));
    }

    #[test]
    fn kernel_cmdline_and_apply() {
        let c = Config::parse(
            "[kernel]\ncmdline = leave\n[services]\napply = reboot\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.kernel_cmdline, CmdlineMode::Leave);
        assert_eq!(c.apply, Apply::Reboot);
        let err = Config::parse("[services]\napply = later\n", "t").unwrap_err();
        assert!(
            err.to_string().ends_with("expected 'restart' or 'reboot'"),
            "{err}"
        );
        let err = Config::parse("[kernel]\ncmdline = grub\n", "t").unwrap_err();
        assert!(
            err.to_string().contains("'auto', 'manage' or 'leave'"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_file_line_key_and_value() {
        let cases = [
            (
                "[kubelet]\n\nversion-skew = maybe\n",
                3,
                "version-skew",
                "maybe",
            ),
            ("[runc]\npath = usr/bin/runc\n", 2, "path", "usr/bin/runc"),
            ("[services]\ntimeout = soon\n", 2, "timeout", "soon"),
            (
                "[services]\norder = kubelet docker.service\n",
                2,
                "order",
                "kubelet docker.service",
            ),
            (
                "[verify]\nzombie-warn-percent = 0\n",
                2,
                "zombie-warn-percent",
                "0",
            ),
        ];
        for (text, line, key, value) in cases {
            let err = Config::parse(text, "'/etc/k8s-nokmem/k8s-nokmem.conf'").unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("line {line}:"))
                    && msg.contains(key)
                    && msg.contains(&format!("'{value}'"))
                    && msg.contains("/etc/k8s-nokmem/k8s-nokmem.conf"),
                "case {key}={value}: {msg}"
            );
        }
    }

    #[test]
    fn target_paths_and_durations_are_validated() {
        // (case, text, line, key, value, words of the fix)
        let cases = [
            (
                "dot-dot",
                "[runc]\npath = /usr/bin/../sbin/runc\n",
                2,
                "path",
                "/usr/bin/../sbin/runc",
                "'/usr/sbin/runc'",
            ),
            (
                "dot",
                "[kubelet]\npath = /usr/bin/./kubelet\n",
                2,
                "path",
                "/usr/bin/./kubelet",
                "'/usr/bin/kubelet'",
            ),
            (
                "double slash",
                "[kubelet]\npath = /usr//bin/kubelet\n",
                2,
                "path",
                "/usr//bin/kubelet",
                "'/usr/bin/kubelet'",
            ),
            (
                "trailing slash",
                "[kubelet]\npath = /usr/bin/kubelet/\n",
                2,
                "path",
                "/usr/bin/kubelet/",
                "'/usr/bin/kubelet'",
            ),
            (
                "relative",
                "[runc]\npath = runc\n",
                2,
                "path",
                "runc",
                "absolute path",
            ),
            (
                "the payload",
                "[kubelet]\npath = /usr/lib/k8s-nokmem/kubelet\n",
                2,
                "path",
                "/usr/lib/k8s-nokmem/kubelet",
                "outside /usr/lib/k8s-nokmem/",
            ),
            (
                "the helper",
                "[runc]\n\npath = /usr/sbin/k8s-nokmem\n",
                3,
                "path",
                "/usr/sbin/k8s-nokmem",
                "not k8s-nokmem's own helper",
            ),
            (
                "same file",
                "[runc]\npath = /usr/bin/x\n[kubelet]\npath = /usr/bin/x\n",
                4,
                "path",
                "/usr/bin/x",
                "different from [runc] path",
            ),
            (
                "zero timeout",
                "[services]\ntimeout = 0s\n",
                2,
                "timeout",
                "0s",
                "above zero",
            ),
            (
                "zero settle",
                "[services]\nsettle = 0\n",
                2,
                "settle",
                "0",
                "above zero",
            ),
            (
                "bad settle",
                "[services]\nsettle = a while\n",
                2,
                "settle",
                "a while",
                "above zero",
            ),
        ];
        for (case, text, line, key, value, fix) in cases {
            let err = Config::parse(text, "'/etc/k8s-nokmem/k8s-nokmem.conf'").unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("config '/etc/k8s-nokmem/k8s-nokmem.conf'")
                    && msg.contains(&format!("line {line}:"))
                    && msg.contains(&format!("{key} = '{value}'"))
                    && msg.contains(fix),
                "case '{case}': {msg}"
            );
        }
        // and what is fine
        let ok = "[runc]\npath = /usr/sbin/runc\n[kubelet]\npath = /usr/local/bin/kubelet\n\
                  [services]\nsettle = 5s\ntimeout = 500ms\n";
        let c = Config::parse(ok, "f").unwrap();
        assert_eq!(c.service_settle, Duration::from_secs(5));
        assert_eq!(c.service_timeout, Duration::from_millis(500));
        assert_eq!(Config::default().service_settle, DEFAULT_SETTLE);
    }

    #[test]
    fn a_target_path_through_a_symlink_is_refused_with_the_real_path() {
        // a usrmerged root: /sbin -> usr/sbin, and a /usr/bin/runc -> ../sbin/runc link
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(root.join("/usr/sbin")).unwrap();
        std::fs::create_dir_all(root.join("/usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("/etc/k8s-nokmem")).unwrap();
        std::fs::write(root.join("/usr/sbin/runc"), b"runc").unwrap();
        std::os::unix::fs::symlink("usr/sbin", root.join("/sbin")).unwrap();
        std::os::unix::fs::symlink("../sbin/runc", root.join("/usr/bin/runc")).unwrap();
        let cases = [
            ("directory alias", "/sbin/runc", Some("/usr/sbin/runc")),
            (
                "alias of a missing file",
                "/sbin/kubelet-none",
                Some("/usr/sbin/kubelet-none"),
            ),
            (
                "symlink to the binary",
                "/usr/bin/runc",
                Some("/usr/sbin/runc"),
            ),
            ("the real file", "/usr/sbin/runc", None),
            ("not there yet", "/usr/sbin/nothing", None),
            ("no such directory", "/opt/none/runc", None),
        ];
        for (case, value, want) in cases {
            let text = format!("# test\n[runc]\npath = {value}\n");
            std::fs::write(root.join(paths::CONFIG_FILE), &text).unwrap();
            let got = Config::load(&root, None);
            match want {
                None => assert!(
                    got.is_ok(),
                    "case '{case}': {:?}",
                    got.err().map(|e| e.to_string())
                ),
                Some(real) => {
                    let msg = got.unwrap_err().to_string();
                    assert!(
                        msg.contains("k8s-nokmem.conf")
                            && msg.contains("line 3:")
                            && msg.contains(&format!("[runc] path = '{value}'"))
                            && msg.contains(&format!("set path = {real}")),
                        "case '{case}': {msg}"
                    );
                }
            }
        }
    }

    #[test]
    fn garbled_file_is_a_syntax_error_with_a_line() {
        let err = Config::parse("[kubelet\npath = /x\n", "f").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("syntax error in config f at line "),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let c = Config::parse("[kubelet]\ncolour = blue\n[new]\nx = 1\n", "f").unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn missing_default_file_means_defaults_but_missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert_eq!(Config::load(&root, None).unwrap(), Config::default());
        let err = Config::load(&root, Some(&dir.path().join("nope.conf"))).unwrap_err();
        assert!(err.to_string().contains("nope.conf"), "{err}");
    }

    #[test]
    fn durations() {
        let cases = [
            ("90", Some(90_000)),
            ("90s", Some(90_000)),
            ("2m", Some(120_000)),
            ("250ms", Some(250)),
            ("1h", Some(3_600_000)),
            ("x", None),
            ("5 days", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(
                parse_duration(s).map(|d| d.as_millis() as u64),
                want,
                "case '{s}'"
            );
        }
    }
}
