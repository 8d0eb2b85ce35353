//! Value parsers for the config keys: unit lists, bounded durations, target and other paths.
//! Each takes the [`Located`] key so that its error names the file, line, key and value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ConfigError, Located, HELPER_PATH};
use crate::paths;

/// The longest any duration key may be: a day. Beyond it nothing is still "waiting for a
/// service", and every deadline computed from it stays far inside `Instant`'s range.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The shortest a timeout or settle window may be.
pub const MIN_WAIT: Duration = Duration::from_millis(1);

/// A space-separated list of systemd unit names, or `none` for no unit at all. An empty
/// value is an error: it reads like a forgotten value, not like "nothing".
pub(super) fn units(at: &Located<'_>, default: &str) -> Result<Vec<String>, ConfigError> {
    if at.value.is_empty() {
        return Err(at.bad(&format!(
            "unit names or 'none'; write '{} = none' for no unit, or delete the line for the default '{default}'",
            at.key
        )));
    }
    if at.value == "none" {
        return Ok(Vec::new());
    }
    let units: Vec<String> = at.value.split_whitespace().map(str::to_string).collect();
    let valid = |u: &String| {
        u.contains('.')
            && u != "none"
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
    };
    if units.iter().all(valid) {
        Ok(units)
    } else {
        Err(at.bad(
            "unit names separated by spaces, such as 'kubelet.service docker.service', or 'none'",
        ))
    }
}

/// One of the named `choices`; the error lists them: `'warn' or 'refuse'`.
pub(super) fn one_of<T: Copy>(at: &Located<'_>, choices: &[(&str, T)]) -> Result<T, ConfigError> {
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == at.value) {
        return Ok(*value);
    }
    let names: Vec<String> = choices.iter().map(|(n, _)| format!("'{n}'")).collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(at.bad(&expected))
}

/// A duration from `min` to [`MAX_DURATION`]; the error names the range.
pub(super) fn duration(at: &Located<'_>, min: Duration) -> Result<Duration, ConfigError> {
    match parse_duration(at.value) {
        Some(d) if (min..=MAX_DURATION).contains(&d) => Ok(d),
        _ => Err(at.bad(&format!(
            "a duration from {} to 24h, such as 90s, 2m or 500ms",
            show_duration(min)
        ))),
    }
}

/// `1ms`, `0s`, `20s`: the shortest exact form (for messages and defaults).
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 || ms == 0 && !d.is_zero() {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs())
    }
}

/// Parse `90`, `90s`, `2m`, `1h`, `500ms` (pure, for tests). `None` when it is not a
/// duration or does not fit a `Duration`; bounds are the caller's.
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

/// A binary to divert: an absolute path in canonical form (no `.`, `..`, `//` or trailing
/// `/`), not one of ours.
pub(super) fn target_path(at: &Located<'_>) -> Result<PathBuf, ConfigError> {
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

pub(super) fn abs_path(at: &Located<'_>) -> Result<PathBuf, ConfigError> {
    if at.value.starts_with('/') {
        Ok(at.value.into())
    } else {
        Err(at.bad("an absolute path"))
    }
}
