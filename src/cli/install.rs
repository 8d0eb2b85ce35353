//! `k8s-nokmem install`: divert the original runc and kubelet, place the nokmem payload,
//! restart the services that run a changed binary. One journalled transaction (see
//! `crate::journal`); a re-run with an unchanged payload changes and restarts nothing.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use log::{debug, info, warn};

use super::{Ctx, Outcome};
use crate::config::{Apply, Config, SkewPolicy};
use crate::divert::{Diversion, DpkgDivert};
use crate::dpkg::{self, Dpkg};
use crate::journal::{self, Failpoint, Node, Services, Step};
use crate::lock::{Lock, LOCK_FILE};
use crate::manifest::Manifest;
use crate::notes::{with_note, WithNote};
use crate::paths::{self, Root};
use crate::policy::{self, ServicePolicy, Verdict};
use crate::systemd::ServiceManager;
use crate::targets::{self, InPlace, Original, PackageVersion, State, Target, TargetState};

#[derive(Debug, clap::Args)]
pub struct Install {}

impl Install {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<Outcome> {
        // before any thread starts: SIGHUP/SIGINT/SIGTERM wait until the transaction is over
        let _signals = crate::signals::Deferred::block("install")?;
        info!("install v{} root={}", env!("CARGO_PKG_VERSION"), ctx.root);
        let session = Session::open(ctx, "install")?;
        let config = ctx.config().map_err(|e| preflight_failed("install", e))?;
        let connected = session.connect()?;
        let before = super::effect::state_stamp(&ctx.root);
        install(ctx, &session, &config, connected.as_deref())?;
        let swapped = super::effect::state_stamp(&ctx.root) != before;
        super::effect::after_install(ctx, &config, swapped);
        Ok(Outcome::Ok)
    }
}

/// What both install and remove set up first: the lock and the failpoint.
pub(super) struct Session {
    pub _lock: Lock,
    pub failpoint: Option<Failpoint>,
    pub policy: ServicePolicy,
}

impl Session {
    pub fn open(ctx: &Ctx, command: &str) -> anyhow::Result<Session> {
        let failpoint = Failpoint::from_env()?;
        let dir = ctx.root.join(paths::STATE_DIR);
        paths::create_dir_all(&dir, 0o755)
            .with_context(|| format!("failed to prepare the state directory for {command}"))?;
        let lock = Lock::acquire(&dir.join(LOCK_FILE))
            .map_err(anyhow::Error::from)
            .note("wait for the other run to finish (dpkg may be running it); `k8s-nokmem status` shows the node")?;
        debug!("holding lock '{}'", lock.path().display());
        Ok(Session {
            _lock: lock,
            failpoint,
            policy: ServicePolicy::detect(&ctx.root),
        })
    }

    /// The systemd client when services are acted on; unreachable D-Bus while systemd runs
    /// is an error before any change.
    pub fn connect(&self) -> anyhow::Result<Option<Box<dyn ServiceManager>>> {
        if self.policy != ServicePolicy::Act {
            return Ok(None);
        }
        let manager = policy::connect()
            .context("failed to reach systemd over D-Bus, although /run/systemd/system exists; nothing was changed")
            .note("check `systemctl is-system-running` and `busctl status`; rerun with -v")?;
        Ok(Some(manager))
    }

    /// Read every configured unit once: systemd must answer before anything changes.
    pub fn check_reachable(
        manager: Option<&dyn ServiceManager>,
        config: &Config,
    ) -> anyhow::Result<()> {
        let Some(manager) = manager else {
            return Ok(());
        };
        for unit in &config.service_order {
            manager
                .state(unit)
                .with_context(|| {
                    format!("failed to read the state of '{unit}' over D-Bus; nothing was changed")
                })
                .note("check `systemctl is-system-running` and `busctl status`")?;
        }
        Ok(())
    }

    /// Services for the node: the given manager (tests may pass one whatever the root), else
    /// the skip reason.
    pub fn services<'a>(
        &self,
        root: &Root,
        manager: Option<&'a dyn ServiceManager>,
        units: &[String],
    ) -> anyhow::Result<Services<'a>> {
        let Some(manager) = manager else {
            return Ok(match &self.policy {
                ServicePolicy::Skip(reason) => Services::Skip(reason.clone()),
                ServicePolicy::Act => Services::Skip(policy::SkipReason::SystemdNotRunning),
            });
        };
        let helper = root.join(paths::POLICY_RC_D);
        let helper = helper.as_path();
        let mut forbidden = Vec::new();
        for unit in units {
            for action in ["stop", "start"] {
                if policy::ask_policy_rc_d(helper, unit, action)? == Verdict::Forbidden
                    && !forbidden.contains(unit)
                {
                    warn!("{} forbids '{action}' of '{unit}' (exit 101): leaving it alone; it keeps running the old binary until it restarts", paths::POLICY_RC_D);
                    forbidden.push(unit.clone());
                }
            }
        }
        Ok(Services::Act { manager, forbidden })
    }
}

