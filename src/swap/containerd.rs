//! runc against containerd: the payload runc replaces the node's runc under containerd (and
//! dockerd, which drives runc through containerd), so it must be a runc that the node's
//! containerd release line ships and tests. Preflight reads the node's containerd version
//! (dpkg's `containerd` or `containerd.io` package, else `containerd --version` on the live
//! node) and refuses, by default, a payload runc outside that range (`[runc]
//! containerd-skew = refuse|warn`).

use std::cmp::Ordering;
use std::fmt;
use std::path::Path;

use log::{debug, info};

use crate::command::Cmd;
use crate::dpkg::{self, Dpkg};
use crate::paths::Root;

/// A runc release: `1.1.5`, `1.0.0-rc92` (Debian spells it `1.0.0~rc93`; runc 1.2 on
/// `1.2.0-rc.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuncVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// The release candidate, `Some(92)` for `-rc92`; a final release sorts after its rcs.
    pub rc: Option<u64>,
}

impl RuncVersion {
    pub const fn new(major: u64, minor: u64, patch: u64) -> RuncVersion {
        RuncVersion {
            major,
            minor,
            patch,
            rc: None,
        }
    }

    /// `1.0.0-rcN`.
    pub const fn rc(n: u64) -> RuncVersion {
        RuncVersion {
            major: 1,
            minor: 0,
            patch: 0,
            rc: Some(n),
        }
    }

    /// Parse `1.1.5`, `v1.0.0-rc92`, `1.0.0~rc93+ds1-1`, `1.0.0-rc10+dev` (pure): the
    /// numbers, then an optional `-rcN`/`~rcN`; anything after is ignored.
    pub fn parse(text: &str) -> Option<RuncVersion> {
        let v = text.trim();
        let v = v.split_once(':').map(|(_, r)| r).unwrap_or(v);
        let v = v.trim_start_matches('v');
        let mut nums = [0u64; 3];
        let mut rest = v;
        for (i, n) in nums.iter_mut().enumerate() {
            if i > 0 {
                rest = rest.strip_prefix('.')?;
            }
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            *n = rest[..end].parse().ok()?;
            rest = &rest[end..];
        }
        let rc = match rest
            .strip_prefix("-rc")
            .or_else(|| rest.strip_prefix("~rc"))
        {
            Some(r) => {
                let r = r.strip_prefix('.').unwrap_or(r);
                let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                Some(r[..end].parse().ok()?)
            }
            None => None,
        };
        Some(RuncVersion {
            major: nums[0],
            minor: nums[1],
            patch: nums[2],
            rc,
        })
    }

    fn key(&self) -> (u64, u64, u64, u64) {
        (
            self.major,
            self.minor,
            self.patch,
            self.rc.unwrap_or(u64::MAX),
        )
    }
}

impl Ord for RuncVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for RuncVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RuncVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(rc) = self.rc {
            write!(f, "-rc{rc}")?;
        }
        Ok(())
    }
}

/// The runc range one containerd release line ships and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// containerd `major.minor`.
    pub containerd: (u64, u64),
    /// The runc its first release pins.
    pub from: RuncVersion,
    /// The newest runc its release line moved to. A final release covers its patch
    /// releases (`v1.0.3` covers `v1.0.x`); an rc covers only itself and older.
    pub upto: RuncVersion,
}

impl Row {
    /// Does this containerd line support `runc`?
    pub fn supports(&self, runc: &RuncVersion) -> bool {
        let same_minor = (runc.major, runc.minor) == (self.upto.major, self.upto.minor);
        let below_top =
            *runc <= self.upto || (self.upto.rc.is_none() && runc.rc.is_none() && same_minor);
        *runc >= self.from && below_top
    }

    /// `v1.0.0-rc5 to v1.0.0-rc10`, `v1.1.0 to v1.3.x`.
    pub fn range(&self) -> String {
        let upto = match self.upto.rc {
            Some(_) => self.upto.to_string(),
            None => format!("v{}.{}.x", self.upto.major, self.upto.minor),
        };
        format!("{} to {upto}", self.from)
    }
}

const fn row(containerd: (u64, u64), from: RuncVersion, upto: RuncVersion) -> Row {
    Row {
        containerd,
        from,
        upto,
    }
}

