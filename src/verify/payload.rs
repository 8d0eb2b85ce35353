//! What is installed: the payload at the target paths (sha256 vs MANIFEST), the diversions,
//! the running kubelet and version skew. Targets and diversions come from the swap's own
//! modules ([`crate::targets`], [`crate::divert`]), so verify and install agree on what is
//! ours. On a node without the package (no MANIFEST) these checks say so and the rest of
//! `verify` runs as usual.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::evidence::{self, Evidence};
use super::probes::{step, Probes, Settings};
use super::report::{Check, Metrics, Status};
use super::running;
use crate::config::SkewPolicy;
use crate::divert::{Diversion, DpkgDivert};
use crate::dpkg::{self, Dpkg};
use crate::manifest::{Manifest, ManifestError};
use crate::notes::error_chain;
use crate::paths::{self, Root};
use crate::state::{State, StateError};
use crate::targets::{self, InPlace, Target, Underneath};
use log::debug;

pub const NOT_INSTALLED: &str = "k8s-nokmem not installed: payload checks skipped";
/// The check that a running kubelet executes the payload (the fleet rule reads it).
pub(super) const RUNNING_KUBELET: &str = "running-kubelet";
/// What the kernel appends to `/proc/PID/exe` when the file was deleted or replaced.
const DELETED: &str = " (deleted)";
/// The unit asked for kubelet's MainPID when `[kubelet] restart` names none.
const KUBELET_UNIT: &str = "kubelet.service";
const REINSTALL: &str =
    "run `k8s-nokmem install` (or apt-get install --reinstall k8s-nokmem) to put the payload back";

/// True when the package is (or was) installed here: dpkg knows it, or the swap left state.
fn installed(root: &Root) -> bool {
    matches!(Dpkg::new(root).version(paths::PACKAGE), Ok(Some(_))) || State::path(root).exists()
}

pub fn checks(settings: &Settings, probes: &Probes, metrics: &mut Metrics) -> Vec<Check> {
    let mut checks = installed_checks(settings, &probes.state, metrics);
    if let Some(check) = journal_check(&settings.root) {
        checks.insert(0, check);
    }
    checks
}

/// An install or remove that was interrupted (SIGKILL, OOM, power loss) and not resolved yet:
/// its services may be stopped, its binaries half swapped.
fn journal_check(root: &Root) -> Option<Check> {
    let shown = root.describe(Path::new(paths::STATE_DIR).join(crate::journal::JOURNAL_FILE));
    let fix = "run `k8s-nokmem recover` as root (or `dpkg --configure -a`): it undoes an interrupted install, finishes an interrupted remove";
    match crate::journal::Journal::load(root) {
        Ok(None) => None,
        Ok(Some(j)) => Some(
            Check::new(
                "transaction",
                Status::Problem,
                format!(
                    "an interrupted {} (pid {}, {} of {} steps begun, {}) is pending at {shown}: services may be stopped and binaries half swapped",
                    j.command,
                    j.pid,
                    j.begun,
                    j.steps.len(),
                    j.phase
                ),
            )
            .fix(fix)
            .evidence(Evidence::Transaction(evidence::Transaction::Pending {
                begun: j.begun,
                command: j.command.to_string(),
                journal: shown,
                pid: j.pid,
                started: j.started,
                steps: j.steps.len(),
            })),
        ),
        Err(e) => Some(
            Check::new("transaction", Status::Unknown, error_chain(e.as_ref()))
                .fix(fix)
                .evidence(Evidence::Transaction(evidence::Transaction::Unreadable {
                    journal: shown,
                })),
        ),
    }
}

