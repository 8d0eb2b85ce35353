//! Status collection: the diversions held (ours, and others' of our targets), the binaries
//! in place against the MANIFEST, `state.json`, the last or interrupted transaction and the
//! services' states, gathered into a [`StatusReport`] (never failing: what cannot be read is
//! reported as unknown), and its human rendering. `k8s-nokmem status` prints it.

use std::path::{Path, PathBuf};

use log::debug;

use crate::config::Config;
use crate::divert::{Diversion, DpkgDivert};
use crate::dpkg::Dpkg;
use crate::journal::Journal;
use crate::lock::{self, LOCK_FILE};
use crate::manifest::Manifest;
use crate::notes::error_chain;
use crate::outcome::Outcome;
use crate::paths::{self, Root};
use crate::policy::ServicePolicy;
use crate::state::{Original, State, TargetState};
use crate::systemd::{ServiceManager, SystemdError, UnitState};
use crate::targets::{self, Underneath};

/// Where `status` reads the services' states from.
pub enum ServiceSource<'a> {
    Manager(&'a dyn ServiceManager),
    Unreachable(&'a SystemdError),
    Skipped(ServicePolicy),
}

/// One target as found on the node.
#[derive(Debug, serde::Serialize)]
pub struct TargetReport {
    pub name: String,
    pub path: PathBuf,
    pub divert_to: PathBuf,
    /// The `dpkg-divert --list` line for `path`, whoever holds it.
    pub diversion: Option<String>,
    pub diverted_by_us: bool,
    /// What is at `path`: `payload`, `missing`, `file <sha256>`, `symlink -> X`.
    pub in_place: String,
    pub payload_sha256: Option<String>,
    /// What is at `divert_to` (the original while diverted).
    pub original_now: String,
    pub recorded: Option<TargetState>,
    /// How the original's package changed since the swap (when recorded).
    pub underneath: Option<Underneath>,
    /// `swapped`, `original`, or `inconsistent`.
    pub verdict: String,
}

#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    pub root: PathBuf,
    /// `installed`, `not-installed`, `partial`, `interrupted`, `unknown`.
    pub installed: String,
    pub targets: Vec<TargetReport>,
    pub state_file: Option<State>,
    pub interrupted: Option<Journal>,
    pub last_transaction: Option<Journal>,
    pub lock_holder: Option<u32>,
    pub services: Vec<UnitState>,
    pub services_note: Option<String>,
    pub problems: Vec<String>,
    pub unknown: Vec<String>,
    /// Worth acting on, not inconsistent (exit 0): an update of an original's package that
    /// landed underneath the diversion.
    pub warnings: Vec<String>,
    pub outcome: Outcome,
    /// Debian's reboot-required flag files.
    pub reboot_flag: crate::reboot::Flag,
    /// The last verify run's verdict (`/run/k8s-nokmem/verify.json`): action and reason.
    pub effect: Option<Effect>,
}

/// What the last verify run said puts the fix in effect.
#[derive(Debug, serde::Serialize)]
pub struct Effect {
    pub action: String,
    pub reason: String,
}

/// The verdict of the last `verify --state` run, if any.
fn last_effect(root: &Root) -> Option<Effect> {
    let path = root.join(Path::new(paths::RUN_DIR).join(paths::VERIFY_FILE));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    Some(Effect {
        action: v.get("action")?.as_str()?.to_string(),
        reason: v
            .get("reboot_required")?
            .get("reason")?
            .as_str()?
            .to_string(),
    })
}

fn describe(o: &Original, payload: Option<&str>) -> String {
    match o {
        Original::Missing => "missing".to_string(),
        Original::File { sha256, .. } if Some(sha256.as_str()) == payload => "payload".to_string(),
        Original::File { sha256, size, .. } => format!("file {size} bytes sha256 {sha256}"),
        Original::Symlink { target } => format!("symlink -> {}", target.display()),
    }
}