/// Which runc each containerd release line supports: the runc its tags pin, from the
/// line's first release to its last (`vendor.conf`'s `github.com/opencontainers/runc` line
/// up to v1.4.4, `script/setup/runc-version` from v1.4.5 and v1.5.0 on; containerd's
/// RUNC.md at those tags: "If you encounter any runtime errors, please make sure your runc
/// is in sync with the commit/tag provided"; from v1.5.0 docs/RUNC.md: "We recommend using
/// a version of runc that's equal to or higher than the version ... in
/// script/setup/runc-version"). Commits are named with `git describe` in runc's history.
///
/// | containerd | first tag: runc | last change in the line: runc |
/// | --- | --- | --- |
/// | 1.0 | v1.0.0: 74a1729 (v1.0.0-rc4-149) | v1.0.2: 9f9c962 (v1.0.0-rc4-205) |
/// | 1.1 | v1.1.0: 69663f0 (v1.0.0-rc5-19) | v1.1.8: 3e425f8 (v1.0.0-rc8-91, CVE-2019-16884) |
/// | 1.2 | v1.2.0: 58592df (v1.0.0-rc5-148) | v1.2.12 .. v1.2.14: v1.0.0-rc10 |
/// | 1.3 | v1.3.0: 3e425f8 (v1.0.0-rc8-91) | v1.3.3 .. v1.3.10: v1.0.0-rc10 |
/// | 1.4 | v1.4.0: v1.0.0-rc92 | v1.4.13: v1.0.3 |
/// | 1.5 | v1.5.0: v1.0.0-rc93 | v1.5.14 .. v1.5.18: v1.1.4 |
/// | 1.6 | v1.6.0: v1.1.0 | v1.6.39: v1.3.0 |
/// | 1.7 | v1.7.0: v1.1.4 | v1.7.33: v1.3.6 |
/// | 2.0 | v2.0.0: v1.2.1 | v2.0.10: v1.3.6 |
/// | 2.1 | v2.1.0: v1.3.0 | v2.1.9: v1.3.6 |
/// | 2.2 | v2.2.0: v1.3.3 | v2.2.5: v1.3.6 |
/// | 2.3 | v2.3.0: v1.4.2 | v2.3.2: v1.4.3 |
pub const TABLE: [Row; 12] = [
    row((1, 0), RuncVersion::rc(4), RuncVersion::rc(4)),
    row((1, 1), RuncVersion::rc(5), RuncVersion::rc(8)),
    row((1, 2), RuncVersion::rc(5), RuncVersion::rc(10)),
    row((1, 3), RuncVersion::rc(8), RuncVersion::rc(10)),
    row((1, 4), RuncVersion::rc(92), RuncVersion::new(1, 0, 3)),
    row((1, 5), RuncVersion::rc(93), RuncVersion::new(1, 1, 4)),
    row((1, 6), RuncVersion::new(1, 1, 0), RuncVersion::new(1, 3, 0)),
    row((1, 7), RuncVersion::new(1, 1, 4), RuncVersion::new(1, 3, 6)),
    row((2, 0), RuncVersion::new(1, 2, 1), RuncVersion::new(1, 3, 6)),
    row((2, 1), RuncVersion::new(1, 3, 0), RuncVersion::new(1, 3, 6)),
    row((2, 2), RuncVersion::new(1, 3, 3), RuncVersion::new(1, 3, 6)),
    row((2, 3), RuncVersion::new(1, 4, 2), RuncVersion::new(1, 4, 3)),
];

/// The row of containerd `major.minor`.
pub fn row_of(containerd: (u64, u64)) -> Option<&'static Row> {
    TABLE.iter().find(|r| r.containerd == containerd)
}

/// The node's containerd: its version and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerd {
    pub version: String,
    /// `package 'containerd'`, `` `/usr/bin/containerd --version` ``.
    pub from: String,
}

impl Containerd {
    pub fn major_minor(&self) -> Option<(u64, u64)> {
        dpkg::major_minor(&self.version)
    }
}

/// The packages that carry containerd under its own version.
pub const PACKAGES: [&str; 2] = ["containerd", "containerd.io"];
/// Where a live node's containerd binary is (Debian/Ubuntu and Docker's packages, static
/// installs, Docker 17.x/18.06's bundled one).
pub const BINARIES: [&str; 4] = [
    "/usr/bin/containerd",
    "/usr/local/bin/containerd",
    "/usr/sbin/containerd",
    "/usr/bin/docker-containerd",
];