fn installed_checks(
    settings: &Settings,
    state: &Result<State, StateError>,
    metrics: &mut Metrics,
) -> Vec<Check> {
    let root = &settings.root;
    let shown = root.describe(paths::MANIFEST_FILE);
    let manifest = match Manifest::installed(root) {
        Ok(m) => m,
        Err(ManifestError::Read(e)) if e.is_not_found() && !installed(root) => {
            return vec![Check::new(
                "payload",
                Status::Skipped,
                format!("{NOT_INSTALLED} (no {shown})"),
            )
            .evidence(Evidence::Manifest(evidence::Manifest { manifest: shown }))]
        }
        Err(ManifestError::Read(e)) if e.is_not_found() => {
            return vec![Check::new(
                "payload",
                Status::Unknown,
                format!("the payload manifest {shown} is missing, yet k8s-nokmem is installed"),
            )
            .fix("reinstall the package: apt-get install --reinstall k8s-nokmem")
            .evidence(Evidence::Manifest(evidence::Manifest { manifest: shown }))]
        }
        Err(e) => {
            return vec![Check::new("payload", Status::Unknown, error_chain(&e))
                .fix("reinstall the package: apt-get install --reinstall k8s-nokmem")]
        }
    };
    let mut checks = Vec::new();
    let diversions = match step("diversions", || DpkgDivert::new(root).list()) {
        Ok(d) => Some(d),
        Err(e) => {
            checks.push(
                Check::new("diversions", Status::Unknown, error_chain(&e))
                    .fix("run `k8s-nokmem verify -v` as root; dpkg-divert must be on $PATH"),
            );
            None
        }
    };
    let dpkg = Dpkg::new(root);
    // An unreadable state (a newer k8s-nokmem wrote it, or it is damaged) leaves only the
    // configured paths to check: say so, never pass it off as the empty state.
    let empty = State::default();
    let state = match state {
        Ok(s) => s,
        Err(e) => {
            checks.push(
                Check::new(
                    "state",
                    Status::Unknown,
                    format!("only the configured paths were checked: {}", error_chain(e)),
                )
                .fix(e.fix()),
            );
            &empty
        }
    };
    let targets = match targets::resolve(
        root,
        &settings.config,
        &manifest,
        diversions.as_deref().unwrap_or(&[]),
        state,
        &dpkg,
    ) {
        Ok(t) => t,
        Err(e) => {
            checks.insert(
                0,
                Check::new(
                    "payload",
                    Status::Unknown,
                    format!("failed to find the target binaries: {}", error_chain(&e)),
                )
                .fix("set [runc] path and [kubelet] path in /etc/k8s-nokmem/k8s-nokmem.conf"),
            );
            return checks;
        }
    };
    checks.insert(0, payload_check(root, &targets, metrics));
    if let Some(d) = &diversions {
        checks.push(diversion_check(root, &targets, d));
    }
    if let Some(kubelet) = targets.iter().find(|t| t.name == "kubelet") {
        let size = manifest.binary(&kubelet.name).map(|b| b.size).unwrap_or(0);
        let in_place = metrics
            .binary_match
            .iter()
            .find(|(name, _)| *name == kubelet.name)
            .map(|(_, ok)| *ok);
        checks.push(running_kubelet_check(settings, kubelet, size, in_place));
        checks.push(skew_check(settings, &dpkg, kubelet));
    }
    checks.push(underneath_check(&dpkg, &targets, state, metrics));
    checks
}

/// The packages of the diverted originals (runc's and kubelet's) at the version recorded
/// when the payload was put in place: a security update of either lands at `.distrib` and
/// never runs, while the payload stays built from the old source.
fn underneath_check(
    dpkg: &Dpkg,
    targets: &[Target],
    state: &State,
    metrics: &mut Metrics,
) -> Check {
    const NAME: &str = "updates-underneath";
    let mut warnings = Vec::new();
    let mut unknown = Vec::new();
    let mut same = Vec::new();
    let mut evidence = Vec::new();
    for t in targets {
        let Some(recorded) = state.targets.get(&t.name).filter(|r| r.path == t.path) else {
            continue;
        };
        match step(&format!("package of {}", t.name), || {
            Underneath::check(dpkg, recorded)
        }) {
            Ok(u) => {
                metrics.original_upgraded.push((
                    t.name.clone(),
                    matches!(u, Underneath::Upgraded { .. } | Underneath::Removed { .. }),
                ));
                match (&u, u.warning(&t.name, &recorded.divert_to)) {
                    (_, Some(w)) => warnings.push(w),
                    (Underneath::Same { package, version }, None) => {
                        same.push(format!("{} '{package}' {version}", t.name))
                    }
                    _ => {}
                }
                evidence.push(evidence::OriginalPackage {
                    name: t.name.clone(),
                    path: t.path.clone(),
                    underneath: u,
                });
            }
            Err(e) => unknown.push(format!("{}: {}", t.name, error_chain(&e))),
        }
    }
    let evidence = Evidence::UpdatesUnderneath(evidence);
    if !warnings.is_empty() {
        Check::new(NAME, Status::Warning, warnings.join("; "))
            .fix("build the payload from the new packages' sources (scripts/build-payload.sh --runc-src/--kubernetes-src, see README 'Building for another kubelet version') and install that k8s-nokmem; until then the node runs the payload built from the old ones")
            .evidence(evidence)
    } else if !unknown.is_empty() {
        Check::new(NAME, Status::Unknown, unknown.join("; "))
            .fix("run `dpkg-query -W` by hand to see what dpkg says")
            .evidence(evidence)
    } else if same.is_empty() {
        Check::new(
            NAME,
            Status::Skipped,
            "no package version recorded at the swap (no package ships the originals, or the swap predates the record)",
        )
        .evidence(evidence)
    } else {
        Check::new(
            NAME,
            Status::Ok,
            format!(
                "the original packages are as at the swap: {}",
                same.join(", ")
            ),
        )
        .evidence(evidence)
    }
}