/// `<command> step 1 'preflight' failed: nothing was changed`, with the cause under it.
pub(super) fn preflight_failed(command: &str, err: impl Into<anyhow::Error>) -> anyhow::Error {
    let err: anyhow::Error = err.into();
    log::error!("{command} [1] preflight: FAILED");
    err.context(format!(
        "{command} step 1 'preflight' failed: nothing was changed"
    ))
}

/// What preflight found about one target.
struct Found {
    target: Target,
    ours: bool,
    now: InPlace,
    original: Original,
}

/// The install transaction on `ctx.root` with `manager` acting on services (None: no service
/// actions, as decided by the session's policy).
pub(super) fn install(
    ctx: &Ctx,
    session: &Session,
    config: &Config,
    manager: Option<&dyn ServiceManager>,
) -> anyhow::Result<()> {
    let root = &ctx.root;
    Session::check_reachable(manager, config)?;
    // an interrupted transaction is resolved first, with every service in the config
    let all_units = config.service_order.clone();
    let services = session.services(root, manager, &all_units)?;
    let node = Node::new(root, services, config.service_timeout);
    journal::recover(&node)?;

    let started = Instant::now();
    let found = preflight(root, config).map_err(|e| preflight_failed("install", e))?;
    let changed: Vec<&Found> = found
        .iter()
        .filter(|f| !f.ours || f.now != InPlace::Payload)
        .collect();
    let mut state = State::load(root).map_err(|e| preflight_failed("install", e))?;
    let mut new_state = state.clone();
    let dpkg = Dpkg::new(root);
    for f in &found {
        let stays = f.ours && f.now == InPlace::Payload;
        let recorded = state.targets.get(&f.target.name);
        new_state.targets.insert(
            f.target.name.clone(),
            TargetState {
                path: f.target.path.clone(),
                divert_to: f.target.divert_to.clone(),
                original: f.original.clone(),
                payload_sha256: f.target.payload_sha256.clone(),
                payload_version: f.target.payload_version.clone(),
                original_package: PackageVersion::to_record(&dpkg, &f.target, recorded, stays),
            },
        );
    }
    new_state.version = 1;
    state.version = 1;
    if changed.is_empty() && new_state == state {
        info!(
            "install [1/1] preflight: ok, nothing to do: the payload is in place ({} ms)",
            started.elapsed().as_millis()
        );
        return Ok(());
    }

    // [services] apply = reboot: no service is stopped; the node's reboot starts the new ones
    let units = match config.apply {
        Apply::Restart => units_for(config, changed.iter().map(|f| &f.target.restart)),
        Apply::Reboot => Vec::new(),
    };
    let units = running(manager, units)?;
    let services = session.services(root, manager, &units)?;
    let node = Node::new(root, services, config.service_timeout).with_settle(config.service_settle);
    let mut steps = vec![Step::Preflight];
    for f in &changed {
        steps.push(Step::Stage {
            target: f.target.name.clone(),
            path: f.target.path.clone(),
            payload: f.target.payload.clone(),
            sha256: f.target.payload_sha256.clone(),
        });
    }
    steps.extend(units.iter().map(|u| Step::Stop { unit: u.clone() }));
    // a path we already divert is not diverted again: its undo would drop our diversion
    for f in changed.iter().filter(|f| !f.ours) {
        steps.push(Step::Divert {
            target: f.target.name.clone(),
            path: f.target.path.clone(),
            divert_to: f.target.divert_to.clone(),
            original: f.original.clone(),
        });
    }
    for f in &changed {
        steps.push(Step::Place {
            target: f.target.name.clone(),
            path: f.target.path.clone(),
            divert_to: f.target.divert_to.clone(),
            payload: f.target.payload.clone(),
            sha256: f.target.payload_sha256.clone(),
            original: f.original.clone(),
            previous: previous_of(root, f)?,
        });
    }
    steps.extend(
        start_order(&units)
            .into_iter()
            .map(|unit| Step::Start { unit }),
    );
    steps.push(Step::Record {
        state: Some(new_state),
        before: Some(state),
    });
    journal::run(
        &node,
        journal::Transaction::Install,
        steps,
        started.elapsed(),
        session.failpoint.as_ref(),
    )?;
    for f in &found {
        if f.original == Original::Missing {
            info!(
                "'{}' ({}) did not exist: it is diverted anyway, so a later {} package lands at '{}'",
                f.target.path.display(),
                f.target.name,
                f.target.name,
                f.target.divert_to.display()
            );
        }
    }
    log_skipped_restarts(&node.services, &units, "the old binaries");
    Ok(())
}

