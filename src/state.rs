//! The state file, `R/var/lib/k8s-nokmem/state.json`: what is swapped now, by target name,
//! and what was there before. Its layout has a version, and every layout this project has
//! written is read and upgraded in memory to [`State`] (bootupd's saved state does the
//! same): a file a newer k8s-nokmem wrote is refused, never rewritten in an older layout.
//!
//! Layouts so far (all version 1):
//! - version 1 as first written: `path`, `divert_to`, `original`, `payload_sha256`,
//!   `payload_version` for each target;
//! - `original_package` added (absent: not recorded), then `swapped_at` (absent: verify
//!   goes by the file's mtime); both are optional fields of version 1;
//! - a file without `version` (no release wrote one; a hand-made file may lack it) is read
//!   as version 1 (legacy).
//!
//! A layout change that an older helper would misread bumps [`VERSION`], keeps the old
//! layout as its own type and upgrades it in `State::try_from`'s match (bootupd's
//! `SavedState01::upconvert`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::fs::FileError;
use crate::paths::{self, Root};

/// What was swapped, under the state directory.
pub const STATE_FILE: &str = "state.json";

/// The layout version this k8s-nokmem writes, and the newest it reads.
pub const VERSION: u64 = 1;

/// The version of a file without a `version` field.
const LEGACY_VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("state file '{}' is not valid; move it away and run the command again: it is rebuilt from the diversions", path.display())]
    Bad {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("state file '{}' has version {version}, but this k8s-nokmem ({}) reads versions up to {VERSION}: a newer k8s-nokmem wrote it; upgrade k8s-nokmem (`apt install k8s-nokmem`), then run the command again", path.display(), env!("CARGO_PKG_VERSION"))]
    Newer { path: PathBuf, version: u64 },
}

impl StateError {
    /// The one thing to do about it (a report's `fix`).
    pub fn fix(&self) -> &'static str {
        match self {
            StateError::File(_) => "run the command as root; the state file must be readable",
            StateError::Bad { .. } => {
                "move the state file away and run `k8s-nokmem install`: it is rebuilt from the diversions"
            }
            StateError::Newer { .. } => "upgrade k8s-nokmem (`apt install k8s-nokmem`): a newer k8s-nokmem wrote the state file",
        }
    }
}

/// What was at a target path before we diverted it. Read from the disk by
/// `Original::probe` and described by `Original::describe`, in `crate::targets`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Original {
    /// Nothing: diverted anyway, so that a later kubelet/runc package lands aside.
    Missing,
    File {
        sha256: String,
        size: u64,
        mode: u32,
    },
    /// A symlink: diverted (renamed) as a link; its target is left alone.
    Symlink { target: PathBuf },
}

impl Original {
    /// True when `now` is the same thing (content and link target; mode is not compared).
    pub fn same_as(&self, now: &Original) -> bool {
        match (self, now) {
            (Original::File { sha256: a, .. }, Original::File { sha256: b, .. }) => a == b,
            _ => self == now,
        }
    }
}

/// An installed package and its version (`PackageVersion::of` asks dpkg, in
/// `crate::targets`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageVersion {
    pub package: String,
    pub version: String,
}

/// What `state.json` records for one swapped target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetState {
    pub path: PathBuf,
    pub divert_to: PathBuf,
    /// What was at `path` before the first install (now at `divert_to`).
    pub original: Original,
    pub payload_sha256: String,
    pub payload_version: String,
    /// The package that ships the original, at its version when this payload was put in
    /// place: an upgrade of that package lands at `divert_to` and never runs, so verify
    /// and status compare. Absent when no package ships it, and in state files written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_package: Option<PackageVersion>,
    /// When this payload was put in place (seconds since the epoch), stamped by the
    /// install's record step: verify's fleet rule counts a pod cgroup created before it as
    /// made by the old binaries. Absent in state files written before it was recorded
    /// (verify then goes by the file's mtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swapped_at: Option<u64>,
}