/// The binaries at the target paths are the payload, byte for byte (sha256 vs MANIFEST).
fn payload_check(root: &Root, targets: &[Target], metrics: &mut Metrics) -> Check {
    let mut bad = Vec::new();
    let mut unknown = Vec::new();
    let mut evidence = Vec::new();
    for t in targets {
        let shown = root.describe(&t.path);
        let now = step(&format!("payload {}", t.name), || {
            targets::in_place(root, t)
        });
        let (is_payload, what) = match &now {
            Ok(InPlace::Payload) => (Some(true), "payload".to_string()),
            Ok(InPlace::Missing) => (Some(false), "missing".to_string()),
            Ok(InPlace::Symlink(to)) => (Some(false), format!("symlink to '{}'", to.display())),
            Ok(InPlace::Other(sha)) => (Some(false), format!("sha256 {sha}")),
            Err(e) => (None, error_chain(e)),
        };
        match is_payload {
            Some(ok) => metrics.binary_match.push((t.name.clone(), ok)),
            None => unknown.push(format!("{shown}: {what}")),
        }
        evidence.push(evidence::PayloadTarget {
            found: t.found.clone(),
            in_place: what,
            name: t.name.clone(),
            path: t.path.clone(),
            payload_sha256: t.payload_sha256.clone(),
            payload_version: t.payload_version.clone(),
        });
        match &now {
            Ok(InPlace::Payload) | Err(_) => {}
            Ok(InPlace::Missing) => bad.push(format!("nothing is at {shown}")),
            Ok(InPlace::Symlink(to)) => bad.push(format!(
                "{shown} is a symlink to '{}', not the payload",
                to.display()
            )),
            Ok(InPlace::Other(sha)) => bad.push(format!(
                "{shown} is not the payload {} {} (sha256 {}, MANIFEST says {})",
                t.name,
                t.payload_version,
                targets::short(sha),
                targets::short(&t.payload_sha256)
            )),
        }
    }
    let evidence = Evidence::Payload(evidence);
    if !bad.is_empty() {
        Check::new("payload", Status::Problem, bad.join("; "))
            .fix(REINSTALL)
            .evidence(evidence)
    } else if !unknown.is_empty() {
        Check::new("payload", Status::Unknown, unknown.join("; "))
            .fix("run `k8s-nokmem verify` as root")
            .evidence(evidence)
    } else {
        let list: Vec<String> = targets
            .iter()
            .map(|t| {
                format!(
                    "{} {} at {}",
                    t.name,
                    t.payload_version,
                    root.describe(&t.path)
                )
            })
            .collect();
        Check::new(
            "payload",
            Status::Ok,
            format!("the nokmem payload is in place: {}", list.join(", ")),
        )
        .evidence(evidence)
    }
}

/// Each target path is diverted by k8s-nokmem to `<path>.distrib`, so that an upgrade of
/// the runc or kubelet package lands aside instead of over the payload.
fn diversion_check(root: &Root, targets: &[Target], diversions: &[Diversion]) -> Check {
    let mut bad = Vec::new();
    let mut lines = Vec::new();
    for t in targets {
        let current = diversions.iter().find(|d| d.path == t.path);
        if let Some(d) = current {
            lines.push(d.to_string());
        }
        match DpkgDivert::check_ours(current, &t.path, &t.divert_to) {
            Ok(true) => {}
            Ok(false) => bad.push(format!(
                "{} is not diverted: the next upgrade of its package overwrites the payload",
                root.describe(&t.path)
            )),
            Err(e) => bad.push(error_chain(&e)),
        }
    }
    let evidence = Evidence::Diversions(evidence::Diversions { diversions: lines });
    if bad.is_empty() {
        Check::new(
            "diversions",
            Status::Ok,
            format!("{} diversions by k8s-nokmem hold", targets.len()),
        )
        .evidence(evidence)
    } else {
        Check::new("diversions", Status::Problem, bad.join("; "))
            .fix("run `k8s-nokmem install` to divert them again (`dpkg-divert --list` shows them)")
            .evidence(evidence)
    }
}

