//! Unit tests of the config: values, defaults, bounds, strict syntax, drop-ins.

use std::collections::BTreeMap;

use super::*;
use crate::paths;

#[test]
fn shipped_conffile_parses_to_the_defaults() {
    let text = include_str!("../../debian/k8s-nokmem.conf");
    let parsed = Config::parse(text, "debian/k8s-nokmem.conf").unwrap();
    assert_eq!(parsed, Config::default());
}

#[test]
fn values_override_defaults() {
    let text = "[kubelet]\npath = /usr/local/bin/kubelet\nversion-skew = warn\n\
                [services]\norder = kubelet.service containerd.service\ntimeout = 2m\n\
                [verify]\nkernel-wide-kmem = warning\nboot-wait = 500ms\n";
    let c = Config::parse(text, "t").unwrap();
    assert_eq!(
        c.target("kubelet").unwrap().path,
        TargetPath::Fixed("/usr/local/bin/kubelet".into())
    );
    assert_eq!(c.version_skew, SkewPolicy::Warn);
    assert_eq!(
        c.service_order,
        vec!["kubelet.service", "containerd.service"]
    );
    assert_eq!(c.service_timeout, Duration::from_secs(120));
    assert_eq!(c.verify.kernel_wide_kmem, Severity::Warning);
    assert_eq!(c.verify.boot_wait, Duration::from_millis(500));
}

#[test]
fn kernel_cmdline_and_apply() {
    let c = Config::parse(
        "[kernel]\ncmdline = leave\n[services]\napply = reboot\n",
        "t",
    )
    .unwrap();
    assert_eq!(c.kernel_cmdline, CmdlineMode::Leave);
    assert_eq!(c.apply, Apply::Reboot);
    let err = Config::parse("[services]\napply = later\n", "t").unwrap_err();
    assert!(
        err.to_string()
            .ends_with("expected 'restart', 'reboot' or 'auto'"),
        "{err}"
    );
    let err = Config::parse("[kernel]\ncmdline = grub\n", "t").unwrap_err();
    assert!(
        err.to_string().contains("'auto', 'manage' or 'leave'"),
        "{err}"
    );
}

#[test]
fn bad_values_name_file_line_key_and_value() {
    let cases = [
        (
            "[kubelet]\n\nversion-skew = maybe\n",
            3,
            "version-skew",
            "maybe",
        ),
        ("[runc]\npath = usr/bin/runc\n", 2, "path", "usr/bin/runc"),
        ("[services]\ntimeout = soon\n", 2, "timeout", "soon"),
        (
            "[services]\norder = kubelet docker.service\n",
            2,
            "order",
            "kubelet docker.service",
        ),
        (
            "[verify]\nzombie-warn-percent = 0\n",
            2,
            "zombie-warn-percent",
            "0",
        ),
    ];
    for (text, line, key, value) in cases {
        let err = Config::parse(text, "'/etc/k8s-nokmem/k8s-nokmem.conf'").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("line {line}:"))
                && msg.contains(key)
                && msg.contains(&format!("'{value}'"))
                && msg.contains("/etc/k8s-nokmem/k8s-nokmem.conf"),
            "case {key}={value}: {msg}"
        );
    }
}

