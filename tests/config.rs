//! The config as the helper reads it on a node (a fake root with the real `dpkg-divert
//! --root`, as in tests/swap.rs): bounded durations, the strict syntax, drop-ins in
//! /etc/k8s-nokmem/conf.d/ and `k8s-nokmem config`. Every refused file exits 2 naming its
//! file, line, key and the fix, with the node unchanged (install's "nothing was changed").

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Output;

use common::node::{assert_same, stderr, NodeRoot};

const CONFFILE: &str = "etc/k8s-nokmem/k8s-nokmem.conf";
const DROPIN: &str = "etc/k8s-nokmem/conf.d/50-local.conf";

/// Exit 2 by the helper's own error path: no panic, no signal.
fn assert_refused(out: &Output, case: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.signal(),
        None,
        "case {case}: killed by a signal: {err}"
    );
    assert_eq!(out.status.code(), Some(2), "case {case}: {err}");
    assert!(
        !err.contains("panicked") && err.starts_with("k8s-nokmem: "),
        "case {case}: {err}"
    );
}

#[test]
fn huge_durations_exit_2_name_the_range_and_change_nothing() {
    // (section, key, range in the message)
    let keys = [
        ("services", "timeout", "from 1ms to 24h"),
        ("services", "settle", "from 1ms to 24h"),
        ("verify", "boot-wait", "from 0s to 24h"),
    ];
    for (section, key, range) in keys {
        for value in ["5000000000000000h", "18446744073709551615"] {
            let case = format!("{key} = {value}");
            let n = NodeRoot::new();
            n.write(
                CONFFILE,
                format!("# node settings\n[{section}]\n{key} = {value}\n").as_bytes(),
                0o644,
            );
            let before = n.snapshot();
            let want = format!(
                "bad value in config '/etc/k8s-nokmem/k8s-nokmem.conf' under root '{}' line 3: [{section}] {key} = '{value}': expected a duration {range}",
                n.path.display()
            );
            for args in [&["install"][..], &["config"]] {
                let out = n.run(args);
                assert_refused(&out, &format!("{args:?} {case}"));
                let err = stderr(&out);
                assert!(err.contains(&want), "case {args:?} {case}: {err}");
            }
            assert!(
                stderr(&n.run(&["install"])).contains("nothing was changed"),
                "case {case}"
            );
            // verify checks with the defaults and says why, instead of waiting forever or
            // aborting on a deadline past the clock's range
            let out = n.run(&["verify", "--wait-for-pods"]);
            assert_eq!(
                out.status.signal(),
                None,
                "case verify {case}: {}",
                stderr(&out)
            );
            assert_ne!(
                out.status.code(),
                Some(101),
                "case verify {case}: {}",
                stderr(&out)
            );
            let report = String::from_utf8_lossy(&out.stdout);
            assert!(
                report.contains("unknown  config") && report.contains(range),
                "case verify {case}: {report}"
            );
            assert_same(&before, &n.snapshot(), &case);
        }
    }
}

#[test]
fn a_typo_that_would_change_what_runs_is_refused_with_the_fix() {
    // (case, file, line, key, words of the fix)
    let cases = [
        (
            "colon",
            "[services]\n# kured reboots\napply: reboot\n",
            3,
            "apply",
            "write 'apply = reboot'",
        ),
        (
            "colon, CRLF",
            "[services]\r\n\r\ntimeout: 30s\r\n",
            3,
            "timeout",
            "write 'timeout = 30s'",
        ),
        (
            "no '='",
            "[services]\napply reboot\n",
            2,
            "apply reboot",
            "write 'key = value'",
        ),
        (
            "inline comment",
            "[services]\napply = reboot # for kured\n",
            2,
            "apply",
            "comments go on their own line: write 'apply = reboot'",
        ),
        (
            "inline comment in a unit list",
            "[runc]\nrestart = docker.service ; and containerd\n",
            2,
            "restart",
            "write 'restart = docker.service'",
        ),
        (
            "duplicate key",
            "[services]\ntimeout = 30s\n\n[services]\ntimeout = 60s\n",
            5,
            "timeout",
            "set twice, at lines 2 and 5; keep one of them",
        ),
        (
            "empty restart",
            "[runc]\nrestart =\n",
            2,
            "restart",
            "write 'restart = none' for no unit",
        ),
        (
            "empty order",
            "[services]\norder =\n",
            2,
            "order",
            "write 'order = none' for no unit",
        ),
        (
            "empty timeout",
            "[services]\ntimeout =\n",
            2,
            "timeout",
            "or delete the line for the default '90s'",
        ),
        (
            "no section",
            "apply = reboot\n",
            1,
            "apply",
            "put it under its section",
        ),
        (
            "open section",
            "[kubelet\npath = /usr/bin/kubelet\n",
            1,
            "[kubelet",
            "such as [services]",
        ),
        (
            "bad value",
            "[kubelet]\n\nversion-skew = maybe\n",
            3,
            "version-skew",
            "expected 'warn' or 'refuse'",
        ),
        (
            "bad duration",
            "[services]\ntimeout = soon\n",
            2,
            "timeout",
            "such as 90s, 2m or 500ms",
        ),
    ];
    for (case, text, line, key, fix) in cases {
        let n = NodeRoot::new();
        n.write(CONFFILE, text.as_bytes(), 0o644);
        let before = n.snapshot();
        let out = n.run(&["install"]);
        assert_refused(&out, case);
        let err = stderr(&out);
        assert!(
            err.contains("config '/etc/k8s-nokmem/k8s-nokmem.conf' under root")
                && err.contains(&format!("line {line}:"))
                && err.contains(key)
                && err.contains(fix)
                && err.contains("nothing was changed"),
            "case '{case}': {err}"
        );
        assert_same(&before, &n.snapshot(), case);
    }
}

