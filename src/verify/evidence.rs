//! What each check saw, one type per check, so the JSON report, the human summary and the
//! textfile read the same fields and a misspelt name fails to compile. Every type
//! serialises to the JSON `verify --json` has always printed: fields are declared in the
//! order they appear there (sorted by name), and [`sorted`] keeps that order for nested
//! enums too. Plain data: the checks fill it in (the [`Cause`] of an active cgroup
//! included, which `causes` decides).

use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::cgroup::{Kind, Setup};
use crate::targets::{ChosenBy, Underneath};

/// The evidence of one check (`null` in JSON when a check has none).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    #[default]
    None,
    CgroupMode(CgroupMode),
    KernelKmem(KernelKmem),
    CgroupKmem(CgroupKmem),
    ZombieCgroups(ZombieCgroups),
    KernelLog(KernelLog),
    Transaction(Transaction),
    /// `payload` when the MANIFEST is missing: where it was looked for.
    Manifest(Manifest),
    /// `payload`: one entry per target.
    Payload(Vec<PayloadTarget>),
    Diversions(Diversions),
    /// `running-kubelet`: one entry per kubelet process.
    RunningKubelet(Vec<KubeletProcess>),
    VersionSkew(VersionSkew),
    /// `updates-underneath`: one entry per swapped target with a recorded package.
    UpdatesUnderneath(Vec<OriginalPackage>),
}

/// Serialise through `serde_json::Value`, whose maps sort their keys: the key order of the
/// evidence JSON is by name at every level (as it was when evidence was built with `json!`),
/// nested enums with a tag field included.
pub fn sorted<S: Serializer>(evidence: &Evidence, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(evidence)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

/// `cgroup-mode`: the hierarchies found in mountinfo, as seen from here.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupMode {
    pub memory: Option<PathBuf>,
    pub setup: Setup,
    pub unified: Option<PathBuf>,
}

/// `kernel-kmem`: the kernel release and command line the rule was decided on.
#[derive(Debug, Clone, Serialize)]
pub struct KernelKmem {
    pub cmdline: Option<String>,
    pub cmdline_nokmem: Option<bool>,
    pub release: Option<String>,
}

/// `cgroup-kmem`: how many cgroups were checked, and every one that accounts kmem.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupKmem {
    pub cgroups: Vec<ActiveCgroup>,
    pub checked: u64,
    /// The first few unreadable kmem files, with the error.
    pub errors: Vec<String>,
    pub kmem_active: usize,
    pub pods_with_kmem: usize,
    /// When the payload was swapped in (seconds since the epoch).
    pub swap_time: Option<i64>,
    pub unreadable: u64,
}

/// One cgroup that accounts kmem, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveCgroup {
    pub before_swap: Option<bool>,
    pub cause: Cause,
    pub container_id: Option<String>,
    pub created_before: i64,
    pub inherited_from: Option<String>,
    pub kind: Kind,
    pub kmem_usage_bytes: u64,
    pub path: String,
    pub pod_uid: Option<String>,
    pub slabinfo_entries: usize,
    /// The cause in words.
    pub why: &'static str,
}

/// Why a kmem-active cgroup is active, for the report and the fix. In the order of what to
/// fix first: the smallest cause of all active cgroups gives the one thing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Linux >= 4.6: every cgroup.
    KernelWide,
    /// kubepods or a QoS cgroup is active: every pod under it inherits kmem until reboot.
    KubepodsActive,
    /// Created after the swap: the binary that created it enables kmem (fix that before
    /// recreating pods, or they get kmem again).
    AfterSwap,
    /// Created before the payload was swapped in.
    BeforeSwap,
    /// The package is not installed (or no swap recorded).
    NotSwapped,
    /// Booted with nokmem, yet accounted.
    DespiteNokmem,
    /// Inherited from a pod cgroup that is active (that pod's cause is the one to fix).
    InheritedFromPod,
}

/// `zombie-cgroups`: the kernel's count against the directories, and the thresholds.
#[derive(Debug, Clone, Serialize)]
pub struct ZombieCgroups {
    pub directories: u64,
    pub limit: u64,
    pub num_cgroups: u64,
    pub problem_at: u64,
    pub warn_at: u64,
    pub zombies: u64,
}

/// `kernel-log`: what was scanned, and when the leak's messages were found, how many and
/// the first lines.
#[derive(Debug, Clone, Serialize)]
pub struct KernelLog {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_enospc: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<String>>,
    pub scanned: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slub: Option<u64>,
    pub source: PathBuf,
}

/// `transaction`: the pending journal, or only where it is when it cannot be read.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Transaction {
    Pending {
        begun: usize,
        command: String,
        journal: String,
        pid: u32,
        started: u64,
        steps: usize,
    },
    Unreadable {
        journal: String,
    },
}

/// `payload` without a MANIFEST: where it was looked for.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub manifest: String,
}

/// `payload`: what is at one target path.
#[derive(Debug, Clone, Serialize)]
pub struct PayloadTarget {
    pub found: ChosenBy,
    /// `payload`, `missing`, `symlink to '…'`, `sha256 …` or why it could not be read.
    pub in_place: String,
    pub name: String,
    pub path: PathBuf,
    pub payload_sha256: String,
    pub payload_version: String,
}

/// `diversions`: the diversions of the target paths, as `dpkg-divert --list` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct Diversions {
    pub diversions: Vec<String>,
}

/// `running-kubelet`: one kubelet process and what it runs.
#[derive(Debug, Clone, Serialize)]
pub struct KubeletProcess {
    pub exe: String,
    pub pid: u32,
    /// Why this process is kubelet: `MainPID of 'kubelet.service'`, or `a process named
    /// kubelet that root runs` where kubelet is not a unit.
    pub source: String,
    /// `payload`, `deleted`, `diverted original`, `not the payload` or `unknown`.
    pub verdict: &'static str,
}

/// `version-skew`: the kubelet package underneath against the payload.
#[derive(Debug, Clone, Serialize)]
pub struct VersionSkew {
    pub package: String,
    pub package_version: String,
    pub payload_version: String,
}

/// `updates-underneath`: how a swapped target's original package changed since the swap.
#[derive(Debug, Clone, Serialize)]
pub struct OriginalPackage {
    pub name: String,
    pub path: PathBuf,
    pub underneath: Underneath,
}
