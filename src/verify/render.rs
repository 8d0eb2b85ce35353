//! The four ways a [`VerifyReport`] leaves the program: a human summary, JSON, a Prometheus
//! textfile (written atomically for node_exporter's textfile collector) and the one line a
//! node-problem-detector custom plugin prints.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::evidence::{ActiveCgroup, Evidence};
use super::report::{Status, VerifyReport};
use super::verdict::Action;
use crate::fs::{self, FileError};
use crate::outcome::Outcome;

/// The textfile's name in the collector directory (node_exporter reads `*.prom`).
pub const TEXTFILE_NAME: &str = "k8s_nokmem.prom";
/// How many cgroups the human summary lists.
const SHOW_CGROUPS: usize = 10;

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Problem => "problem",
        Outcome::Unknown => "unknown",
    }
}

/// The human summary: the verdict, one line per check (with the kmem-active cgroups), and
/// the one thing to do.
pub fn human(report: &VerifyReport) -> String {
    let mut out = String::new();
    let node = &report.node;
    let mut about = Vec::new();
    if let Some(r) = &node.kernel_release {
        about.push(format!("Linux {r}"));
    }
    if let Some(s) = node.cgroup_setup {
        about.push(s.to_string());
    }
    let _ = writeln!(
        out,
        "k8s-nokmem verify: {}{}",
        outcome_name(report.status).to_uppercase(),
        if about.is_empty() {
            String::new()
        } else {
            format!(" ({})", about.join(", "))
        }
    );
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for check in &report.checks {
        let _ = writeln!(
            out,
            "  {:<8} {:<width$}  {}",
            check.status.to_string(),
            check.name,
            check.summary
        );
        if check.status > Status::Skipped {
            if let Evidence::CgroupKmem(kmem) = &check.evidence {
                let cgroups = &kmem.cgroups;
                for cg in cgroups.iter().take(SHOW_CGROUPS) {
                    let _ = writeln!(out, "  {:<8} {:<width$}    - {}", "", "", cgroup_line(cg));
                }
                if cgroups.len() > SHOW_CGROUPS {
                    let _ = writeln!(
                        out,
                        "  {:<8} {:<width$}    ... and {} more (--json lists every one)",
                        "",
                        "",
                        cgroups.len() - SHOW_CGROUPS
                    );
                }
            }
            if let Evidence::KernelLog(log) = &check.evidence {
                for line in log.lines.iter().flatten() {
                    let _ = writeln!(out, "  {:<8} {:<width$}    > {line}", "", "");
                }
            }
        }
    }
    let _ = writeln!(out, "effect: {}", effect_line(report));
    match report.first_fix() {
        Some(check) => {
            let _ = writeln!(out, "to do: {}", check.fix.as_deref().unwrap_or_default());
        }
        None => {
            let _ = writeln!(out, "to do: nothing");
        }
    }
    out
}

/// `reboot required: <reason>` and the like: what puts the fix in effect.
fn effect_line(report: &VerifyReport) -> String {
    let what = match report.action {
        Action::None => "in effect",
        Action::RecreatePods => "recreate pods",
        Action::Reboot => "reboot required",
        Action::Operator => "operator action needed",
    };
    format!("{what}: {}", report.reboot_required.reason)
}

fn cgroup_line(cg: &ActiveCgroup) -> String {
    let mut who = Vec::new();
    if let Some(uid) = &cg.pod_uid {
        who.push(format!("pod {uid}"));
    }
    if let Some(id) = &cg.container_id {
        who.push(format!("container {}", short_id(id)));
    }
    if who.is_empty() {
        who.push(cg.kind.name().to_string());
    }
    let amount = if cg.kmem_usage_bytes > 0 {
        format!("{} kmem", bytes(cg.kmem_usage_bytes))
    } else {
        format!("{} slab caches", cg.slabinfo_entries)
    };
    format!("{} '{}': {amount}; {}", who.join(" "), cg.path, cg.why)
}

fn short_id(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..12]
    } else {
        id
    }
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// The report as pretty JSON (with a trailing newline).
pub fn json(report: &VerifyReport) -> String {
    let mut s = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        format!("{{\"status\":\"unknown\",\"error\":\"failed to serialize the report: {e}\"}}")
    });
    s.push('\n');
    s
}

/// The node-problem-detector plugin line: the verdict, what puts the fix in effect and why
/// (first, as NPD keeps only the first 80 bytes unless `max_output_length` says more), then
/// the worst check; one line.
pub fn npd(report: &VerifyReport) -> String {
    let worst = report
        .checks
        .iter()
        .filter(|c| c.status.outcome() == report.status && report.status != Outcome::Ok)
        .max_by_key(|c| c.status);
    let detail = match worst {
        Some(c) => format!("{}: {}", c.name, c.summary),
        None => {
            let warnings = report
                .checks
                .iter()
                .filter(|c| c.status == Status::Warning)
                .count();
            if warnings > 0 {
                format!("kmem accounting is off ({warnings} warning(s): run k8s-nokmem verify)")
            } else {
                "kmem accounting is off for pod cgroups".to_string()
            }
        }
    };
    let status = outcome_name(report.status);
    let line = if report.action == Action::None {
        format!("{status}: {detail}")
    } else {
        format!(
            "{status}: {}: {}; {detail}",
            report.action.name(),
            report.reboot_required.reason
        )
    };
    line.replace('\n', " ")
}

