//! What `verify` reports: one [`Check`] per check (its [`Status`], summary, fix and
//! [`Evidence`]), the [`Metrics`] for monitoring, what the node is ([`NodeInfo`]) and the
//! whole [`VerifyReport`]. Plain data: the checks fill it, `render` prints it.

use std::path::PathBuf;

use serde::Serialize;

use super::cgroup::Setup;
use super::evidence::{self, Evidence};
use super::verdict::{self, Action, RebootRequired};
use crate::config::Severity;
use crate::outcome::Outcome;

/// How one check came out. Warning and skipped do not change the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Warning,
    Unknown,
    Problem,
}

impl Status {
    pub fn outcome(self) -> Outcome {
        match self {
            Status::Ok | Status::Skipped | Status::Warning => Outcome::Ok,
            Status::Unknown => Outcome::Unknown,
            Status::Problem => Outcome::Problem,
        }
    }

    pub(super) fn from_severity(severity: Severity) -> Status {
        match severity {
            Severity::Problem => Status::Problem,
            Severity::Warning => Status::Warning,
            Severity::Ignore => Status::Ok,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Warning => "warning",
            Status::Unknown => "unknown",
            Status::Problem => "problem",
        })
    }
}

/// One check: what it found, the evidence, and what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// One sentence for humans.
    pub summary: String,
    /// The one thing to do, when the status is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    #[serde(serialize_with = "evidence::sorted")]
    pub evidence: Evidence,
}

impl Check {
    pub(super) fn new(name: &'static str, status: Status, summary: impl Into<String>) -> Check {
        Check {
            name,
            status,
            summary: summary.into(),
            fix: None,
            evidence: Evidence::None,
        }
    }

    /// A check that could not tell, with why and what to do.
    pub fn new_unknown(
        name: &'static str,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(name, Status::Unknown, why).fix(fix)
    }

    /// A finding that does not change the outcome, with what to do.
    pub fn new_warning(
        name: &'static str,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(name, Status::Warning, why).fix(fix)
    }

    pub(super) fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    pub(super) fn evidence(mut self, evidence: Evidence) -> Check {
        self.evidence = evidence;
        self
    }
}

/// Numbers for monitoring (Prometheus textfile, JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    /// Pod, container, QoS and docker memory cgroups checked.
    pub checked_cgroups: Option<u64>,
    pub kmem_active_cgroups: Option<u64>,
    pub zombie_cgroups: Option<u64>,
    /// `num_cgroups` of the memory controller (live and zombie).
    pub memory_cgroups: Option<u64>,
    /// Per target binary: is the payload in place (absent when not installed).
    pub binary_match: Vec<(String, bool)>,
    /// Per swapped target: did its original's package change since the swap.
    pub original_upgraded: Vec<(String, bool)>,
}

/// What the node is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeInfo {
    pub kernel_release: Option<String>,
    pub cgroup_setup: Option<Setup>,
    pub memory_hierarchy: Option<PathBuf>,
    pub cmdline_nokmem: Option<bool>,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub status: Outcome,
    pub version: &'static str,
    /// Seconds since the epoch when the run ended.
    pub timestamp: u64,
    pub node: NodeInfo,
    pub checks: Vec<Check>,
    pub metrics: Metrics,
    /// Is a reboot what puts the fix in effect, and why (see [`verdict`]).
    pub reboot_required: RebootRequired,
    /// What puts the fix in effect: none, recreate-pods, reboot, operator.
    pub action: Action,
    /// The evidence the rule judged (`[services] apply = auto` decides from it too).
    #[serde(skip)]
    pub inputs: Option<verdict::Inputs>,
}