/// Gather everything (never fails: what cannot be read is reported as unknown).
pub fn collect(
    root: &Root,
    config_path: Option<&Path>,
    services: ServiceSource<'_>,
) -> StatusReport {
    let mut problems = Vec::new();
    let mut unknown = Vec::new();
    let config = targets::load_config(root, config_path).unwrap_or_else(|e| {
        problems.push(error_chain(&e));
        Config::default()
    });
    let manifest = Manifest::installed(root)
        .map_err(|e| debug!("{}", error_chain(&e)))
        .ok();
    let diversions: Vec<Diversion> = match DpkgDivert::new(root).list() {
        Ok(d) => d,
        Err(e) => {
            unknown.push(format!("cannot list diversions: {}", error_chain(&e)));
            Vec::new()
        }
    };
    let state = match State::load(root) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(error_chain(&e));
            None
        }
    };
    // every path we might own: our diversions, recorded targets, configured targets
    let mut wanted: Vec<(String, PathBuf)> = Vec::new();
    let mut add = |name: String, path: PathBuf| {
        if !wanted.iter().any(|(_, p)| *p == path) {
            wanted.push((name, path));
        }
    };
    if let Some(s) = &state {
        for (name, t) in &s.targets {
            add(name.clone(), t.path.clone());
        }
    }
    for d in diversions.iter().filter(|d| d.is_ours()) {
        let name = d
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        add(name, d.path.clone());
    }
    if let Some(m) = &manifest {
        match targets::resolve(
            root,
            &config,
            m,
            &diversions,
            &state.clone().unwrap_or_default(),
            &Dpkg::new(root),
        ) {
            Ok(ts) => ts.into_iter().for_each(|t| add(t.name, t.path)),
            Err(e) => unknown.push(error_chain(&e)),
        }
    } else if !wanted.is_empty() {
        unknown.push(format!(
            "cannot read the payload manifest {}: the binaries in place cannot be checked",
            root.describe(paths::MANIFEST_FILE)
        ));
    }

    let seen = Seen {
        root,
        diversions: &diversions,
        state: state.as_ref(),
        manifest: manifest.as_ref(),
    };
    let mut reports = Vec::new();
    for (name, path) in wanted {
        reports.push(target_report(
            &seen,
            &name,
            &path,
            &mut problems,
            &mut unknown,
        ));
    }
    let mut warnings = Vec::new();
    let dpkg = Dpkg::new(root);
    for r in reports.iter_mut().filter(|r| r.diverted_by_us) {
        let Some(recorded) = &r.recorded else {
            continue;
        };
        match Underneath::check(&dpkg, recorded) {
            Ok(u) => {
                warnings.extend(u.warning(&r.name, &recorded.divert_to));
                r.underneath = Some(u);
            }
            Err(e) => unknown.push(format!(
                "cannot ask dpkg about {}'s package: {}",
                r.name,
                error_chain(&e)
            )),
        }
    }
    let swapped = reports.iter().filter(|r| r.diverted_by_us).count();
    let mut installed = if !unknown.is_empty() && reports.is_empty() {
        "unknown"
    } else if swapped == 0 {
        "not-installed"
    } else if swapped == reports.len() {
        "installed"
    } else {
        problems.push(format!(
            "partially installed: {swapped} of {} targets are swapped; run `k8s-nokmem install` or `k8s-nokmem remove`",
            reports.len()
        ));
        "partial"
    };

    let lock_holder = lock::holder_of(&root.join(Path::new(paths::STATE_DIR).join(LOCK_FILE)));
    let interrupted = Journal::load(root).unwrap_or_else(|e| {
        problems.push(error_chain(e.as_ref()));
        None
    });
    if let Some(pid) = lock_holder {
        unknown.push(format!(
            "a k8s-nokmem run holds the lock (pid {}): a transaction is in progress",
            pid.map(|p| p.to_string())
                .unwrap_or_else(|| "unknown".into())
        ));
    } else if let Some(j) = &interrupted {
        installed = "interrupted";
        problems.push(format!(
            "an interrupted {} transaction is journalled ({} of {} steps begun): the next `k8s-nokmem install` or `remove` resolves it",
            j.command,
            j.begun,
            j.steps.len()
        ));
    }
    let last_transaction = Journal::load_last(root).ok().flatten();

    let mut units = Vec::new();
    let services_note = match services {
        ServiceSource::Manager(m) => {
            for unit in &config.service_order {
                match m.state(unit) {
                    Ok(s) => {
                        if s.active_state == "failed" {
                            problems.push(format!(
                                "'{unit}' has failed (Result={}); see `journalctl -u {unit}`",
                                s.result
                            ));
                        }
                        units.push(s);
                    }
                    Err(e) => unknown.push(format!(
                        "cannot read '{unit}' over D-Bus: {}",
                        error_chain(&e)
                    )),
                }
            }
            None
        }
        ServiceSource::Unreachable(e) => {
            unknown.push(format!(
                "systemd runs but D-Bus is unreachable: {}",
                error_chain(e)
            ));
            None
        }
        ServiceSource::Skipped(ServicePolicy::Skip(reason)) => Some(format!("not read: {reason}")),
        ServiceSource::Skipped(ServicePolicy::Act) => None,
    };

    let outcome = if !problems.is_empty() {
        Outcome::Problem
    } else if !unknown.is_empty() {
        Outcome::Unknown
    } else {
        Outcome::Ok
    };
    StatusReport {
        root: root.path().to_path_buf(),
        installed: installed.to_string(),
        targets: reports,
        state_file: state,
        interrupted,
        last_transaction,
        lock_holder: lock_holder.flatten(),
        services: units,
        services_note,
        problems,
        unknown,
        warnings,
        outcome,
        reboot_flag: crate::reboot::read(root),
        effect: last_effect(root),
    }
}

