//! A payload binary against the MANIFEST that describes it: what the build recorded (sha256,
//! Go version, build tags, architecture, `-trimpath`, cgo) must be what the binary's own
//! bytes say (its hash, Go's build info, the ELF header). A person can then trust the
//! MANIFEST's provenance (sources, toolchain, flags) for the bytes in hand.

use serde::Serialize;

use super::BinaryReport;
use crate::manifest::Binary;

/// How one recorded fact compares with the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Match,
    Mismatch,
    /// The binary does not record it (Go < 1.18 has no build settings): not a mismatch.
    Unknown,
}

/// One fact: the MANIFEST's value and the binary's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `sha256`, `go`, `tags`, `arch`, `-trimpath` or `CGO_ENABLED`.
    pub what: &'static str,
    pub manifest: String,
    /// `None` when the binary does not record it.
    pub binary: Option<String>,
    pub status: Status,
}

impl Check {
    fn new(what: &'static str, manifest: String, binary: Option<String>) -> Check {
        let status = match &binary {
            None => Status::Unknown,
            Some(b) if *b == manifest => Status::Match,
            Some(_) => Status::Mismatch,
        };
        Check {
            what,
            manifest,
            binary,
            status,
        }
    }
}

/// Compare `entry` (the binary's MANIFEST section) with `report` (its inspection) and
/// `sha256` (its hash). Facts the MANIFEST does not record (an older build) are left out.
pub fn cross_check(report: &BinaryReport, sha256: &str, entry: &Binary) -> Vec<Check> {
    let setting = |key: &str| -> Option<String> {
        if report.build_settings.is_empty() {
            return None;
        }
        Some(
            report
                .build_settings
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                // Go records -trimpath only when set, CGO_ENABLED always
                .unwrap_or_else(|| "false".into()),
        )
    };
    let mut checks = vec![Check::new(
        "sha256",
        entry.sha256.clone(),
        Some(sha256.to_string()),
    )];
    if !entry.go.is_empty() {
        checks.push(Check::new(
            "go",
            entry.go.clone(),
            report.go_version.clone(),
        ));
    }
    let sorted = |tags: &[String]| {
        let mut t = tags.to_vec();
        t.sort();
        t.join(",")
    };
    checks.push(Check::new(
        "tags",
        sorted(&entry.tags),
        report.tags.as_deref().map(sorted),
    ));
    checks.push(Check::new(
        "arch",
        entry.arch.clone(),
        Some(report.arch.clone()),
    ));
    if !entry.build.is_empty() {
        let trimpath = entry.build.split_whitespace().any(|w| w == "-trimpath");
        checks.push(Check::new(
            "-trimpath",
            trimpath.to_string(),
            setting("-trimpath"),
        ));
        if let Some(cgo) = entry
            .build
            .split_whitespace()
            .find_map(|w| w.strip_prefix("CGO_ENABLED="))
        {
            checks.push(Check::new(
                "CGO_ENABLED",
                cgo.to_string(),
                setting("CGO_ENABLED"),
            ));
        }
    }
    checks
}

/// True when no check is a mismatch.
pub fn all_match(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Mismatch)
}