impl VerifyReport {
    /// The check whose fix is the one thing to do: the worst status first, then the order
    /// of the checks (kernel before cgroups before binaries).
    pub fn first_fix(&self) -> Option<&Check> {
        let worst = self
            .checks
            .iter()
            .filter(|c| c.fix.is_some() && c.status > Status::Skipped)
            .map(|c| c.status)
            .max()?;
        self.checks
            .iter()
            .find(|c| c.status == worst && c.fix.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::super::cgroup::{Kind, Qos};
    use super::super::evidence::*;
    use super::*;

    #[test]
    fn worst_fix_first() {
        let report = VerifyReport {
            status: Outcome::Problem,
            version: "0",
            timestamp: 0,
            node: NodeInfo::default(),
            checks: vec![
                Check::new("a", Status::Warning, "w").fix("fix a"),
                Check::new("b", Status::Unknown, "u").fix("fix b"),
                Check::new("c", Status::Problem, "p").fix("fix c"),
                Check::new("d", Status::Problem, "p").fix("fix d"),
            ],
            metrics: Metrics::default(),
            reboot_required: RebootRequired {
                required: false,
                reason: String::new(),
            },
            action: Action::None,
            inputs: None,
        };
        assert_eq!(report.first_fix().map(|c| c.name), Some("c"));
    }

    /// The JSON of each shape, keys by name at every level (nested enum tags included),
    /// exactly as `verify --json` has printed them since evidence was built with `json!`.
    #[test]
    fn evidence_serialises_with_keys_by_name_at_every_level() {
        let container = Kind::Container {
            pod_uid: "u1".into(),
            container_id: "c1".into(),
            qos: Qos::Burstable,
        };
        let cases = [
            ("none", Evidence::None, "null"),
            (
                "cgroup-kmem",
                Evidence::CgroupKmem(CgroupKmem {
                    cgroups: vec![ActiveCgroup {
                        before_swap: Some(true),
                        cause: Cause::BeforeSwap,
                        container_id: Some("c1".into()),
                        created_before: 5,
                        inherited_from: None,
                        kind: container,
                        kmem_usage_bytes: 4096,
                        path: "/kubepods/burstable/podu1/c1".into(),
                        pod_uid: Some("u1".into()),
                        slabinfo_entries: 0,
                        why: "w",
                    }],
                    checked: 3,
                    errors: vec![],
                    kmem_active: 1,
                    pods_with_kmem: 1,
                    swap_time: Some(10),
                    unreadable: 0,
                }),
                r#"{"cgroups":[{"before_swap":true,"cause":"before-swap","container_id":"c1","created_before":5,"inherited_from":null,"kind":{"container_id":"c1","kind":"container","pod_uid":"u1","qos":"burstable"},"kmem_usage_bytes":4096,"path":"/kubepods/burstable/podu1/c1","pod_uid":"u1","slabinfo_entries":0,"why":"w"}],"checked":3,"errors":[],"kmem_active":1,"pods_with_kmem":1,"swap_time":10,"unreadable":0}"#,
            ),
            (
                "kernel-log, nothing found",
                Evidence::KernelLog(KernelLog {
                    cgroup_enospc: None,
                    lines: None,
                    scanned: 5,
                    slub: None,
                    source: "/dev/kmsg".into(),
                }),
                r#"{"scanned":5,"source":"/dev/kmsg"}"#,
            ),
            (
                "transaction, unreadable",
                Evidence::Transaction(Transaction::Unreadable {
                    journal: "j".into(),
                }),
                r#"{"journal":"j"}"#,
            ),
            (
                "running-kubelet",
                Evidence::RunningKubelet(vec![KubeletProcess {
                    exe: "/usr/bin/kubelet".into(),
                    pid: 7,
                    source: "MainPID of 'kubelet.service'".into(),
                    verdict: "payload",
                }]),
                r#"[{"exe":"/usr/bin/kubelet","pid":7,"source":"MainPID of 'kubelet.service'","verdict":"payload"}]"#,
            ),
        ];
        for (case, evidence, want) in cases {
            let check = Check::new("c", Status::Ok, "s").evidence(evidence);
            let got = serde_json::to_string(&check).unwrap();
            let want = format!(r#"{{"name":"c","status":"ok","summary":"s","evidence":{want}}}"#);
            assert_eq!(got, want, "case {case}");
        }
    }
}