#[test]
fn a_byte_order_mark_is_accepted_and_backslashes_are_no_escapes() {
    let n = NodeRoot::new();
    n.write("usr/local/bin/kubelet", common::node::ORIG_KUBELET, 0o755);
    n.write(
        CONFFILE,
        "\u{feff}[kubelet]\npath = /usr/local/bin/kubelet\nrestart = kube\\x2dlet.service\n"
            .as_bytes(),
        0o644,
    );
    n.ok(&["install"]);
    assert!(
        n.diversions().contains(
            &"diversion of /usr/local/bin/kubelet to /usr/local/bin/kubelet.distrib by k8s-nokmem"
                .to_string()
        ),
        "{:?}",
        n.diversions()
    );
    let out = n.run(&["config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[kubelet] restart = kube\\x2dlet.service ")
            && text.contains("# /etc/k8s-nokmem/k8s-nokmem.conf:3"),
        "{text}"
    );
}

#[test]
fn a_dropin_overrides_the_shipped_conffile_and_config_says_where_each_value_is_from() {
    let n = NodeRoot::new();
    let shipped = std::fs::read(common::repo().join("debian/k8s-nokmem.conf")).unwrap();
    n.write(CONFFILE, &shipped, 0o644);
    n.write("usr/local/bin/kubelet", common::node::ORIG_KUBELET, 0o755);
    n.write(
        "etc/k8s-nokmem/conf.d/10-site.conf",
        b"[kubelet]\npath = /usr/bin/kubelet\n[services]\napply = reboot\n",
        0o644,
    );
    n.write(
        DROPIN,
        b"# this node\n[kubelet]\npath = /usr/local/bin/kubelet\n",
        0o644,
    );
    let out = n.run(&["config"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for (setting, from) in [
        (
            "[kubelet] path = /usr/local/bin/kubelet",
            "/etc/k8s-nokmem/conf.d/50-local.conf:3",
        ),
        (
            "[services] apply = reboot",
            "/etc/k8s-nokmem/conf.d/10-site.conf:4",
        ),
        ("[services] timeout = 90s", "default"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{setting} ")) && l.ends_with(&format!("# {from}"))),
            "missing '{setting}' from {from}:\n{text}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&n.run(&["config", "--json"]).stdout).unwrap();
    assert_eq!(
        json["files"],
        serde_json::json!([
            "/etc/k8s-nokmem/k8s-nokmem.conf",
            "/etc/k8s-nokmem/conf.d/10-site.conf",
            "/etc/k8s-nokmem/conf.d/50-local.conf"
        ])
    );
    let skew = json["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["section"] == "kubelet" && s["key"] == "version-skew")
        .expect("no [kubelet] version-skew in `config --json`");
    assert_eq!(
        (&skew["key"], &skew["value"], &skew["file"]),
        (
            &"version-skew".into(),
            &"refuse".into(),
            &serde_json::Value::Null
        )
    );
    // and install acts on the drop-in's value
    n.ok(&["install"]);
    assert!(
        n.diversions()
            .iter()
            .any(|d| d.starts_with("diversion of /usr/local/bin/kubelet ")),
        "{:?}",
        n.diversions()
    );
}

#[test]
fn an_error_in_a_dropin_names_that_file_and_line_and_changes_nothing() {
    let n = NodeRoot::new();
    n.write(CONFFILE, b"[services]\nsettle = 5s\n", 0o644);
    n.write(DROPIN, b"[services]\n\nsettle = 5 secs\n", 0o644);
    let before = n.snapshot();
    for args in [&["install"][..], &["config"]] {
        let out = n.run(args);
        assert_refused(&out, "drop-in");
        let err = stderr(&out);
        assert!(
            err.contains("config '/etc/k8s-nokmem/conf.d/50-local.conf' under root")
                && err.contains("line 3: [services] settle = '5 secs'"),
            "{args:?}: {err}"
        );
    }
    assert_same(&before, &n.snapshot(), "bad drop-in");
}