/// What is swapped now, by target name, whichever layout it was read from. Saved (also
/// inside the journal) as `Saved`, at [`VERSION`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Saved", into = "Saved")]
pub struct State {
    pub targets: BTreeMap<String, TargetState>,
}

/// The state as written: the layout version, then that layout.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    #[serde(default = "legacy_version")]
    version: u64,
    targets: BTreeMap<String, TargetState>,
}

/// Only the version, whatever the layout around it.
#[derive(serde::Deserialize)]
struct VersionOnly {
    #[serde(default = "legacy_version")]
    version: u64,
}

fn legacy_version() -> u64 {
    LEGACY_VERSION
}

impl TryFrom<Saved> for State {
    type Error = String;

    /// The upgrade path: each layout version to the current [`State`].
    fn try_from(saved: Saved) -> Result<State, String> {
        match saved.version {
            // every layout written so far; the fields added later in version 1 default
            1 => Ok(State {
                targets: saved.targets,
            }),
            v => Err(format!("unknown state version {v}")),
        }
    }
}

impl From<State> for Saved {
    fn from(state: State) -> Saved {
        Saved {
            version: VERSION,
            targets: state.targets,
        }
    }
}

impl State {
    pub fn path(root: &Root) -> PathBuf {
        root.join(Path::new(paths::STATE_DIR).join(STATE_FILE))
    }