/// The running kubelet executes the payload: not a deleted file, not the diverted original.
/// Which process is kubelet: [`running`] (systemd's MainPID, else root's processes).
fn running_kubelet_check(
    settings: &Settings,
    target: &Target,
    payload_size: u64,
    target_is_payload: Option<bool>,
) -> Check {
    const NAME: &str = RUNNING_KUBELET;
    let root = &settings.root;
    let units = if target.restart.is_empty() {
        vec![KUBELET_UNIT.to_string()]
    } else {
        target.restart.clone()
    };
    let started = std::time::Instant::now();
    let units = running::Units::ask(root, &settings.proc_root, &units);
    debug!(
        "verify kubelet units: {units:?} ({} ms)",
        started.elapsed().as_millis()
    );
    let procs = running::kubelets(&settings.proc_root, root, &units);
    if procs.is_empty() {
        let summary = match &units {
            running::Units::Loaded(loaded) => {
                let names: Vec<&str> = loaded.iter().map(|(u, _)| u.as_str()).collect();
                format!(
                    "{} has no main process: kubelet is not running",
                    names.join(", ")
                )
            }
            other => format!("no kubelet process is running ({})", other.how()),
        };
        return Check::new(NAME, Status::Skipped, summary);
    }
    let at_target = root.join(&target.path);
    let at_distrib = root.join(&target.divert_to);
    let payload = running::Payload {
        at_target: fs::metadata(&at_target)
            .ok()
            .map(|m| ((m.dev(), m.ino()), target_is_payload)),
        size: payload_size,
        sha256: &target.payload_sha256,
    };
    let mut bad = Vec::new();
    let mut unknown = Vec::new();
    let mut unreadable = Vec::new();
    let mut evidence = Vec::new();
    for p in &procs {
        let who = format!("kubelet (pid {}, {})", p.pid, p.source);
        let exe = match &p.exe {
            Ok(exe) => exe,
            Err(why) => {
                unreadable.push(format!("{who}: {why}"));
                continue;
            }
        };
        let verdict = if let Some(file) = exe.strip_suffix(DELETED) {
            bad.push(format!(
                "{who} runs '{file}', which was deleted or replaced since it started: it is not what is installed now"
            ));
            "deleted"
        } else if Path::new(exe) == at_distrib {
            bad.push(format!("{who} runs the diverted original '{exe}'"));
            "diverted original"
        } else {
            match step(&format!("running kubelet {}", p.pid), || {
                running::compare(&p.exe_link, payload)
            }) {
                Ok(running::Exe::Payload) => "payload",
                Ok(running::Exe::Other(what)) => {
                    bad.push(format!(
                        "{who} runs '{exe}' ({what}), which is not the payload kubelet {}",
                        target.payload_version
                    ));
                    "not the payload"
                }
                Ok(running::Exe::Unknown) => {
                    unknown.push(format!(
                        "{who} runs {}, whose content is unknown (see the payload check)",
                        root.describe(&target.path)
                    ));
                    "unknown"
                }
                Err(e) => {
                    unknown.push(format!("{who}: {}", error_chain(&e)));
                    "unknown"
                }
            }
        };
        evidence.push(evidence::KubeletProcess {
            exe: exe.clone(),
            pid: p.pid,
            source: p.source.to_string(),
            verdict,
        });
    }
    let evidence = Evidence::RunningKubelet(evidence);
    if !bad.is_empty() {
        Check::new(NAME, Status::Problem, bad.join("; "))
            .fix(format!(
                "restart kubelet (systemctl restart kubelet.service) so that it runs {}; if it is started from another path, set [kubelet] path in the config",
                root.describe(&target.path)
            ))
            .evidence(evidence)
    } else if !unknown.is_empty() {
        Check::new(NAME, Status::Unknown, unknown.join("; "))
            .fix("run `k8s-nokmem verify` as root")
            .evidence(evidence)
    } else if procs.len() == unreadable.len() {
        // the process exists, what it runs cannot be seen (no CAP_SYS_PTRACE): as before a
        // kubelet was known, not checked
        Check::new(
            NAME,
            Status::Skipped,
            format!("not checked: {}", unreadable.join("; ")),
        )
        .fix("run `k8s-nokmem verify` as root (it needs CAP_SYS_PTRACE to read /proc/PID/exe)")
    } else {
        let pids: Vec<String> = procs
            .iter()
            .filter(|p| p.exe.is_ok())
            .map(|p| p.pid.to_string())
            .collect();
        let mut summary = format!(
            "kubelet (pid {}) runs the payload kubelet {} ({})",
            pids.join(", "),
            target.payload_version,
            units.how()
        );
        if !unreadable.is_empty() {
            summary.push_str(&format!("; not checked: {}", unreadable.join("; ")));
        }
        Check::new(NAME, Status::Ok, summary).evidence(evidence)
    }
}

