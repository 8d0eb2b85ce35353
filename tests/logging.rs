//! Log priorities for journald: under our units (`K8S_NOKMEM_LOG_PREFIX=sd-daemon`, set in
//! systemd/*.service) or with stderr being journald's stream (`$JOURNAL_STREAM` = stderr's
//! device:inode, systemd >= 231), every stderr line starts with its sd-daemon priority
//! (sd-daemon(3): `<3>` error, `<4>` warning, `<6>` info, `<7>` debug), which journald parses
//! so that `journalctl -p warning` selects by it; elsewhere (a terminal, apt's term.log) the
//! lines are plain. The last test reads what the real journald stored (systemd booted in the
//! nspawn testbed; needs root and `scripts/testbed-root.sh`, else it fails naming them).

mod common;
#[macro_use]
#[path = "common/nspawn.rs"]
mod nspawn;

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use common::assert_contains;
use common::node::NodeRoot;

/// Every line starts with `<N>` and the level word that goes with N.
fn assert_prefixed(log: &str) {
    assert!(!log.is_empty());
    let mut level = "";
    for line in log.lines() {
        let (prefix, rest) = line.split_at(3.min(line.len()));
        let want = match prefix {
            "<3>" => "error",
            "<4>" => "warn",
            "<6>" => "info",
            "<7>" => "debug",
            _ => panic!("line without a priority: '{line}' in:\n{log}"),
        };
        // continuation lines (causes, notes, a command's output) keep their record's level
        if let Some(word) = rest
            .strip_prefix("k8s-nokmem: ")
            .and_then(|r| r.split(':').next())
        {
            level = word;
        }
        assert_eq!(level, want, "line '{line}' in:\n{log}");
    }
}