/// What `status` read from the node once, which every target's report looks at.
struct Seen<'a> {
    root: &'a Root,
    diversions: &'a [Diversion],
    state: Option<&'a State>,
    manifest: Option<&'a Manifest>,
}

/// One target path: what is there, against the diversion, the state file and the payload.
fn target_report(
    seen: &Seen<'_>,
    name: &str,
    path: &Path,
    problems: &mut Vec<String>,
    unknown: &mut Vec<String>,
) -> TargetReport {
    let Seen {
        root,
        diversions,
        state,
        manifest,
    } = *seen;
    let diversion = diversions.iter().find(|d| d.path == path);
    let ours = diversion.is_some_and(|d| d.is_ours());
    let divert_to = diversion
        .map(|d| d.divert_to.clone())
        .unwrap_or_else(|| crate::divert::default_divert_to(path));
    let recorded = state
        .and_then(|s| s.targets.get(name))
        .filter(|t| t.path == path)
        .cloned();
    let payload_sha256 = manifest
        .and_then(|m| m.binary(name))
        .map(|b| b.sha256.clone());
    let probe = |p: &Path| Original::probe(name, &root.join(p));
    let (now, aside) = match (probe(path), probe(&divert_to)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            unknown.push(error_chain(&e));
            (Original::Missing, Original::Missing)
        }
    };
    let shown = root.describe(path);
    let mut bad = |msg: String| {
        problems.push(msg);
        "inconsistent"
    };
    let verdict = if ours {
        match (&now, &payload_sha256) {
            (Original::Missing, _) => bad(format!(
                "{shown} is diverted by k8s-nokmem but nothing is there; run `k8s-nokmem install`"
            )),
            (Original::File { sha256, .. }, Some(want)) if sha256 == want => {
                if recorded.is_none() {
                    bad(format!("{shown} is swapped but not recorded in state.json; run `k8s-nokmem install`"))
                } else {
                    "swapped"
                }
            }
            (_, None) => {
                unknown.push(format!(
                    "no payload sha256 for {name}: cannot check {shown}"
                ));
                "unknown"
            }
            (other, Some(want)) => bad(format!(
                "{shown} is {}, not the payload (sha256 {}); run `k8s-nokmem install`",
                other.describe(),
                targets::short(want)
            )),
        }
    } else {
        if let Some(d) = diversion {
            debug!("{shown}: {d}");
        }
        if recorded.is_some() {
            bad(format!(
                "state.json records {shown} as swapped, but k8s-nokmem does not divert it"
            ))
        } else {
            "original"
        }
    };
    TargetReport {
        name: name.to_string(),
        path: path.to_path_buf(),
        divert_to,
        diversion: diversion.map(|d| d.to_string()),
        diverted_by_us: ours,
        in_place: describe(&now, payload_sha256.as_deref()),
        original_now: describe(&aside, None),
        payload_sha256,
        recorded,
        underneath: None,
        verdict: verdict.to_string(),
    }
}

/// The human summary.
pub fn render(r: &StatusReport) -> String {
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!(
        "k8s-nokmem: {} (root {})",
        r.installed,
        r.root.display()
    ));
    for t in &r.targets {
        line(format!(
            "  {:<8} {}: {} (at path: {}; at {}: {})",
            t.name,
            t.path.display(),
            t.verdict,
            t.in_place,
            t.divert_to.display(),
            t.original_now
        ));
        if let Some(d) = &t.diversion {
            line(format!("           {d}"));
        }
    }
    for u in &r.services {
        line(format!(
            "  service  {}: {}/{} ({})",
            u.unit, u.active_state, u.sub_state, u.load_state
        ));
    }
    if let Some(n) = &r.services_note {
        line(format!("  services {n}"));
    }
    if let Some(j) = &r.last_transaction {
        line(format!(
            "  last transaction: {} {} ({} steps, started at {})",
            j.command,
            j.phase,
            j.steps.len(),
            j.started
        ));
    }
    let flag = &r.reboot_flag;
    line(format!(
        "  reboot   {}",
        match (flag.required, flag.by_us) {
            (false, _) => format!("not required ({} absent)", crate::reboot::FLAG),
            (true, true) => format!(
                "required: {} lists {}",
                crate::reboot::PKGS,
                flag.packages.join(", ")
            ),
            (true, false) => format!(
                "required by other packages ({}), not by k8s-nokmem",
                if flag.packages.is_empty() {
                    "none listed".to_string()
                } else {
                    flag.packages.join(", ")
                }
            ),
        }
    ));
    if let Some(e) = &r.effect {
        line(format!(
            "  effect   {} (last verify): {}",
            e.action, e.reason
        ));
    }
    for p in &r.problems {
        line(format!("problem: {p}"));
    }
    for w in &r.warnings {
        line(format!("warning: {w}"));
    }
    for u in &r.unknown {
        line(format!("unknown: {u}"));
    }
    s
}