#[test]
fn target_paths_and_durations_are_validated() {
    // (case, text, line, key, value, words of the fix)
    let cases = [
        (
            "dot-dot",
            "[runc]\npath = /usr/bin/../sbin/runc\n",
            2,
            "path",
            "/usr/bin/../sbin/runc",
            "'/usr/sbin/runc'",
        ),
        (
            "dot",
            "[kubelet]\npath = /usr/bin/./kubelet\n",
            2,
            "path",
            "/usr/bin/./kubelet",
            "'/usr/bin/kubelet'",
        ),
        (
            "double slash",
            "[kubelet]\npath = /usr//bin/kubelet\n",
            2,
            "path",
            "/usr//bin/kubelet",
            "'/usr/bin/kubelet'",
        ),
        (
            "trailing slash",
            "[kubelet]\npath = /usr/bin/kubelet/\n",
            2,
            "path",
            "/usr/bin/kubelet/",
            "'/usr/bin/kubelet'",
        ),
        (
            "relative",
            "[runc]\npath = runc\n",
            2,
            "path",
            "runc",
            "absolute path",
        ),
        (
            "the payload",
            "[kubelet]\npath = /usr/lib/k8s-nokmem/kubelet\n",
            2,
            "path",
            "/usr/lib/k8s-nokmem/kubelet",
            "outside /usr/lib/k8s-nokmem/",
        ),
        (
            "the helper",
            "[runc]\n\npath = /usr/sbin/k8s-nokmem\n",
            3,
            "path",
            "/usr/sbin/k8s-nokmem",
            "not k8s-nokmem's own helper",
        ),
        (
            "same file",
            "[runc]\npath = /usr/bin/x\n[kubelet]\npath = /usr/bin/x\n",
            4,
            "path",
            "/usr/bin/x",
            "different from [runc] path",
        ),
        (
            "zero timeout",
            "[services]\ntimeout = 0s\n",
            2,
            "timeout",
            "0s",
            "from 1ms to 24h",
        ),
        (
            "zero settle",
            "[services]\nsettle = 0\n",
            2,
            "settle",
            "0",
            "from 1ms to 24h",
        ),
        (
            "bad settle",
            "[services]\nsettle = a while\n",
            2,
            "settle",
            "a while",
            "from 1ms to 24h",
        ),
    ];
    for (case, text, line, key, value, fix) in cases {
        let err = Config::parse(text, "'/etc/k8s-nokmem/k8s-nokmem.conf'").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("config '/etc/k8s-nokmem/k8s-nokmem.conf'")
                && msg.contains(&format!("line {line}:"))
                && msg.contains(&format!("{key} = '{value}'"))
                && msg.contains(fix),
            "case '{case}': {msg}"
        );
    }
    // and what is fine
    let ok = "[runc]\npath = /usr/sbin/runc\n[kubelet]\npath = /usr/local/bin/kubelet\n\
              [services]\nsettle = 5s\ntimeout = 500ms\n";
    let c = Config::parse(ok, "f").unwrap();
    assert_eq!(c.service_settle, Duration::from_secs(5));
    assert_eq!(c.service_timeout, Duration::from_millis(500));
    assert_eq!(Config::default().service_settle, DEFAULT_SETTLE);
}

/// Parsing reads the config files and nothing else: a target path through a symlink on
/// this node is a valid value here (`targets::resolve`, where it is used, refuses it).
#[test]
fn parsing_does_not_check_paths_against_the_node() {
    // a usrmerged root: /sbin -> usr/sbin
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    std::fs::create_dir_all(root.join("/usr/sbin")).unwrap();
    std::fs::create_dir_all(root.join("/etc/k8s-nokmem")).unwrap();
    std::fs::write(root.join("/usr/sbin/runc"), b"runc").unwrap();
    std::os::unix::fs::symlink("usr/sbin", root.join("/sbin")).unwrap();
    std::fs::write(root.join(paths::CONFIG_FILE), "[runc]\npath = /sbin/runc\n").unwrap();
    let config = Config::load(&root, None).unwrap();
    assert_eq!(
        config.target("runc").unwrap().path,
        TargetPath::Fixed("/sbin/runc".into())
    );
}