#[test]
fn under_our_units_every_line_carries_its_priority() {
    let n = NodeRoot::new();
    // info lines, and a warning (an unknown key)
    n.write(
        "etc/k8s-nokmem/conf.d/50-local.conf",
        b"[services]\nsetle = 5s\n",
        0o644,
    );
    let out = n
        .helper(&["install", "-v"])
        .env("K8S_NOKMEM_LOG_PREFIX", "sd-daemon")
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert_prefixed(&log);
    assert_contains(
        &log,
        &[
            "<6>k8s-nokmem: info: install [1/12] preflight: ok (",
            "<4>k8s-nokmem: warn: config '/etc/k8s-nokmem/conf.d/50-local.conf' under root",
            "<7>k8s-nokmem: debug: ",
        ],
        "log",
    );
    assert!(log.contains("(did you mean [services] settle?)"), "{log}");
    // an error report: the error, its causes and notes, all at error priority
    n.write(
        "etc/k8s-nokmem/conf.d/50-local.conf",
        b"[services]\nsettle: 5s\n",
        0o644,
    );
    let out = n
        .helper(&["install"])
        .env("K8S_NOKMEM_LOG_PREFIX", "sd-daemon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_prefixed(&log);
    assert!(log.contains("<3>k8s-nokmem: error: install "), "{log}");
    assert!(
        log.lines().filter(|l| l.starts_with("<3>")).count() >= 2,
        "{log}"
    );
    // and without the variable, plain lines
    let out = n.helper(&["install"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.starts_with("k8s-nokmem: "), "{log}");
    assert!(!log.lines().any(|l| l.starts_with('<')), "{log}");
}

/// Run `status -v` with stderr into a file and `JOURNAL_STREAM` set to `stream(file)`.
fn run_with_journal_stream(n: &NodeRoot, stream: impl Fn(&std::fs::Metadata) -> String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stderr");
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let status = n
        .helper(&["status", "-v"])
        .env("JOURNAL_STREAM", stream(&meta))
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn journal_stream_naming_stderr_turns_priorities_on() {
    let n = NodeRoot::new();
    let log = run_with_journal_stream(&n, |m| format!("{}:{}", m.dev(), m.ino()));
    assert_prefixed(&log);
    // a JOURNAL_STREAM inherited from a parent whose stderr was the journal, while ours is not
    let log = run_with_journal_stream(&n, |m| format!("{}:{}", m.dev(), m.ino() + 1));
    assert!(log.starts_with("k8s-nokmem: debug: "), "{log}");
}

/// `(PRIORITY, MESSAGE)` of our log lines in the journal of `unit` inside the testbed.
fn journal_entries(tb: &nspawn::Testbed, unit: &str) -> Vec<(String, String)> {
    tb.sh_ok("journalctl --sync");
    let out = tb.sh_ok(&format!("journalctl --no-pager -o json -u {unit}"));
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| {
            let prio = e["PRIORITY"].as_str()?.to_string();
            let msg = e["MESSAGE"].as_str()?.to_string();
            // our log lines (not the results on stdout, not systemd's own lines), and any
            // line that kept a `<N>` journald should have taken
            (msg.starts_with("k8s-nokmem: ") || msg.starts_with('<')).then_some((prio, msg))
        })
        .collect()
}

/// What journald stored for our lines: each at its level's priority, the `<N>` stripped;
/// `-p warning` (priority <= 4) then shows the warnings and the errors.
fn assert_filed_by_priority(entries: &[(String, String)], what: &str) {
    assert!(
        entries
            .iter()
            .any(|(p, m)| p == "4" && m.starts_with("k8s-nokmem: warn: ")),
        "{what}: no warning at priority 4: {entries:#?}"
    );
    for (prio, msg) in entries {
        let want = match msg.split(':').nth(1).map(str::trim) {
            Some("error") => "3",
            Some("warn") => "4",
            Some("info") => "6",
            Some("debug") | Some("trace") => "7",
            _ => panic!("{what}: a line journald did not strip or we did not write: '{msg}'"),
        };
        assert_eq!(prio, want, "{what}: '{msg}'");
    }
}

#[test]
fn journald_files_each_line_at_its_priority() {
    let Some(root) = nspawn::root_or_skip(test_name!()) else {
        return;
    };
    let mut tb = nspawn::Testbed::new(&root);
    let unit = "k8s-nokmem-verify.service";
    tb.install_unit(unit);
    // a warning on every run: an unknown key
    tb.install_helper("[verify]\nboot-wait = 0\nzombie-warn-percnt = 60\n");
    tb.boot();
    // the unit as shipped (verify may find a problem on this kernel: any result)
    let problem = !tb.run(&["systemctl", "start", unit]).status.success();
    let entries = journal_entries(&tb, unit);
    assert_filed_by_priority(&entries, unit);
    // the result line, at the level of the worst finding: a failed unit is an error
    let result = entries
        .iter()
        .find(|(_, m)| m.contains(": verify: "))
        .unwrap_or_else(|| panic!("no result line: {entries:#?}"));
    assert!(!problem || result.0 == "3", "{result:?}");
    assert!(
        entries
            .iter()
            .any(|(_, m)| m.contains("unknown key 'zombie-warn-percnt'")),
        "{entries:#?}"
    );
    let shown = tb.sh_ok(&format!(
        "journalctl --no-pager -o cat -p warning -u {unit}"
    ));
    assert!(
        shown.contains("unknown key 'zombie-warn-percnt'"),
        "{shown}"
    );
    assert!(
        !problem || shown.contains("k8s-nokmem: error: verify: "),
        "{shown}"
    );

    // as on systemd 229, which sets no JOURNAL_STREAM: the unit's variable alone does it;
    // without it, journald files every line at its default, info
    for (name, env, filed) in [
        (
            "k8s-nokmem-log-229",
            "K8S_NOKMEM_LOG_PREFIX=sd-daemon",
            true,
        ),
        ("k8s-nokmem-log-plain", "K8S_NOKMEM_LOG_PREFIX=", false),
    ] {
        tb.sh_ok(&format!(
            "systemd-run --wait --unit={name} -p StandardOutput=null -p StandardError=journal \
             /usr/bin/env -u JOURNAL_STREAM {env} /usr/sbin/k8s-nokmem config"
        ));
        let entries = journal_entries(&tb, &format!("{name}.service"));
        if filed {
            assert_filed_by_priority(&entries, name);
        } else {
            assert!(
                !entries.is_empty()
                    && entries
                        .iter()
                        .all(|(p, m)| p == "6" && m.starts_with("k8s-nokmem: ")),
                "{name}: {entries:#?}"
            );
        }
    }
}