/// What an upgrade replaces at a path we already divert (the previous payload, kept so
/// that a rollback puts it back); None for a first install or an empty path.
fn previous_of(root: &Root, f: &Found) -> anyhow::Result<Option<Original>> {
    use std::os::unix::fs::PermissionsExt;
    if !f.ours {
        return Ok(None);
    }
    let on_disk = root.join(&f.target.path);
    Ok(match &f.now {
        InPlace::Missing | InPlace::Payload => None,
        InPlace::Symlink(target) => Some(Original::Symlink {
            target: target.clone(),
        }),
        InPlace::Other(sha256) => {
            let meta = std::fs::symlink_metadata(&on_disk)
                .with_context(|| format!("failed to inspect '{}'", on_disk.display()))?;
            Some(Original::File {
                sha256: sha256.clone(),
                size: meta.len(),
                mode: meta.permissions().mode() & 0o7777,
            })
        }
    })
}

/// Say which services keep running `binaries` when services were not touched (a chroot,
/// policy-rc.d, another root).
pub(super) fn log_skipped_restarts(services: &Services, units: &[String], binaries: &str) {
    if let Services::Skip(reason) = services {
        if !units.is_empty() {
            info!(
                "services not restarted ({reason}): {} keep {binaries} until they restart",
                units.join(", ")
            );
        }
    }
}

/// Keep the units that run now (try-restart semantics: a stopped or failed unit is not
/// started by us; it gets the new binary whenever it starts). Without a manager all are
/// kept, for the log's "skipped" lines.
pub(super) fn running(
    manager: Option<&dyn ServiceManager>,
    units: Vec<String>,
) -> anyhow::Result<Vec<String>> {
    let Some(manager) = manager else {
        return Ok(units);
    };
    let mut out = Vec::new();
    for unit in units {
        let state = manager.state(&unit).with_context(|| {
            format!("failed to read the state of '{unit}' over D-Bus; nothing was changed")
        })?;
        match (state.load_state.as_str(), state.active_state.as_str()) {
            ("not-found", _) => info!("'{unit}' does not exist on this node: nothing to restart"),
            ("masked", _) => info!("'{unit}' is masked: left alone"),
            (_, "active" | "activating" | "reloading") => {
                // its socket (docker.socket) stops before it and starts after it, so that
                // socket activation cannot start it mid-swap
                if let Some(socket) = active_socket(manager, &unit)? {
                    info!(
                        "'{socket}' is active: it is stopped before '{unit}' and started after it"
                    );
                    out.push(socket);
                }
                out.push(unit)
            }
            (_, other) => {
                info!("'{unit}' is {other}: not restarted; it runs the new binary when it starts")
            }
        }
    }
    Ok(out)
}

/// The units in start order: the stop order reversed, except that a socket starts right
/// before its service (systemd refuses to start a socket whose service already runs).
pub(super) fn start_order(units: &[String]) -> Vec<String> {
    let mut out: Vec<String> = units.iter().rev().cloned().collect();
    for i in 1..out.len() {
        let service = out[i]
            .strip_suffix(".socket")
            .map(|name| format!("{name}.service"));
        if service.as_deref() == Some(out[i - 1].as_str()) {
            out.swap(i - 1, i);
        }
    }
    out
}

/// `X.socket` for `X.service` when that socket unit is active (listening).
fn active_socket(manager: &dyn ServiceManager, unit: &str) -> anyhow::Result<Option<String>> {
    let Some(name) = unit.strip_suffix(".service") else {
        return Ok(None);
    };
    let socket = format!("{name}.socket");
    let state = manager.state(&socket).with_context(|| {
        format!("failed to read the state of '{socket}' over D-Bus; nothing was changed")
    })?;
    Ok((state.load_state == "loaded" && state.active_state == "active").then_some(socket))
}