#[test]
fn garbled_file_is_a_syntax_error_with_a_line() {
    let err = Config::parse("[kubelet\npath = /x\n", "f").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("syntax error in config f at line "),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_ignored() {
    let c = Config::parse("[kubelet]\ncolour = blue\n[new]\nx = 1\n", "f").unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn missing_default_file_means_defaults_but_missing_explicit_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    assert_eq!(Config::load(&root, None).unwrap(), Config::default());
    let err = Config::load(&root, Some(&dir.path().join("nope.conf"))).unwrap_err();
    assert!(err.to_string().contains("nope.conf"), "{err}");
}

#[test]
fn durations() {
    let cases = [
        ("90", Some(90_000)),
        ("90s", Some(90_000)),
        ("2m", Some(120_000)),
        ("250ms", Some(250)),
        ("1h", Some(3_600_000)),
        ("x", None),
        ("5 days", None),
        ("", None),
    ];
    for (s, want) in cases {
        assert_eq!(
            parse_duration(s).map(|d| d.as_millis() as u64),
            want,
            "case '{s}'"
        );
    }
}

#[test]
fn every_duration_key_is_bounded_and_the_error_names_the_range() {
    // (section, key, the range in the message)
    let keys = [
        ("services", "timeout", "from 1ms to 24h"),
        ("services", "settle", "from 1ms to 24h"),
        ("verify", "boot-wait", "from 0s to 24h"),
    ];
    let too_big = [
        "5000000000000000h",
        "18446744073709551615",
        "18446744073709551616",
        "18446744073709551615ms",
        "25h",
        "86401s",
        "1441m",
    ];
    for (section, key, range) in keys {
        for value in too_big {
            let text = format!("[{section}]\n{key} = {value}\n");
            let msg = Config::parse(&text, "'/etc/k8s-nokmem/k8s-nokmem.conf'")
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains("config '/etc/k8s-nokmem/k8s-nokmem.conf' line 2:")
                    && msg.contains(&format!("[{section}] {key} = '{value}'"))
                    && msg.contains(range),
                "case {key} = {value}: {msg}"
            );
        }
        for (value, want) in [("24h", MAX_DURATION), ("1440m", MAX_DURATION)] {
            let c = Config::parse(&format!("[{section}]\n{key} = {value}\n"), "f").unwrap();
            let got = match key {
                "timeout" => c.service_timeout,
                "settle" => c.service_settle,
                _ => c.verify.boot_wait,
            };
            assert_eq!(got, want, "case {key} = {value}");
        }
    }
    let c = Config::parse(
        "[services]\ntimeout = 1ms\nsettle = 1ms\n[verify]\nboot-wait = 0\n",
        "f",
    )
    .unwrap();
    assert_eq!(c.service_timeout, Duration::from_millis(1));
    assert_eq!(c.verify.boot_wait, Duration::ZERO);
}

#[test]
fn keys_table_is_the_defaults_and_the_conffile_documents_each() {
    let mut text = String::new();
    for (section, key, default) in KEYS {
        text.push_str(&format!("[{section}]\n{key} = {default}\n"));
    }
    let parsed = Config {
        sources: Sources::default(),
        ..Config::parse(&text, "keys").unwrap()
    };
    assert_eq!(parsed, Config::default());
    // the conffile shows every key, commented out with its default, in its section
    let conffile = include_str!("../../debian/k8s-nokmem.conf");
    for (section, key, default) in KEYS {
        let in_section = conffile
            .split(&format!("\n[{section}]\n"))
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .unwrap_or_default();
        assert!(
            in_section.contains(&format!("\n#{key} = {default}\n")),
            "the conffile lacks '#{key} = {default}' in [{section}]"
        );
    }
}

#[test]
fn empty_values_are_errors_and_none_is_no_unit() {
    let cases = [
        (
            "[runc]\nrestart =\n",
            "[runc] restart = ''",
            "write 'restart = none'",
        ),
        (
            "[services]\norder =\n",
            "[services] order = ''",
            "write 'order = none'",
        ),
        (
            "[services]\ntimeout =\n",
            "[services] timeout = ''",
            "default '90s'",
        ),
        (
            "[kubelet]\npath =\n",
            "[kubelet] path = ''",
            "default 'auto'",
        ),
        (
            "[runc]\nrestart = none docker.service\n",
            "restart = 'none docker.service'",
            "or 'none'",
        ),
    ];
    for (text, what, fix) in cases {
        let msg = Config::parse(text, "f").unwrap_err().to_string();
        assert!(
            msg.contains("line 2:") && msg.contains(what) && msg.contains(fix),
            "case {what}: {msg}"
        );
    }
    let c = Config::parse("[runc]\nrestart = none\n[services]\norder = none\n", "f").unwrap();
    assert!(c.target("runc").unwrap().restart.is_empty());
    assert!(c.service_order.is_empty());
    // no escapes: a systemd-escaped unit name stays as written
    let c = Config::parse("[kubelet]\nrestart = kube\\x2dlet.service\n", "f").unwrap();
    assert_eq!(
        c.target("kubelet").unwrap().restart,
        vec!["kube\\x2dlet.service"]
    );
}

