//! Which files the settings come from (the conffile, then `conf.d/*.conf` in lexical order)
//! and, for each key, the file and line its effective value was set at.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use log::debug;

use super::{ConfigError, Located, KEYS};
use crate::fs;
use crate::paths::{self, Root};

/// Operators' drop-ins, read after the conffile.
pub const DROPIN_DIR: &str = "/etc/k8s-nokmem/conf.d";
/// Only files named `*.conf` are read (not `*.dpkg-old`, `*.conf~`, `.#x.conf`).
const DROPIN_SUFFIX: &str = ".conf";

/// A config file to read.
#[derive(Debug, Clone)]
pub(super) struct File {
    /// The path as the node sees it (under the root): shown by `k8s-nokmem config`.
    pub path: PathBuf,
    /// Where to open it from here.
    pub host: PathBuf,
    /// How errors name it.
    pub shown: String,
    /// The conffile may be missing (then: defaults); anything else named must exist.
    pub optional: bool,
}

impl File {
    /// A file known only by name (text parsed in tests).
    pub fn named(shown: &str) -> File {
        File {
            path: shown.trim_matches('\'').into(),
            host: shown.into(),
            shown: shown.to_string(),
            optional: false,
        }
    }

    fn in_root(root: &Root, path: PathBuf, optional: bool) -> File {
        File {
            host: root.join(&path),
            shown: root.describe(&path),
            path,
            optional,
        }
    }
}

/// The files to read, in order: `explicit` alone, or the conffile and then the drop-ins.
pub(super) fn files(root: &Root, explicit: Option<&Path>) -> Result<Vec<File>, ConfigError> {
    if let Some(p) = explicit {
        return Ok(vec![File {
            path: p.to_path_buf(),
            host: p.to_path_buf(),
            shown: format!("'{}'", p.display()),
            optional: false,
        }]);
    }
    let mut files = vec![File::in_root(root, paths::CONFIG_FILE.into(), true)];
    let dir = root.join(DROPIN_DIR);
    let listing = match std::fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            debug!("no drop-in directory {}", root.describe(DROPIN_DIR));
            return Ok(files);
        }
        Err(e) => return Err(read_dir_error(root, &dir, e)),
    };
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| read_dir_error(root, &dir, e))?;
        let name = entry.file_name();
        let Some(text) = name.to_str() else {
            debug!("drop-in {name:?} ignored: not a UTF-8 name");
            continue;
        };
        if text.starts_with('.') || !text.ends_with(DROPIN_SUFFIX) {
            debug!("drop-in '{text}' ignored: not named *{DROPIN_SUFFIX}");
            continue;
        }
        // a symlink to /dev/null (systemd's way to mask) or a directory is not a drop-in
        match std::fs::metadata(entry.path()) {
            Ok(meta) if meta.is_file() => names.push(text.to_string()),
            Ok(_) => debug!("drop-in '{text}' ignored: not a regular file"),
            Err(e) => {
                let path = Path::new(DROPIN_DIR).join(text);
                return Err(ConfigError::Read(
                    root.describe(&path),
                    fs::FileError {
                        action: "read",
                        path: entry.path(),
                        source: e,
                    },
                ));
            }
        }
    }
    names.sort();
    for name in names {
        files.push(File::in_root(root, Path::new(DROPIN_DIR).join(name), false));
    }
    Ok(files)
}

fn read_dir_error(root: &Root, dir: &Path, source: io::Error) -> ConfigError {
    ConfigError::ReadDir(
        root.describe(DROPIN_DIR),
        fs::FileError {
            action: "list",
            path: dir.to_path_buf(),
            source,
        },
    )
}

/// Where a value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file as the node sees it.
    pub path: PathBuf,
    /// The file as errors name it.
    pub shown: String,
    pub line: usize,
    /// Order of application: a greater `seq` was applied later (and wins).
    pub seq: usize,
}

/// A key's effective value as written, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub origin: Origin,
}

/// The files read and the setting behind each key that is not at its default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// Files read, in order (as the node sees them).
    pub files: Vec<PathBuf>,
    settings: BTreeMap<(String, String), Setting>,
    seq: usize,
}

impl Sources {
    pub(super) fn record(&mut self, file: &File, at: &Located<'_>) {
        self.seq += 1;
        let setting = Setting {
            value: at.value.to_string(),
            origin: Origin {
                path: file.path.clone(),
                shown: file.shown.clone(),
                line: at.line,
                seq: self.seq,
            },
        };
        let key = (at.section.to_string(), at.key.to_string());
        if let Some(old) = self.settings.insert(key, setting) {
            debug!(
                "config {} line {}: [{}] {} = {} overrides {}:{}",
                at.file,
                at.line,
                at.section,
                at.key,
                at.value,
                old.origin.path.display(),
                old.origin.line
            );
        }
    }

    /// The setting behind `[section] key`, if any file set it.
    pub fn get(&self, section: &str, key: &str) -> Option<&Setting> {
        self.settings.get(&(section.to_string(), key.to_string()))
    }

    /// Every known key with its effective value and origin, in conffile order.
    pub fn effective(&self) -> Vec<Effective> {
        KEYS.iter()
            .map(|&(section, key, default)| match self.get(section, key) {
                Some(s) => Effective {
                    section,
                    key,
                    value: s.value.clone(),
                    file: Some(s.origin.path.clone()),
                    line: Some(s.origin.line),
                },
                None => Effective {
                    section,
                    key,
                    value: default.to_string(),
                    file: None,
                    line: None,
                },
            })
            .collect()
    }
}

/// One line of `k8s-nokmem config`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Effective {
    pub section: &'static str,
    pub key: &'static str,
    pub value: String,
    /// The file that set it; `None`: the default.
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
}

impl Effective {
    /// `/etc/k8s-nokmem/conf.d/50-fleet.conf:3`, or `default`.
    pub fn from(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{}:{l}", f.display()),
            _ => "default".into(),
        }
    }
}

/// The table `k8s-nokmem config` prints: `[section] key = value` and where it came from.
pub fn render(effective: &[Effective], files: &[PathBuf]) -> String {
    let settings: Vec<String> = effective
        .iter()
        .map(|e| format!("[{}] {} = {}", e.section, e.key, e.value))
        .collect();
    let width = settings.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (setting, e) in settings.iter().zip(effective) {
        out.push_str(&format!("{setting:<width$}  # {}\n", e.from()));
    }
    if files.is_empty() {
        out.push_str("# files read: none (every value is the default)\n");
    } else {
        let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        out.push_str(&format!("# files read, in order: {}\n", list.join(", ")));
    }
    out
}