/// The version `containerd --version` prints (pure): `containerd github.com/containerd/containerd
/// v1.5.8 1e5ef94...`, `containerd containerd.io 1.6.33 d2d5821...`, or Debian's
/// `containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1`.
pub fn parse_version_output(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let mut words = line.split_whitespace();
    if !words.next()?.contains("containerd") {
        return None;
    }
    words
        .find(|w| {
            let w = w.trim_start_matches('v');
            w.starts_with(|c: char| c.is_ascii_digit()) && dpkg::major_minor(w).is_some()
        })
        .map(|w| w.trim_start_matches('v').to_string())
}

/// Find the node's containerd on `root`: its package (`containerd`, `containerd.io`), else,
/// on the live node only (an image's binaries are never run on the build host), the first of
/// [`BINARIES`] that answers `--version`. None: no containerd found.
pub fn find(root: &Root, dpkg: &Dpkg) -> anyhow::Result<Option<Containerd>> {
    for pkg in PACKAGES {
        if let Some(version) = dpkg.version(pkg)? {
            return Ok(Some(Containerd {
                version,
                from: format!("package '{pkg}'"),
            }));
        }
    }
    if !root.is_host() {
        return Ok(None);
    }
    for bin in BINARIES.iter().filter(|b| Path::new(b).is_file()) {
        match Cmd::new(bin).arg("--version").output() {
            Ok((out, shown)) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                match parse_version_output(&text) {
                    Some(version) => {
                        return Ok(Some(Containerd {
                            version,
                            from: format!("`{shown}`"),
                        }))
                    }
                    None => debug!("`{shown}` printed no version: {}", text.trim()),
                }
            }
            Ok((out, shown)) => debug!("`{shown}`: {}", out.status),
            Err(e) => debug!("{bin}: {}", crate::notes::error_chain(&e)),
        }
    }
    Ok(None)
}

/// What the table says about a payload runc under a containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Supported(&'static Row),
    Unsupported(&'static Row),
    /// The containerd or runc version could not be placed (the reason is for the log).
    Unknown(String),
}

/// Judge `runc` (the MANIFEST's version) under `containerd` (pure).
pub fn judge(containerd: &Containerd, runc: &str) -> Verdict {
    let Some(mm) = containerd.major_minor() else {
        return Verdict::Unknown(format!(
            "containerd version '{}' ({}) is not major.minor",
            containerd.version, containerd.from
        ));
    };
    let Some(row) = row_of(mm) else {
        return Verdict::Unknown(format!(
            "containerd {}.{} ({} {}) is not in k8s-nokmem's table (containerd 1.0 to 2.3)",
            mm.0, mm.1, containerd.from, containerd.version
        ));
    };
    let Some(v) = RuncVersion::parse(runc) else {
        return Verdict::Unknown(format!(
            "payload runc version '{runc}' is not a runc release"
        ));
    };
    if row.supports(&v) {
        Verdict::Supported(row)
    } else {
        Verdict::Unsupported(row)
    }
}