/// The units to stop (in this order) and start (in reverse) for these targets: the
/// configured order first, then any other unit a target names.
pub(super) fn units_for<'a>(
    config: &Config,
    restart: impl Iterator<Item = &'a Vec<String>>,
) -> Vec<String> {
    let wanted: Vec<String> = restart.flatten().cloned().collect();
    let mut out: Vec<String> = config
        .service_order
        .iter()
        .filter(|u| wanted.contains(u))
        .cloned()
        .collect();
    for u in wanted {
        if !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

/// Checks that change nothing: config (already parsed), MANIFEST and payload checksums,
/// targets and their diversions, version skew, free space.
fn preflight(root: &Root, config: &Config) -> anyhow::Result<Vec<Found>> {
    let manifest_shown = root.describe(paths::MANIFEST_FILE);
    let manifest = Manifest::load(&root.join(paths::MANIFEST_FILE), &manifest_shown)
        .map_err(anyhow::Error::from)
        .note("the package is incomplete or damaged: `apt install --reinstall k8s-nokmem`")?;
    for bin in &manifest.binaries {
        let abs = Path::new(paths::PAYLOAD_DIR).join(&bin.file);
        let got = paths::sha256_file(&root.join(&abs))?;
        if got != bin.sha256 {
            return Err(with_note(
                anyhow!(
                    "payload {} has sha256 {}, but {manifest_shown} says {}",
                    root.describe(&abs),
                    got,
                    bin.sha256
                ),
                "the package is damaged: `apt install --reinstall k8s-nokmem`; `dpkg --verify k8s-nokmem` lists what changed",
            ));
        }
    }
    let divert = DpkgDivert::new(root);
    let diversions = divert.list()?;
    let dpkg = Dpkg::new(root);
    let state = State::load(root)?;
    let targets = targets::resolve(root, config, &manifest, &diversions, &state, &dpkg)?;
    let mut found = Vec::new();
    for target in targets {
        found.push(check_target(root, &target, &diversions, &state)?.with(target));
    }
    // a target that moved (config changed) while the old path is still diverted by us
    for (name, ts) in &state.targets {
        if let Some(f) = found.iter().find(|f| &f.target.name == name) {
            if f.target.path != ts.path
                && diversions.iter().any(|d| d.is_ours() && d.path == ts.path)
            {
                return Err(with_note(
                    anyhow!(
                        "{name} moved from '{}' to '{}', but '{}' is still diverted by k8s-nokmem",
                        ts.path.display(),
                        f.target.path.display(),
                        ts.path.display()
                    ),
                    "run `k8s-nokmem remove` with the old config first, then install again",
                ));
            }
        }
    }
    check_skew(config, &dpkg, &found)?;
    check_space(root, &found)?;
    Ok(found)
}

struct Checked {
    ours: bool,
    now: InPlace,
    original: Original,
}

impl Checked {
    fn with(self, target: Target) -> Found {
        Found {
            target,
            ours: self.ours,
            now: self.now,
            original: self.original,
        }
    }
}

fn check_target(
    root: &Root,
    target: &Target,
    diversions: &[Diversion],
    state: &State,
) -> anyhow::Result<Checked> {
    let current = diversions.iter().find(|d| d.path == target.path);
    let ours = DpkgDivert::check_ours(current, &target.path, &target.divert_to)
        .map_err(anyhow::Error::from)
        .note(format!(
            "k8s-nokmem cannot replace a file another package diverts; see `dpkg-divert --listpackage {}`, or set [{}] path in the config",
            target.path.display(),
            target.name
        ))?;
    let parent = target.path.parent().unwrap_or(Path::new("/"));
    if !root.join(parent).is_dir() {
        bail!(
            "directory {} of the {} target does not exist",
            root.describe(parent),
            target.name
        );
    }
    let now = targets::in_place(root, target)?;
    if let (true, InPlace::Other(sha)) = (ours, &now) {
        let recorded = state.targets.get(&target.name).map(|t| &t.payload_sha256);
        if recorded != Some(sha) {
            warn!(
                "{} holds a file k8s-nokmem did not place (sha256 {}): the payload replaces it",
                root.describe(&target.path),
                targets::short(sha)
            );
        }
    }
    let original = if ours {
        match state.targets.get(&target.name) {
            Some(ts) if ts.path == target.path => ts.original.clone(),
            _ => Original::probe(&target.name, &root.join(&target.divert_to))?,
        }
    } else {
        if root.join(&target.divert_to).symlink_metadata().is_ok() {
            return Err(with_note(
                anyhow!(
                    "{} exists but is not a k8s-nokmem diversion: diverting {} would overwrite it",
                    root.describe(&target.divert_to),
                    root.describe(&target.path)
                ),
                "move it away (it may be left from an earlier manual swap) and run `k8s-nokmem install` again",
            ));
        }
        Original::probe(&target.name, &root.join(&target.path))?
    };
    debug!(
        "{}: '{}' ({}), ours={ours}, now={now:?}, original: {}",
        target.name,
        target.path.display(),
        target.found,
        original.describe()
    );
    Ok(Checked {
        ours,
        now,
        original,
    })
}

/// Warn or refuse when the payload kubelet's minor version differs from the installed
/// kubelet package's. No package (a hand-copied kubelet): skipped with a note.
fn check_skew(config: &Config, dpkg: &Dpkg, found: &[Found]) -> anyhow::Result<()> {
    let Some(f) = found.iter().find(|f| f.target.name == "kubelet") else {
        return Ok(());
    };
    let path = &f.target.path;
    let owners = dpkg.owners(path)?;
    let Some(pkg) = owners.first() else {
        info!(
            "version check skipped: no package ships '{}' (payload kubelet {})",
            path.display(),
            f.target.payload_version
        );
        return Ok(());
    };
    let Some(installed) = dpkg.version(pkg)? else {
        info!("version check skipped: package '{pkg}' is not installed");
        return Ok(());
    };
    let (want, have) = (
        dpkg::major_minor(&f.target.payload_version),
        dpkg::major_minor(&installed),
    );
    if want.is_none() || have.is_none() || want == have {
        debug!(
            "kubelet versions: payload {}, package '{pkg}' {installed}",
            f.target.payload_version
        );
        return Ok(());
    }
    let msg = format!(
        "version skew: the payload kubelet is {}, package '{pkg}' has {installed}",
        f.target.payload_version
    );
    let file = config
        .file
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| paths::CONFIG_FILE.to_string());
    match config.version_skew {
        SkewPolicy::Warn => {
            warn!("{msg}; installing anyway ([kubelet] version-skew = warn in {file})");
            Ok(())
        }
        SkewPolicy::Refuse => {
            let err = anyhow!(
                "{msg}: refusing to replace a {} kubelet with a {} one ([kubelet] version-skew = refuse, the default)",
                minor_of(&installed),
                minor_of(&f.target.payload_version)
            );
            let err = with_note(
                err,
                format!(
                    "build k8s-nokmem for this node's kubelet: check out kubernetes {} in DIR and run `scripts/build-deb.sh -- --kubernetes-src DIR`, then install that package",
                    upstream_tag(&installed)
                ),
            );
            Err(with_note(
                err,
                format!("or accept the skew: set `version-skew = warn` under [kubelet] in {file}"),
            ))
        }
    }
}

/// `1.19` for `1:1.19.16-00`.
fn minor_of(version: &str) -> String {
    dpkg::major_minor(version)
        .map(|(major, minor)| format!("{major}.{minor}"))
        .unwrap_or_else(|| version.to_string())
}

/// The upstream tag of a Debian package version: `v1.19.16` for `1:1.19.16-00` or
/// `1.20.5+really1.19.16-1`.
fn upstream_tag(version: &str) -> String {
    let v = version.trim();
    let v = v.rsplit_once("+really").map(|(_, r)| r).unwrap_or(v);
    let v = v.split_once(':').map(|(_, r)| r).unwrap_or(v);
    let v = v.rsplit_once('-').map(|(u, _)| u).unwrap_or(v);
    format!("v{}", v.trim_start_matches('v'))
}

/// Enough free space next to each target for a copy of the payload (plus 1 MiB).
fn check_space(root: &Root, found: &[Found]) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // payload copies that land on the same file system add up
    let mut per_fs: Vec<(u64, &Path, Vec<&str>, u64)> = Vec::new();
    for f in found.iter().filter(|f| f.now != InPlace::Payload) {
        let parent = f.target.path.parent().unwrap_or(Path::new("/"));
        let dir = root.join(parent);
        let dev = std::fs::metadata(&dir)
            .with_context(|| format!("failed to inspect '{}'", dir.display()))?
            .dev();
        let size = std::fs::metadata(root.join(&f.target.payload))
            .map(|m| m.len())
            .unwrap_or(0);
        match per_fs.iter_mut().find(|(d, ..)| *d == dev) {
            Some((_, _, names, need)) => {
                names.push(&f.target.name);
                *need += size;
            }
            None => per_fs.push((dev, parent, vec![&f.target.name], size + (1 << 20))),
        }
    }
    for (_, parent, names, need) in per_fs {
        let dir = root.join(parent);
        let st = nix::sys::statvfs::statvfs(&dir)
            .with_context(|| format!("failed to read free space of '{}'", dir.display()))?;
        #[allow(clippy::unnecessary_cast)]
        let avail = st.blocks_available() as u64 * st.fragment_size() as u64;
        if avail < need {
            return Err(with_note(
                anyhow!(
                    "not enough free space in {} for the {} payload: need {} MiB, {} MiB available",
                    root.describe(parent),
                    names.join(" and "),
                    need >> 20,
                    avail >> 20
                ),
                "free some space (`apt clean`, old logs) and run `k8s-nokmem install` again",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::fake::{FakeSystemd, Fault, Op};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    const ORIG_KUBELET: &[u8] = b"original kubelet";
    const ORIG_RUNC: &[u8] = b"original runc";

    /// A node root with originals, dpkg's admin dir and a payload whose MANIFEST matches.
    struct TestNode {
        dir: tempfile::TempDir,
        ctx: Ctx,
    }

    impl TestNode {
        fn new() -> TestNode {
            let dir = tempfile::tempdir().unwrap();
            let ctx = Ctx {
                root: Root::new(dir.path()),
                config_path: None,
            };
            let node = TestNode { dir, ctx };
            node.write("var/lib/dpkg/status", b"");
            node.write("var/lib/dpkg/diversions", b"");
            node.write("usr/bin/kubelet", ORIG_KUBELET);
            node.write("usr/sbin/runc", ORIG_RUNC);
            node.payload(b"nokmem runc", b"nokmem kubelet");
            node
        }

        fn write(&self, rel: &str, bytes: &[u8]) {
            let p = self.dir.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, bytes).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }

        fn read(&self, rel: &str) -> Vec<u8> {
            fs::read(self.dir.path().join(rel)).unwrap()
        }

        fn payload(&self, runc: &[u8], kubelet: &[u8]) {
            self.write("usr/lib/k8s-nokmem/runc", runc);
            self.write("usr/lib/k8s-nokmem/kubelet", kubelet);
            let sha = |rel: &str| paths::sha256_file(&self.dir.path().join(rel)).unwrap();
            let manifest = format!(
                "[payload]\narch = amd64\n[runc]\nfile = runc\nversion = 1.1.5\nsize = {}\nsha256 = {}\n\
                 [kubelet]\nfile = kubelet\nversion = 1.20.2\nsize = {}\nsha256 = {}\n",
                runc.len(),
                sha("usr/lib/k8s-nokmem/runc"),
                kubelet.len(),
                sha("usr/lib/k8s-nokmem/kubelet")
            );
            self.write("usr/lib/k8s-nokmem/MANIFEST", manifest.as_bytes());
        }

        fn install(&self, sd: &FakeSystemd) -> anyhow::Result<()> {
            let session = Session::open(&self.ctx, "install")?;
            let config = self.ctx.config()?;
            install(&self.ctx, &session, &config, Some(sd))
        }

        fn remove(&self, sd: &FakeSystemd) -> anyhow::Result<()> {
            let session = Session::open(&self.ctx, "remove")?;
            let config = self.ctx.config()?;
            super::super::remove::remove(&self.ctx, &session, &config, Some(sd))
        }
    }

    const UNITS: [&str; 2] = ["kubelet.service", "docker.service"];

    #[test]
    fn services_stop_in_order_start_in_reverse_and_a_rerun_restarts_nothing() {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&UNITS);
        node.install(&sd).unwrap();
        assert_eq!(
            sd.call_lines(),
            vec![
                "stop kubelet.service",
                "stop docker.service",
                "start docker.service",
                "start kubelet.service"
            ]
        );
        assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
        let after = sd.unit_state("kubelet.service");
        sd.clear_calls();
        node.install(&sd).unwrap();
        assert!(sd.calls().is_empty(), "{:?}", sd.call_lines());
        assert_eq!(sd.unit_state("kubelet.service"), after, "not restarted");
    }

    #[test]
    fn apply_reboot_swaps_with_no_service_stopped_or_started() {
        let node = TestNode::new();
        node.write(
            "etc/k8s-nokmem/k8s-nokmem.conf",
            b"[services]\napply = reboot\n",
        );
        let sd = FakeSystemd::with_active(&UNITS);
        let before = sd.unit_state("kubelet.service");
        node.install(&sd).unwrap();
        assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
        assert_eq!(node.read("usr/sbin/runc"), b"nokmem runc");
        let stops_or_starts: Vec<String> = sd
            .call_lines()
            .into_iter()
            .filter(|l| l.starts_with("stop ") || l.starts_with("start "))
            .collect();
        assert!(stops_or_starts.is_empty(), "{stops_or_starts:?}");
        assert_eq!(sd.unit_state("kubelet.service"), before, "not restarted");
        // an upgrade of the payload: still nothing restarted
        node.payload(b"nokmem runc 2", b"nokmem kubelet 2");
        node.install(&sd).unwrap();
        assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet 2");
        assert!(
            !sd.call_lines()
                .iter()
                .any(|l| l.starts_with("stop ") || l.starts_with("start ")),
            "{:?}",
            sd.call_lines()
        );
    }

    #[test]
    fn an_upgrade_restarts_only_the_services_of_changed_binaries() {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&UNITS);
        node.install(&sd).unwrap();
        sd.clear_calls();
        node.payload(b"nokmem runc", b"nokmem kubelet 2");
        node.install(&sd).unwrap();
        assert_eq!(
            sd.call_lines(),
            vec!["stop kubelet.service", "start kubelet.service"]
        );
        sd.clear_calls();
        node.payload(b"nokmem runc 2", b"nokmem kubelet 2");
        node.install(&sd).unwrap();
        assert_eq!(
            sd.call_lines(),
            vec!["stop docker.service", "start docker.service"]
        );
    }

    #[test]
    fn a_failed_start_rolls_back_and_starts_the_originals() {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&UNITS).with_fault_times(
            Op::Start,
            "kubelet.service",
            Fault::failed("exit-code"),
            1,
        );
        let err = node.install(&sd).unwrap_err();
        let chain = format!("{err:#}");
        assert!(
            chain.contains("install step 11/12 'start kubelet.service' failed; rolled back")
                && chain.contains("the original binaries are back in place")
                && chain.contains("journalctl -u kubelet.service"),
            "{chain}"
        );
        assert_eq!(
            sd.call_lines(),
            vec![
                "stop kubelet.service",
                "stop docker.service",
                "start docker.service",
                "start kubelet.service",
                // rollback: undo the starts, the files, then the stops
                "stop kubelet.service",
                "stop docker.service",
                "start docker.service",
                "start kubelet.service",
            ]
        );
        assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
        assert_eq!(node.read("usr/sbin/runc"), ORIG_RUNC);
        for unit in UNITS {
            assert_eq!(sd.unit_state(unit).active_state, "active", "{unit}");
        }
    }

    #[test]
    fn a_failed_upgrade_starts_the_services_on_the_previous_payload() {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&UNITS);
        node.install(&sd).unwrap();
        node.payload(b"nokmem runc", b"nokmem kubelet 2");
        let sd = FakeSystemd::with_active(&UNITS).with_fault_times(
            Op::Start,
            "kubelet.service",
            Fault::failed("exit-code"),
            1,
        );
        let err = node.install(&sd).unwrap_err();
        let chain = format!("{err:#}");
        assert!(
            chain.contains("install step 5/6 'start kubelet.service' failed; rolled back")
                && chain.contains("the node runs the previous payload again (kubelet)"),
            "{chain}"
        );
        assert_eq!(
            sd.call_lines(),
            vec![
                "stop kubelet.service",
                "start kubelet.service",
                // rollback: undo the start, the file, then the stop
                "stop kubelet.service",
                "start kubelet.service",
            ]
        );
        assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
        assert_eq!(node.read("usr/bin/kubelet.distrib"), ORIG_KUBELET);
        assert_eq!(sd.unit_state("kubelet.service").active_state, "active");
    }

    #[test]
    fn a_service_that_dies_after_starting_is_a_failed_start() {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&UNITS).with_dies_after_start("docker.service");
        let err = node.install(&sd).unwrap_err();
        let chain = format!("{err:#}");
        assert!(
            chain.contains("install step 11/12 'start kubelet.service' failed; rolled back")
                && chain.contains("the original binaries are back in place")
                && chain.contains("'docker.service' did not stay up for 20s after it started")
                && chain.contains("activating/auto-restart"),
            "{chain}"
        );
        assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
        assert_eq!(node.read("usr/sbin/runc"), ORIG_RUNC);
        for unit in UNITS {
            assert_eq!(sd.unit_state(unit).active_state, "active", "{unit}");
        }
        assert!(!node
            .dir
            .path()
            .join("var/lib/k8s-nokmem/state.json")
            .exists());
    }

    #[test]
    fn an_active_docker_socket_stops_before_docker_and_starts_right_before_it() {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&["kubelet.service", "docker.service", "docker.socket"]);
        node.install(&sd).unwrap();
        let want = vec![
            "stop kubelet.service",
            "stop docker.socket",
            "stop docker.service",
            "start docker.socket",
            "start docker.service",
            "start kubelet.service",
        ];
        assert_eq!(sd.call_lines(), want);
        assert_eq!(sd.unit_state("docker.socket").active_state, "active");
        sd.clear_calls();
        node.remove(&sd).unwrap();
        assert_eq!(sd.call_lines(), want, "remove");
        // an inactive socket is left alone, and docker alone restarted
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&UNITS).with_inactive("docker.socket");
        node.install(&sd).unwrap();
        assert!(
            !sd.call_lines().iter().any(|c| c.contains("socket")),
            "{:?}",
            sd.call_lines()
        );
    }

    #[test]
    fn a_service_that_never_starts_still_gets_the_originals_back() {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&UNITS).with_fault(
            Op::Start,
            "kubelet.service",
            Fault::failed("exit-code"),
        );
        let err = node.install(&sd).unwrap_err();
        let chain = format!("{err:#}");
        assert!(
            chain.contains(
                "the original binaries are back in place; but services did not all come back"
            ) && chain.contains("'kubelet.service'"),
            "{chain}"
        );
        assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
        assert!(!node
            .dir
            .path()
            .join("var/lib/k8s-nokmem/journal.json")
            .exists());
        assert_eq!(sd.unit_state("docker.service").active_state, "active");
    }

    #[test]
    fn a_unit_that_is_not_running_is_not_started() {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&["kubelet.service"]).with_inactive("docker.service");
        node.install(&sd).unwrap();
        assert_eq!(
            sd.call_lines(),
            vec!["stop kubelet.service", "start kubelet.service"]
        );
        assert_eq!(sd.unit_state("docker.service").active_state, "inactive");
        assert_eq!(node.read("usr/sbin/runc"), b"nokmem runc");
        sd.clear_calls();
        node.remove(&sd).unwrap();
        assert_eq!(
            sd.call_lines(),
            vec!["stop kubelet.service", "start kubelet.service"]
        );
    }

    #[test]
    fn policy_rc_d_101_leaves_that_unit_alone() {
        let node = TestNode::new();
        node.write(
            "usr/sbin/policy-rc.d",
            b"#!/bin/sh\n[ \"$1\" = docker.service ] && exit 101\nexit 0\n",
        );
        let sd = FakeSystemd::with_active(&UNITS);
        node.install(&sd).unwrap();
        assert_eq!(
            sd.call_lines(),
            vec!["stop kubelet.service", "start kubelet.service"]
        );
        assert_eq!(
            node.read("usr/sbin/runc"),
            b"nokmem runc",
            "files swapped anyway"
        );
    }

    #[test]
    fn an_unreachable_bus_changes_nothing() {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&UNITS).with_no_bus();
        let err = node.install(&sd).unwrap_err();
        assert!(
            format!("{err:#}").contains(
                "failed to read the state of 'kubelet.service' over D-Bus; nothing was changed"
            ),
            "{err:#}"
        );
        assert!(sd.calls().is_empty());
        assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
    }

    #[test]
    fn missing_units_are_skipped() {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&["kubelet.service"]);
        node.install(&sd).unwrap();
        assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
        assert_eq!(sd.unit_state("kubelet.service").active_state, "active");
    }

    #[test]
    fn remove_restarts_the_services_on_the_originals() {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&UNITS);
        node.install(&sd).unwrap();
        sd.clear_calls();
        node.remove(&sd).unwrap();
        assert_eq!(
            sd.call_lines(),
            vec![
                "stop kubelet.service",
                "stop docker.service",
                "start docker.service",
                "start kubelet.service"
            ]
        );
        assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
        sd.clear_calls();
        node.remove(&sd).unwrap();
        assert!(sd.calls().is_empty(), "remove twice touches nothing");
    }

    #[test]
    fn upstream_tags_of_package_versions() {
        for (version, want) in [
            ("1.19.16-00", "v1.19.16"),
            ("1:1.19.16-00", "v1.19.16"),
            ("1.20.5+really1.20.2-1", "v1.20.2"),
            ("1.14.6", "v1.14.6"),
        ] {
            assert_eq!(upstream_tag(version), want, "case {version}");
        }
        assert_eq!(minor_of("1:1.19.16-00"), "1.19");
    }

    #[test]
    fn sockets_start_right_before_their_service() {
        let units = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let table: [(&[&str], &[&str]); 3] = [
            (
                &["kubelet.service", "docker.socket", "docker.service"],
                &["docker.socket", "docker.service", "kubelet.service"],
            ),
            (
                &["kubelet.service", "docker.service"],
                &["docker.service", "kubelet.service"],
            ),
            (
                &["a.socket", "b.service", "kubelet.service"],
                &["kubelet.service", "b.service", "a.socket"],
            ),
        ];
        for (stop, start) in table {
            assert_eq!(
                start_order(&units(stop)),
                units(start),
                "stop order {stop:?}"
            );
        }
    }

    #[test]
    fn units_follow_the_configured_order() {
        let config = Config {
            service_order: vec!["a.service".into(), "b.service".into()],
            ..Config::default()
        };
        let restart = [
            vec!["b.service".to_string(), "c.service".to_string()],
            vec!["a.service".to_string()],
        ];
        assert_eq!(
            units_for(&config, restart.iter()),
            vec!["a.service", "b.service", "c.service"]
        );
    }
}
