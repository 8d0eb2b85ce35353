//! The steps of a transaction ([`Step`]): what each does, as journalled, and its log label.

use std::path::{Path, PathBuf};

use crate::paths;
use crate::state::{Original, State, STATE_FILE};

/// One step of a transaction. Everything its apply and undo need is in it, so that a later
/// run can finish or undo it from the journal alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Checks only; nothing to undo.
    Preflight,
    Stop {
        unit: String,
    },
    /// `dpkg-divert --add --rename`.
    Divert {
        target: String,
        path: PathBuf,
        divert_to: PathBuf,
        original: Original,
    },
    /// Copy the payload next to `path` (a temp file, checked by sha256 while copied,
    /// fsynced) before the services stop, so that the swap itself is only renames.
    Stage {
        target: String,
        path: PathBuf,
        payload: PathBuf,
        sha256: String,
    },
    /// Rename the staged payload onto `path` (copying it first if it was not staged). On
    /// an upgraded target (`previous`: what `path` held, already diverted by us) that file
    /// is first hard-linked aside (`.NAME.k8s-nokmem-prev`), and undo puts it back, so that
    /// a failed upgrade leaves the node on the previous payload, not the original.
    Place {
        target: String,
        path: PathBuf,
        divert_to: PathBuf,
        payload: PathBuf,
        sha256: String,
        original: Original,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<Original>,
    },
    Start {
        unit: String,
    },
    /// Delete our file at `path` (one of `ours` by sha256), before the diversion goes. A
    /// file we did not place is moved to `foreign_to` instead (never deleted, never
    /// clobbering), so that the diversion can go and the original come back.
    Unplace {
        target: String,
        path: PathBuf,
        divert_to: PathBuf,
        ours: Vec<String>,
        /// The payload to put back when this is undone (a failed remove).
        payload: Option<(PathBuf, String)>,
        /// Where a file that is not ours goes ([`foreign_aside`]); chosen when planned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        foreign_to: Option<PathBuf>,
    },
    /// `dpkg-divert --remove --rename`, then check the original is back.
    Undivert {
        target: String,
        path: PathBuf,
        divert_to: PathBuf,
        original: Option<Original>,
    },
    /// Write `state.json`: this state (with `stamp`'s targets swapped now), or (None) the
    /// current one minus the targets that are no longer diverted. Undo writes `before` (the state when the transaction was planned).
    Record {
        state: Option<State>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<State>,
        /// The targets this transaction placed a payload at: their `swapped_at` is set to
        /// the time the record is written.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stamp: Vec<String>,
    },
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::Stop { .. } => "stop",
            Step::Divert { .. } => "divert",
            Step::Stage { .. } => "stage",
            Step::Place { .. } => "place",
            Step::Start { .. } => "start",
            Step::Unplace { .. } => "unplace",
            Step::Undivert { .. } => "undivert",
            Step::Record { .. } => "record",
        }
    }

    /// `divert '/usr/bin/kubelet'`, `stop 'kubelet.service'`, `record`.
    pub fn label(&self) -> String {
        match self {
            Step::Preflight => "preflight".to_string(),
            Step::Record { .. } => format!("record '{}/{}'", paths::STATE_DIR, STATE_FILE),
            Step::Stop { unit } | Step::Start { unit } => format!("{} '{unit}'", self.name()),
            Step::Divert { path, .. }
            | Step::Stage { path, .. }
            | Step::Place { path, .. }
            | Step::Unplace { path, .. }
            | Step::Undivert { path, .. } => format!("{} '{}'", self.name(), path.display()),
        }
    }

    /// `divert /usr/bin/kubelet`: the label without quotes, for use inside quotes.
    pub fn plain(&self) -> String {
        self.label().replace('\'', "")
    }
}

/// Where remove moves a file it did not place: `<path>.k8s-nokmem-foreign-<UTC time>`.
pub fn foreign_aside(path: &Path, secs: u64) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".k8s-nokmem-foreign-{}", utc_stamp(secs)));
    PathBuf::from(name)
}

/// `20261130T221500Z` for seconds since the epoch (civil date from days: H. Hinnant).
pub(super) fn utc_stamp(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