/// Log what was found when there is nothing to refuse.
pub fn log_verdict(containerd: Option<&Containerd>, runc: &str, verdict: Option<&Verdict>) {
    match (containerd, verdict) {
        (None, _) => info!(
            "containerd check skipped: no containerd package or binary found (payload runc {runc})"
        ),
        (Some(c), Some(Verdict::Supported(row))) => debug!(
            "containerd {} ({}) supports runc {}: payload runc {runc}",
            c.version,
            c.from,
            row.range()
        ),
        (Some(_), Some(Verdict::Unknown(why))) => info!("containerd check skipped: {why}"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_versions_parse_and_order() {
        let cases = [
            ("1.1.5", Some(RuncVersion::new(1, 1, 5))),
            ("v1.0.0-rc92", Some(RuncVersion::rc(92))),
            ("1.0.0~rc93+ds1-1", Some(RuncVersion::rc(93))),
            ("1.0.0-rc10+dev", Some(RuncVersion::rc(10))),
            ("1.1.5+ds1-1", Some(RuncVersion::new(1, 1, 5))),
            ("1.1", None),
            ("rc9", None),
        ];
        for (text, want) in cases {
            assert_eq!(RuncVersion::parse(text), want, "case {text}");
        }
        let ordered = [
            RuncVersion::rc(5),
            RuncVersion::rc(10),
            RuncVersion::rc(92),
            RuncVersion::new(1, 0, 0),
            RuncVersion::new(1, 0, 3),
            RuncVersion::new(1, 1, 0),
        ];
        for w in ordered.windows(2) {
            assert!(w[0] < w[1], "{} < {}", w[0], w[1]);
        }
        assert_eq!(RuncVersion::rc(9).to_string(), "v1.0.0-rc9");
    }

    #[test]
    fn the_table_supports_what_each_containerd_line_pins() {
        // (containerd package version, payload runc, supported)
        let cases = [
            // Docker 18.09 on Ubuntu 16.04: containerd 1.2
            ("1.2.6-0ubuntu1~16.04.6", "1.1.5", false),
            ("1.2.6-0ubuntu1~16.04.6", "1.0.0-rc9", true),
            ("1.2.13-2", "1.0.0-rc10", true),
            ("1.2.13-2", "1.0.0-rc92", false),
            ("1.2.0-1", "1.0.0-rc4", false),
            ("1.3.3-1", "1.0.0-rc10", true),
            ("1.3.3-1", "1.0.0-rc8", true),
            ("1.3.3-1", "1.0.0-rc92", false),
            ("1.3.3-1", "1.0.0", false),
            // Debian 11: containerd 1.4.13, runc rc93
            ("1.4.13~ds1-1~deb11u4", "1.0.0~rc93+ds1-5", true),
            ("1.4.13~ds1-1~deb11u4", "1.0.3", true),
            ("1.4.13~ds1-1~deb11u4", "1.1.5", false),
            ("1.4.13~ds1-1~deb11u4", "1.0.0-rc10", false),
            ("1.5.9-1", "1.1.5", true),
            ("1.5.9-1", "1.2.0", false),
            ("1.5.9-1", "1.0.0-rc93", true),
            // Debian 12: containerd 1.6.20, runc 1.1.5 (the default payload)
            ("1.6.20~ds1-1+b1", "1.1.5", true),
            ("1.6.20~ds1-1+b1", "1.0.3", false),
            ("1.6.33-1", "1.3.0", true),
            ("1.6.33-1", "1.3.1", true),
            ("1.6.33-1", "1.4.0", false),
            ("1.6.33-1", "1.2.0-rc.1", true),
            ("1.7.24-1", "1.1.4", true),
            ("1.7.24-1", "1.1.3", false),
            ("2.1.4-1", "1.1.5", false),
            ("2.1.4-1", "1.3.6", true),
        ];
        for (containerd, runc, supported) in cases {
            let c = Containerd {
                version: containerd.to_string(),
                from: "package 'containerd'".into(),
            };
            let got = judge(&c, runc);
            let ok = matches!(got, Verdict::Supported(_));
            assert!(
                ok == supported && !matches!(got, Verdict::Unknown(_)),
                "case containerd {containerd} runc {runc}: {got:?}"
            );
        }
        let unknown = Containerd {
            version: "0.2.9".into(),
            from: "package 'containerd'".into(),
        };
        assert!(matches!(judge(&unknown, "1.1.5"), Verdict::Unknown(_)));
        assert_eq!(row_of((1, 2)).unwrap().range(), "v1.0.0-rc5 to v1.0.0-rc10");
        assert_eq!(row_of((1, 6)).unwrap().range(), "v1.1.0 to v1.3.x");
    }

    /// README's "Which runc for which Docker" has one row per containerd line, with the
    /// table's range.
    #[test]
    fn the_readme_matches_the_table() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## Which runc for which Docker")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has the section");
        let rows: Vec<&str> = section
            .lines()
            .filter(|l| l.starts_with("| ") && l.as_bytes().get(2).is_some_and(u8::is_ascii_digit))
            .collect();
        assert_eq!(rows.len(), TABLE.len(), "{rows:#?}");
        for (line, row) in rows.iter().zip(TABLE.iter()) {
            let (major, minor) = row.containerd;
            assert!(
                line.starts_with(&format!("| {major}.{minor} |"))
                    && line.ends_with(&format!("| {} |", row.range())),
                "containerd {major}.{minor}: README says '{line}', the table {}",
                row.range()
            );
        }
    }

    #[test]
    fn containerd_version_output() {
        let cases = [
            (
                "containerd github.com/containerd/containerd v1.5.8 1e5ef943eb76627a6d3b6de8cd1ef6537f393a71\n",
                Some("1.5.8"),
            ),
            ("containerd containerd.io 1.6.33 d2d58213f83a351ca8f528a95fbd145f5654e957\n", Some("1.6.33")),
            (
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n",
                Some("1.6.20~ds1"),
            ),
            ("docker-containerd github.com/containerd/containerd v1.1.2 468a545b\n", Some("1.1.2")),
            ("runc version 1.1.5\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_version_output(text).as_deref(), want, "case {text:?}");
        }
    }
}