/// Where the binaries a service runs make no difference to kmem (`why`, from
/// [`super::verdict::binaries_irrelevant`]), a running kubelet that is not the payload (the
/// old one, left running by `[services] apply = auto`) is no problem: it is said so, as a
/// warning, with when it takes the payload.
pub(super) fn kmem_blind(checks: &mut [Check], why: &str) {
    for c in checks
        .iter_mut()
        .filter(|c| c.name == RUNNING_KUBELET && c.status == Status::Problem)
    {
        c.status = Status::Warning;
        c.summary = format!("{}; this does not matter for kmem here: {why}", c.summary);
        c.fix = Some(
            "nothing for kmem; kubelet starts on what is installed at its next restart (systemctl restart kubelet.service, best while the node is drained) or the node's next reboot".into(),
        );
    }
}

/// The kubelet package underneath the diversion has the payload's version (an upgraded
/// package lands in `<path>.distrib` while the payload keeps running).
fn skew_check(settings: &Settings, dpkg: &Dpkg, target: &Target) -> Check {
    const NAME: &str = "version-skew";
    let owners = match dpkg.owners(&target.path) {
        Ok(o) => o,
        Err(e) => {
            return Check::new(NAME, Status::Unknown, error_chain(&e))
                .fix("run `dpkg-query -S` by hand to see what dpkg says")
        }
    };
    let Some(pkg) = owners.first() else {
        return Check::new(
            NAME,
            Status::Skipped,
            format!(
                "no package ships {} (payload kubelet {})",
                settings.root.describe(&target.path),
                target.payload_version
            ),
        );
    };
    let installed = match dpkg.version(pkg) {
        Ok(Some(v)) => v,
        Ok(None) => {
            return Check::new(
                NAME,
                Status::Skipped,
                format!("package '{pkg}' is not installed"),
            )
        }
        Err(e) => return Check::new(NAME, Status::Unknown, error_chain(&e)),
    };
    let evidence = Evidence::VersionSkew(evidence::VersionSkew {
        package: pkg.clone(),
        package_version: installed.clone(),
        payload_version: target.payload_version.clone(),
    });
    let (want, have) = (
        dpkg::major_minor(&target.payload_version),
        dpkg::major_minor(&installed),
    );
    if want.is_none() || have.is_none() || want == have {
        return Check::new(
            NAME,
            Status::Ok,
            format!(
                "payload kubelet {} matches package '{pkg}' {installed}",
                target.payload_version
            ),
        )
        .evidence(evidence);
    }
    let status = match settings.config.version_skew {
        SkewPolicy::Warn => Status::Warning,
        SkewPolicy::Refuse => Status::Problem,
    };
    Check::new(
        NAME,
        status,
        format!(
            "package '{pkg}' was upgraded to {installed} underneath the diversion, but the payload kubelet {} runs",
            target.payload_version
        ),
    )
    .fix(format!(
        "install a k8s-nokmem build for kubelet {installed}, or hold the package (apt-mark hold {pkg}) and reinstall {pkg} at {}",
        target.payload_version
    ))
    .evidence(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, Step};

    #[test]
    fn a_pending_journal_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        fs::create_dir_all(root.join(paths::STATE_DIR)).unwrap();
        assert!(journal_check(&root).is_none(), "no journal: no check");
        let mut j = Journal::new(
            crate::journal::Transaction::Install,
            vec![
                Step::Preflight,
                Step::Stop {
                    unit: "kubelet.service".into(),
                },
            ],
        );
        j.begun = 2;
        j.save(&root).unwrap();
        let check = journal_check(&root).unwrap();
        assert_eq!(check.status, Status::Problem);
        assert!(
            check.summary.contains("an interrupted install")
                && check.summary.contains("2 of 2 steps begun")
                && check.summary.contains("/var/lib/k8s-nokmem/journal.json"),
            "{}",
            check.summary
        );
        assert!(check.fix.unwrap().contains("k8s-nokmem recover"));
        fs::write(root.join("/var/lib/k8s-nokmem/journal.json"), "{").unwrap();
        assert_eq!(journal_check(&root).unwrap().status, Status::Unknown);
    }
}