    /// Read the state; a missing file is the empty state. A file of a newer version is
    /// refused ([`StateError::Newer`]) before its layout is read.
    pub fn load(root: &Root) -> Result<State, StateError> {
        let path = Self::path(root);
        let text = match crate::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return Ok(State::default()),
            Err(e) => return Err(e.into()),
        };
        State::parse(&text, &path)
    }

    /// Parse the text of the state file at `path` (named in errors).
    fn parse(text: &str, path: &Path) -> Result<State, StateError> {
        let bad = |source| StateError::Bad {
            path: path.to_path_buf(),
            source,
        };
        let VersionOnly { version } = serde_json::from_str(text).map_err(bad)?;
        if version > VERSION {
            return Err(StateError::Newer {
                path: path.to_path_buf(),
                version,
            });
        }
        serde_json::from_str(text).map_err(bad)
    }

    /// Write the state atomically, at [`VERSION`]; the empty state removes the file.
    pub fn save(&self, root: &Root) -> Result<(), StateError> {
        let path = Self::path(root);
        if self.targets.is_empty() {
            crate::fs::remove_file_if_exists(&path)?;
            return Ok(());
        }
        let mut text = serde_json::to_string_pretty(self).map_err(|source| StateError::Bad {
            path: path.clone(),
            source,
        })?;
        text.push('\n');
        crate::fs::atomic_write_bytes(&path, 0o644, text.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root_with_state_dir() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        fs::create_dir_all(root.join(paths::STATE_DIR)).unwrap();
        (dir, root)
    }

    fn kubelet(original_package: Option<PackageVersion>, swapped_at: Option<u64>) -> TargetState {
        TargetState {
            path: "/usr/bin/kubelet".into(),
            divert_to: "/usr/bin/kubelet.distrib".into(),
            original: Original::File {
                sha256: "a".repeat(64),
                size: 3,
                mode: 0o755,
            },
            payload_sha256: "b".repeat(64),
            payload_version: "1.20.2".into(),
            original_package,
            swapped_at,
        }
    }

    #[test]
    fn state_round_trips_and_empty_state_removes_the_file() {
        let (_dir, root) = root_with_state_dir();
        assert_eq!(State::load(&root).unwrap(), State::default());
        let mut state = State::default();
        let package = PackageVersion {
            package: "kubelet".into(),
            version: "1.20.2-00".into(),
        };
        let target = kubelet(Some(package), Some(1_764_540_900));
        state.targets.insert("kubelet".into(), target);
        state.save(&root).unwrap();
        let text = fs::read_to_string(State::path(&root)).unwrap();
        assert!(
            text.starts_with("{\n  \"version\": 1,\n  \"targets\": {"),
            "{text}"
        );
        assert_eq!(State::load(&root).unwrap(), state);
        State::default().save(&root).unwrap();
        assert!(!State::path(&root).exists());
        fs::write(State::path(&root), "{not json").unwrap();
        let err = State::load(&root).unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
        // serde's reason is the cause, shown with the chain
        assert!(
            matches!(&err, StateError::Bad { source, .. } if source.is_syntax()),
            "{err:?}"
        );
        let shown = crate::notes::error_chain(&err);
        assert!(
            shown.ends_with("key must be a string at line 1 column 2"),
            "{shown}"
        );
    }

    /// Every layout this project has written (see the module's list), and a file without a
    /// version, reads into the same state, with what an older layout did not record absent.
    #[test]
    fn every_older_layout_is_read_and_upgraded() {
        let sha = |c: &str| c.repeat(64);
        let first = format!(
            r#""kubelet": {{"path": "/usr/bin/kubelet", "divert_to": "/usr/bin/kubelet.distrib",
            "original": {{"kind": "file", "sha256": "{}", "size": 3, "mode": 493}},
            "payload_sha256": "{}", "payload_version": "1.20.2""#,
            sha("a"),
            sha("b")
        );
        let package = r#""original_package": {"package": "kubelet", "version": "1.20.2-00"}"#;
        let recorded = PackageVersion {
            package: "kubelet".into(),
            version: "1.20.2-00".into(),
        };
        let cases = [
            (
                "no version field (legacy)",
                format!(r#"{{"targets": {{{first}}}}}}}"#),
                kubelet(None, None),
            ),
            (
                "version 1 as first written",
                format!(r#"{{"version": 1, "targets": {{{first}}}}}}}"#),
                kubelet(None, None),
            ),
            (
                "version 1 with original_package",
                format!(r#"{{"version": 1, "targets": {{{first}, {package}}}}}}}"#),
                kubelet(Some(recorded.clone()), None),
            ),
            (
                "version 1 with swapped_at (current)",
                format!(
                    r#"{{"version": 1, "targets": {{{first}, {package}, "swapped_at": 1764540900}}}}}}"#
                ),
                kubelet(Some(recorded.clone()), Some(1_764_540_900)),
            ),
        ];
        for (case, text, want) in cases {
            let (_dir, root) = root_with_state_dir();
            fs::write(State::path(&root), &text).unwrap();
            let state = State::load(&root).unwrap_or_else(|e| panic!("case '{case}': {e}"));
            assert_eq!(state.targets.len(), 1, "case '{case}'");
            assert_eq!(state.targets["kubelet"], want, "case '{case}'");
            // saved again, it is the current layout, which reads back the same
            state.save(&root).unwrap();
            let saved = fs::read_to_string(State::path(&root)).unwrap();
            assert!(saved.contains("\"version\": 1"), "case '{case}': {saved}");
            assert_eq!(State::load(&root).unwrap(), state, "case '{case}'");
        }
    }

    /// A file a newer k8s-nokmem wrote is refused before its layout is read (it may not
    /// even parse as ours), naming the file, the version and the fix; a version that never
    /// existed is a damaged file.
    #[test]
    fn a_newer_version_is_refused_naming_the_file_the_version_and_the_fix() {
        let (_dir, root) = root_with_state_dir();
        let path = State::path(&root);
        fs::write(&path, r#"{"version": 2, "swaps": [{"unknown": true}]}"#).unwrap();
        let err = State::load(&root).unwrap_err();
        assert!(
            matches!(err, StateError::Newer { version: 2, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "state file '{}' has version 2, but this k8s-nokmem ({}) reads versions up to 1: a newer k8s-nokmem wrote it; upgrade k8s-nokmem (`apt install k8s-nokmem`), then run the command again",
                path.display(),
                env!("CARGO_PKG_VERSION")
            )
        );
        fs::write(&path, r#"{"version": 0, "targets": {}}"#).unwrap();
        let err = State::load(&root).unwrap_err();
        assert!(matches!(err, StateError::Bad { .. }), "{err:?}");
        let shown = crate::notes::error_chain(&err);
        assert!(shown.ends_with("unknown state version 0"), "{shown}");
    }
}