#[test]
fn syntax_errors_name_file_line_and_fix() {
    let err = Config::parse("\u{feff}[services]\nsettle: 5s\n", "'/etc/k.conf'").unwrap_err();
    assert_eq!(
        err.to_string(),
        "syntax error in config '/etc/k.conf' at line 2: 'settle: 5s' has no '='; write 'settle = 5s'"
    );
}

/// A root with the conffile and drop-ins (name, text).
fn root_with(conffile: Option<&str>, dropins: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    std::fs::create_dir_all(root.join(DROPIN_DIR)).unwrap();
    if let Some(text) = conffile {
        std::fs::write(root.join(paths::CONFIG_FILE), text).unwrap();
    }
    for (name, text) in dropins {
        std::fs::write(root.join(DROPIN_DIR).join(name), text).unwrap();
    }
    dir
}

#[test]
fn dropins_apply_in_lexical_order_after_the_conffile_and_later_keys_win() {
    let dir = root_with(
        Some("[services]\napply = restart\ntimeout = 30s\n[kubelet]\nversion-skew = warn\n"),
        &[
            (
                "50-fleet.conf",
                "[services]\n# fleet\napply = reboot\ntimeout = 40s\n",
            ),
            ("10-site.conf", "[services]\ntimeout = 50s\nsettle = 5s\n"),
            ("90-node.conf", "\n[services]\nsettle = 7s\n"),
            ("99-off.conf.dpkg-old", "[services]\nsettle = x\n"),
            (".hidden.conf", "[services]\nsettle = x\n"),
            ("README", "not a drop-in\n"),
        ],
    );
    std::fs::create_dir(dir.path().join("etc/k8s-nokmem/conf.d/dir.conf")).unwrap();
    std::os::unix::fs::symlink(
        "/dev/null",
        dir.path().join("etc/k8s-nokmem/conf.d/00-masked.conf"),
    )
    .unwrap();
    let c = Config::load(&Root::new(dir.path()), None).unwrap();
    assert_eq!(c.apply, Apply::Reboot);
    assert_eq!(c.service_timeout, Duration::from_secs(40));
    assert_eq!(c.service_settle, Duration::from_secs(7));
    assert_eq!(c.version_skew, SkewPolicy::Warn);
    let files: Vec<String> = c
        .sources
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    assert_eq!(
        files,
        [
            "/etc/k8s-nokmem/k8s-nokmem.conf",
            "/etc/k8s-nokmem/conf.d/10-site.conf",
            "/etc/k8s-nokmem/conf.d/50-fleet.conf",
            "/etc/k8s-nokmem/conf.d/90-node.conf",
        ]
    );
    let from: BTreeMap<String, (String, String)> = c
        .effective()
        .into_iter()
        .map(|e| {
            (
                format!("{}.{}", e.section, e.key),
                (e.value.clone(), e.from()),
            )
        })
        .collect();
    let want = [
        (
            "services.apply",
            "reboot",
            "/etc/k8s-nokmem/conf.d/50-fleet.conf:3",
        ),
        (
            "services.timeout",
            "40s",
            "/etc/k8s-nokmem/conf.d/50-fleet.conf:4",
        ),
        (
            "services.settle",
            "7s",
            "/etc/k8s-nokmem/conf.d/90-node.conf:3",
        ),
        (
            "kubelet.version-skew",
            "warn",
            "/etc/k8s-nokmem/k8s-nokmem.conf:5",
        ),
        (
            "services.order",
            "kubelet.service docker.service",
            "default",
        ),
    ];
    for (key, value, origin) in want {
        assert_eq!(
            from[key],
            (value.to_string(), origin.to_string()),
            "case {key}"
        );
    }
    assert_eq!(from.len(), KEYS.len());
    let text = render(&c.effective(), &c.sources.files);
    assert!(
        text.lines()
            .any(|l| l.starts_with("[services] apply = reboot ")
                && l.ends_with("# /etc/k8s-nokmem/conf.d/50-fleet.conf:3")),
        "{text}"
    );
}