/// `sha256 ok, go go1.19.8 ok, ...; MISMATCH tags: MANIFEST 'a,b', binary 'a'`.
pub fn summary(checks: &[Check]) -> String {
    checks
        .iter()
        .map(|c| match c.status {
            Status::Match => format!("{} ok", c.what),
            Status::Unknown => format!("{} not recorded in the binary", c.what),
            Status::Mismatch => format!(
                "MISMATCH {}: MANIFEST '{}', binary '{}'",
                c.what,
                c.manifest,
                c.binary.as_deref().unwrap_or_default()
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gobin::{Reason, Verdict};

    fn report() -> BinaryReport {
        BinaryReport {
            path: "/usr/lib/k8s-nokmem/runc".into(),
            verdict: Verdict::Safe,
            reason: Reason::NokmemTag,
            arch: "arm64".into(),
            go_version: Some("go1.19.8".into()),
            go_releases: None,
            tags: Some(vec!["seccomp".into(), "nokmem".into()]),
            build_settings: vec![
                ("-tags".into(), "seccomp,nokmem".into()),
                ("-trimpath".into(), "true".into()),
                ("CGO_ENABLED".into(), "1".into()),
                ("GOARCH".into(), "arm64".into()),
            ],
            evidence: vec![],
            nokmem_evidence: vec![],
            size: 1,
        }
    }

    fn entry() -> Binary {
        Binary {
            name: "runc".into(),
            file: "runc".into(),
            version: "1.1.5".into(),
            source: "debian:runc=1.1.5+ds1-1".into(),
            source_sha256: None,
            commit: None,
            go: "go1.19.8".into(),
            tags: vec!["nokmem".into(), "seccomp".into()],
            arch: "arm64".into(),
            size: 1,
            sha256: "a".repeat(64),
            check: String::new(),
            build: "CGO_ENABLED=1 GOOS=linux GOARCH=arm64 go build -trimpath -tags=seccomp,nokmem"
                .into(),
            built_using: vec![],
        }
    }

    fn statuses(checks: &[Check]) -> Vec<(&'static str, Status)> {
        checks.iter().map(|c| (c.what, c.status)).collect()
    }

    #[test]
    fn a_binary_that_is_what_its_manifest_says_matches_everywhere() {
        let checks = cross_check(&report(), &"a".repeat(64), &entry());
        assert!(all_match(&checks), "{}", summary(&checks));
        assert_eq!(
            summary(&checks),
            "sha256 ok, go ok, tags ok, arch ok, -trimpath ok, CGO_ENABLED ok"
        );
    }

    #[test]
    fn each_difference_is_named() {
        type Change = fn(&mut BinaryReport, &mut Binary);
        let cases: [(&str, Change, &str); 6] = [
            (
                "sha256",
                |_, e| e.sha256 = "b".repeat(64),
                "MISMATCH sha256",
            ),
            (
                "go",
                |r, _| r.go_version = Some("go1.20.1".into()),
                "MISMATCH go: MANIFEST 'go1.19.8', binary 'go1.20.1'",
            ),
            (
                "tags",
                |r, _| r.tags = Some(vec!["seccomp".into()]),
                "MISMATCH tags: MANIFEST 'nokmem,seccomp', binary 'seccomp'",
            ),
            ("arch", |r, _| r.arch = "amd64".into(), "MISMATCH arch"),
            (
                "-trimpath",
                |r, _| r.build_settings.retain(|(k, _)| k != "-trimpath"),
                "MISMATCH -trimpath: MANIFEST 'true', binary 'false'",
            ),
            (
                "CGO_ENABLED",
                |_, e| e.build = e.build.replace("CGO_ENABLED=1", "CGO_ENABLED=0"),
                "MISMATCH CGO_ENABLED: MANIFEST '0', binary '1'",
            ),
        ];
        for (what, change, want) in cases {
            let (mut r, mut e) = (report(), entry());
            change(&mut r, &mut e);
            let checks = cross_check(&r, &"a".repeat(64), &e);
            assert!(!all_match(&checks), "case {what}");
            let bad: Vec<_> = statuses(&checks)
                .into_iter()
                .filter(|(_, s)| *s == Status::Mismatch)
                .collect();
            assert_eq!(bad, [(what, Status::Mismatch)], "case {what}");
            assert!(
                summary(&checks).contains(want),
                "case {what}: {}",
                summary(&checks)
            );
        }
    }

    #[test]
    fn what_an_old_binary_or_manifest_does_not_record_is_not_a_mismatch() {
        let mut r = report();
        r.build_settings.clear();
        r.tags = None;
        let mut e = entry();
        e.build.clear();
        let checks = cross_check(&r, &"a".repeat(64), &e);
        assert!(all_match(&checks), "{}", summary(&checks));
        assert_eq!(
            statuses(&checks),
            [
                ("sha256", Status::Match),
                ("go", Status::Match),
                ("tags", Status::Unknown),
                ("arch", Status::Match)
            ]
        );
    }
}
