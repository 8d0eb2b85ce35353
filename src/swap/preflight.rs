//! Preflight: the checks that change nothing before a swap. The MANIFEST and the payload's
//! checksums, each target and its diversion, version skew between the payload kubelet and
//! the installed package, free space next to each target.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use log::{debug, info, warn};

use super::containerd;
use crate::config::{Config, SkewPolicy};
use crate::divert::{Diversion, DpkgDivert};
use crate::dpkg::{self, Dpkg};
use crate::fs;
use crate::manifest::Manifest;
use crate::notes::{with_note, WithNote};
use crate::paths::{self, Root};
use crate::state::{Original, State};
use crate::targets::{self, InPlace, Target};

/// What preflight found about one target.
pub struct Found {
    pub target: Target,
    /// The path is already diverted by us (an upgrade or a re-run).
    pub ours: bool,
    pub now: InPlace,
    pub original: Original,
}

/// What an upgrade replaces at a path we already divert (the previous payload, kept so
/// that a rollback puts it back); None for a first install or an empty path.
pub fn previous_of(root: &Root, f: &Found) -> anyhow::Result<Option<Original>> {
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

/// Checks that change nothing: config (already parsed), MANIFEST and payload checksums,
/// targets and their diversions, version skew, free space.
pub fn preflight(root: &Root, config: &Config) -> anyhow::Result<Vec<Found>> {
    let manifest_shown = root.describe(paths::MANIFEST_FILE);
    let manifest = Manifest::installed(root)
        .map_err(anyhow::Error::from)
        .note("the package is incomplete or damaged: `apt install --reinstall k8s-nokmem`")?;
    for bin in &manifest.binaries {
        let abs = Path::new(paths::PAYLOAD_DIR).join(&bin.file);
        let got = fs::sha256_file(&root.join(&abs))?;
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
    check_containerd(root, config, &dpkg, &found)?;
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
    let refusal = format!(
        "refusing to replace a {} kubelet with a {} one",
        minor_of(&installed),
        minor_of(&f.target.payload_version)
    );
    let fix = format!(
        "build k8s-nokmem for this node's kubelet: check out kubernetes {} in DIR and run `scripts/build-deb.sh -- --kubernetes-src DIR`, then install that package",
        upstream_tag(&installed)
    );
    enforce_skew(
        config,
        config.version_skew,
        ("kubelet", "version-skew"),
        &msg,
        &refusal,
        fix,
    )
}

/// Warn or refuse when the payload runc is about to be placed and the node's containerd
/// release does not support it ([`containerd::TABLE`]). No containerd found, or one the table
/// does not know: skipped with a note.
fn check_containerd(
    root: &Root,
    config: &Config,
    dpkg: &Dpkg,
    found: &[Found],
) -> anyhow::Result<()> {
    let Some(f) = found
        .iter()
        .find(|f| f.target.name == "runc" && !(f.ours && f.now == InPlace::Payload))
    else {
        return Ok(());
    };
    let runc = &f.target.payload_version;
    let node = containerd::find(root, dpkg)?;
    let verdict = node.as_ref().map(|c| containerd::judge(c, runc));
    let (Some(c), Some(containerd::Verdict::Unsupported(row))) = (&node, &verdict) else {
        containerd::log_verdict(node.as_ref(), runc, verdict.as_ref());
        return Ok(());
    };
    let (major, minor) = row.containerd;
    let msg = format!(
        "containerd {} ({}) does not support the payload runc {runc}: containerd {major}.{minor} ships and tests runc {}",
        c.version,
        c.from,
        row.range()
    );
    let fix = format!(
        "build k8s-nokmem with a runc this containerd supports ({}): check out that runc tag (e.g. {}) in DIR and run `scripts/build-deb.sh -- --runc-src DIR`, then install that package",
        row.range(),
        row.upto
    );
    enforce_skew(
        config,
        config.containerd_skew,
        ("runc", "containerd-skew"),
        &msg,
        "refusing to place it under this containerd",
        fix,
    )
}

/// Apply a skew policy (`[section] key`): warn and go on, or refuse with `refusal`, the
/// `fix` note and the note that accepts the skew.
fn enforce_skew(
    config: &Config,
    policy: SkewPolicy,
    (section, key): (&str, &str),
    msg: &str,
    refusal: &str,
    fix: String,
) -> anyhow::Result<()> {
    let set_at = set_at(config, section, key);
    match policy {
        SkewPolicy::Warn => {
            warn!(
                "{msg}; installing anyway ([{section}] {key} = warn at {})",
                set_at.as_deref().unwrap_or("(unknown)")
            );
            Ok(())
        }
        SkewPolicy::Refuse => {
            let err = anyhow!("{msg}: {refusal} ([{section}] {key} = refuse, the default)");
            Err(with_note(
                with_note(err, fix),
                accept_skew_note(set_at.as_deref(), section, key),
            ))
        }
    }
}

/// Where a policy key was set (file:line); None: its default.
fn set_at(config: &Config, section: &str, key: &str) -> Option<String> {
    config
        .sources
        .get(section, key)
        .map(|s| format!("{}:{}", s.origin.path.display(), s.origin.line))
}

/// The note that accepts a skew: at the line that set the key, else in a drop-in.
fn accept_skew_note(set_at: Option<&str>, section: &str, key: &str) -> String {
    match set_at {
        Some(at) => format!("or accept the skew: set `{key} = warn` at {at}"),
        None => format!(
            "or accept the skew: set `{key} = warn` under [{section}] in a drop-in, {}",
            paths::EXAMPLE_DROPIN
        ),
    }
}

/// `1.19` for `1:1.19.16-00`.
pub(super) fn minor_of(version: &str) -> String {
    dpkg::major_minor(version)
        .map(|(major, minor)| format!("{major}.{minor}"))
        .unwrap_or_else(|| version.to_string())
}

/// The upstream tag of a Debian package version: `v1.19.16` for `1:1.19.16-00` or
/// `1.20.5+really1.19.16-1`.
pub(super) fn upstream_tag(version: &str) -> String {
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