#[test]
fn each_error_names_its_own_file_and_line() {
    let conffile = "[services]\ntimeout = 30s\n";
    // (case, drop-ins, the file and line named, words of the message)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: [Case; 4] = [
        (
            "bad value in the second drop-in",
            vec![
                ("10-a.conf", "[services]\nsettle = 5s\n"),
                ("20-b.conf", "\n[services]\nsettle = 5 s ago\n"),
            ],
            "'/etc/k8s-nokmem/conf.d/20-b.conf' under root",
            "line 3: [services] settle = '5 s ago'",
        ),
        (
            "syntax error in a drop-in",
            vec![("10-a.conf", "[services]\napply: reboot\n")],
            "'/etc/k8s-nokmem/conf.d/10-a.conf' under root",
            "at line 2: 'apply: reboot' has no '='; write 'apply = reboot'",
        ),
        (
            "a key set again in another file is no duplicate, twice in one is",
            vec![("10-a.conf", "[services]\ntimeout = 1s\ntimeout = 2s\n")],
            "'/etc/k8s-nokmem/conf.d/10-a.conf' under root",
            "at line 3: [services] timeout is set twice, at lines 2 and 3",
        ),
        (
            "same path in two files: at the later",
            vec![
                ("10-a.conf", "[runc]\npath = /usr/bin/x\n"),
                ("20-b.conf", "[kubelet]\n\npath = /usr/bin/x\n"),
            ],
            "'/etc/k8s-nokmem/conf.d/20-b.conf' under root",
            "line 3: [kubelet] path = '/usr/bin/x': expected a path different from [runc] path",
        ),
    ];
    for (case, dropins, file, words) in cases {
        let dir = root_with(Some(conffile), &dropins);
        let msg = Config::load(&Root::new(dir.path()), None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(file) && msg.contains(words),
            "case '{case}': {msg}"
        );
    }
    // a bad conffile is named as such, even when a drop-in would override the key
    let dir = root_with(
        Some("[services]\ntimeout = never\n"),
        &[("10-a.conf", "[services]\ntimeout = 1s\n")],
    );
    let msg = Config::load(&Root::new(dir.path()), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("'/etc/k8s-nokmem/k8s-nokmem.conf' under root") && msg.contains("line 2:"),
        "{msg}"
    );
}

#[test]
fn explicit_config_is_read_alone_and_a_missing_conffile_still_reads_dropins() {
    let dir = root_with(None, &[("10-a.conf", "[services]\napply = reboot\n")]);
    let root = Root::new(dir.path());
    assert_eq!(Config::load(&root, None).unwrap().apply, Apply::Reboot);
    let explicit = dir.path().join("other.conf");
    std::fs::write(&explicit, "[services]\ntimeout = 3s\n").unwrap();
    let c = Config::load(&root, Some(&explicit)).unwrap();
    assert_eq!(c.apply, Apply::Auto);
    assert_eq!(c.service_timeout, Duration::from_secs(3));
    assert_eq!(c.sources.files, vec![explicit]);
}

#[test]
fn edit_distances() {
    for (a, b, d) in [
        ("settle", "setle", 1),
        ("boot-wait", "bootwait", 1),
        ("order", "oder", 1),
        ("", "ab", 2),
        ("abc", "abc", 0),
        ("apply", "reply", 2),
    ] {
        assert_eq!(edit_distance(a, b), d, "case {a} {b}");
    }
}

#[test]
fn the_shipped_examples_parse() {
    let uu = include_str!("../../contrib/unattended-upgrades/50-unattended-upgrades.conf");
    let c = Config::parse(
        uu,
        "contrib/unattended-upgrades/50-unattended-upgrades.conf",
    )
    .unwrap();
    assert_eq!(c.apply, Apply::Reboot);
}