/// The Prometheus text exposition of the report.
pub fn prometheus(report: &VerifyReport) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP k8s_nokmem_verify_{name} {help}");
        let _ = writeln!(out, "# TYPE k8s_nokmem_verify_{name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "k8s_nokmem_verify_{name}{labels} {value}");
        }
    };
    let m = &report.metrics;
    let one = |v: Option<u64>| {
        v.map(|v| vec![(String::new(), v as f64)])
            .unwrap_or_default()
    };
    let per_binary = |values: &[(String, bool)]| {
        values
            .iter()
            .map(|(name, v)| (format!("{{binary=\"{name}\"}}"), f64::from(u8::from(*v))))
            .collect::<Vec<_>>()
    };
    gauge(
        "status",
        "Result of the last k8s-nokmem verify run (1 for the current status).",
        &["ok", "problem", "unknown"]
            .iter()
            .map(|s| {
                let v = f64::from(u8::from(outcome_name(report.status) == *s));
                (format!("{{status=\"{s}\"}}"), v)
            })
            .collect::<Vec<_>>(),
    );
    gauge(
        "check_status",
        "Status of each check of the last run (1 for its current status).",
        &report
            .checks
            .iter()
            .map(|c| {
                (
                    format!("{{check=\"{}\",status=\"{}\"}}", c.name, c.status),
                    1.0,
                )
            })
            .collect::<Vec<_>>(),
    );
    gauge(
        "checked_cgroups",
        "Pod, container, QoS and docker memory cgroups checked.",
        &one(m.checked_cgroups),
    );
    gauge(
        "kmem_active_cgroups",
        "Checked memory cgroups that account kernel memory (kmem).",
        &one(m.kmem_active_cgroups),
    );
    gauge(
        "zombie_cgroups",
        "Memory cgroups the kernel still counts but that have no directory (leaked).",
        &one(m.zombie_cgroups),
    );
    gauge(
        "memory_cgroups",
        "Memory cgroups the kernel counts in /proc/cgroups, zombies included.",
        &one(m.memory_cgroups),
    );
    gauge(
        "memory_cgroup_id_limit",
        "Memory cgroup IDs available (16 bit).",
        &one(Some(super::cgroup::MEMCG_ID_LIMIT)),
    );
    gauge(
        "binary_match",
        "1 when the binary at the target path is the nokmem payload (sha256 as in the MANIFEST).",
        &per_binary(&m.binary_match),
    );
    gauge(
        "original_upgraded",
        "1 when the package of the diverted original changed since the swap (its update does not run).",
        &per_binary(&m.original_upgraded),
    );
    gauge(
        "last_run_timestamp_seconds",
        "When the last k8s-nokmem verify run ended, in seconds since the epoch.",
        &one(Some(report.timestamp)),
    );
    let _ = writeln!(
        out,
        "# HELP k8s_nokmem_reboot_required 1 when a (drained) reboot puts the kmem fix in effect on this node."
    );
    let _ = writeln!(out, "# TYPE k8s_nokmem_reboot_required gauge");
    let _ = writeln!(
        out,
        "k8s_nokmem_reboot_required {}",
        u8::from(report.reboot_required.required)
    );
    let _ = writeln!(
        out,
        "# HELP k8s_nokmem_action What puts the kmem fix in effect (1 for the current action): none, recreate-pods, reboot, operator."
    );
    let _ = writeln!(out, "# TYPE k8s_nokmem_action gauge");
    for action in Action::ALL {
        let _ = writeln!(
            out,
            "k8s_nokmem_action{{action=\"{}\"}} {}",
            action.name(),
            u8::from(action == report.action)
        );
    }
    out
}

/// Why the textfile was not written.
#[derive(Debug, thiserror::Error)]
pub enum TextfileError {
    /// A directory holds the name: no rename can replace it, and it is not ours to remove.
    #[error("'{}' is a directory, so the Prometheus textfile cannot be written there", path.display())]
    Directory { path: PathBuf },
    #[error(transparent)]
    Write(#[from] FileError),
}

/// Write `DIR/k8s_nokmem.prom` atomically (temp file in DIR, then rename), mode 0644.
pub fn write_textfile(dir: &Path, report: &VerifyReport) -> Result<PathBuf, TextfileError> {
    let path = dir.join(TEXTFILE_NAME);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
        return Err(TextfileError::Directory { path });
    }
    fs::atomic_write_bytes(&path, 0o644, prometheus(report).as_bytes())?;
    Ok(path)
}
