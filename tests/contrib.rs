//! contrib/ against the tools it configures, as their own sources define them: the kured
//! args against the flags each kured release defines (a table derived from kured's source at
//! the release tags), the kured alert filter against the alerts contrib/prometheus defines,
//! and the alert rules under the real `promtool` over the series `verify --textfile` writes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::node::NodeRoot;
use common::repo;

/// Where a kured release looks for the reboot sentinel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sentinel {
    /// On the host: `nsenter -m/proc/1/ns/mnt -- test -f SENTINEL` (cmd/kured/main.go:
    /// `sentinelExists` at 1.2.0; `buildHostCommand(1, sentinelCommand)` at 1.7.0).
    Host,
    /// Inside kured's container, through a hostPath mount (cmd/kured/main.go at 1.15.0: "Only
    /// wrap sentinel-command with nsenter, if a custom-command was configured, otherwise use
    /// the host-path mount"; pkg/checkers/checker.go `FileRebootChecker` at 1.23.0).
    Container,
}

/// One kured release, read from kubereboot/kured (formerly weaveworks/kured) at its tag.
struct Kured {
    tag: &'static str,
    sentinel: Sentinel,
    /// "expected kubernetes compatibility" of the release (Kubernetes minors, 1.x) in the
    /// table of kured's README.md at tag 1.7.0, which lists 1.0.0-1.7.0; None for later
    /// releases (their READMEs no longer carry the table).
    kubernetes: Option<(u32, u32)>,
    /// Every flag cmd/kured/main.go registers at the tag: `rootCmd.PersistentFlags().*Var*(…,
    /// "NAME", …)` through 1.14.x, pflag's `flag.*Var*(…, "NAME", …)` from 1.15.0.
    flags: &'static [&'static str],
}

const KURED: &[Kured] = &[
    Kured {
        tag: "1.2.0",
        sentinel: Sentinel::Host,
        kubernetes: Some((12, 14)),
        flags: &[
            "alert-filter-regexp",
            "blocking-pod-selector",
            "ds-name",
            "ds-namespace",
            "lock-annotation",
            "period",
            "prometheus-url",
            "reboot-sentinel",
            "slack-hook-url",
            "slack-username",
        ],
    },
    Kured {
        tag: "1.3.0",
        sentinel: Sentinel::Host,
        kubernetes: Some((15, 17)),
        flags: &[
            "alert-filter-regexp",
            "blocking-pod-selector",
            "ds-name",
            "ds-namespace",
            "end-time",
            "lock-annotation",
            "period",
            "prometheus-url",
            "reboot-days",
            "reboot-sentinel",
            "slack-channel",
            "slack-hook-url",
            "slack-username",
            "start-time",
            "time-zone",
        ],
    },
    Kured {
        tag: "1.4.4",
        sentinel: Sentinel::Host,
        kubernetes: Some((16, 18)),
        flags: &[
            "alert-filter-regexp",
            "annotation-ttl",
            "blocking-pod-selector",
            "ds-name",
            "ds-namespace",
            "end-time",
            "lock-annotation",
            "period",
            "prometheus-url",
            "reboot-days",
            "reboot-sentinel",
            "slack-channel",
            "slack-hook-url",
            "slack-username",
            "start-time",
            "time-zone",
        ],
    },
    Kured {
        tag: "1.5.1",
        sentinel: Sentinel::Host,
        kubernetes: Some((17, 19)),
        flags: &[
            "alert-filter-regexp",
            "blocking-pod-selector",
            "ds-name",
            "ds-namespace",
            "end-time",
            "lock-annotation",
            "lock-ttl",
            "period",
            "prometheus-url",
            "reboot-days",
            "reboot-sentinel",
            "slack-channel",
            "slack-hook-url",
            "slack-username",
            "start-time",
            "time-zone",
        ],
    },
    Kured {
        tag: "1.6.1",
        sentinel: Sentinel::Host,
        kubernetes: Some((18, 20)),
        flags: &[
            "alert-filter-regexp",
            "blocking-pod-selector",
            "ds-name",
            "ds-namespace",
            "end-time",
            "lock-annotation",
            "lock-ttl",
            "message-template-drain",
            "message-template-reboot",
            "period",
            "prometheus-url",
            "reboot-days",
            "reboot-sentinel",
            "slack-channel",
            "slack-hook-url",
            "slack-username",
            "start-time",
            "time-zone",
        ],
    },
    Kured {
        tag: "1.7.0",
        sentinel: Sentinel::Host,
        kubernetes: Some((19, 21)),
        flags: &[
            "alert-filter-regexp",
            "annotate-nodes",
            "blocking-pod-selector",
            "drain-grace-period",
            "drain-timeout",
            "ds-name",
            "ds-namespace",
            "end-time",
            "force-reboot",
            "lock-annotation",
            "lock-release-delay",
            "lock-ttl",
            "message-template-drain",
            "message-template-reboot",
            "notify-url",
            "period",
            "prefer-no-schedule-taint",
            "prometheus-url",
            "reboot-command",
            "reboot-days",
            "reboot-sentinel",
            "reboot-sentinel-command",
            "skip-wait-for-delete-timeout",
            "slack-channel",
            "slack-hook-url",
            "slack-username",
            "start-time",
            "time-zone",
        ],
    },
    Kured {
        tag: "1.15.0",
        sentinel: Sentinel::Container,
        kubernetes: None,
        flags: KURED_1_15_FLAGS,
    },
    Kured {
        tag: "1.23.0",
        sentinel: Sentinel::Container,
        kubernetes: None,
        // the same set as 1.15.0
        flags: KURED_1_15_FLAGS,
    },
];

const KURED_1_15_FLAGS: &[&str] = &[
    "alert-filter-match-only",
    "alert-filter-regexp",
    "alert-firing-only",
    "annotate-nodes",
    "blocking-pod-selector",
    "concurrency",
    "drain-delay",
    "drain-grace-period",
    "drain-pod-selector",
    "drain-timeout",
    "ds-name",
    "ds-namespace",
    "end-time",
    "force-reboot",
    "lock-annotation",
    "lock-release-delay",
    "lock-ttl",
    "log-format",
    "message-template-drain",
    "message-template-reboot",
    "message-template-uncordon",
    "metrics-host",
    "metrics-port",
    "node-id",
    "notify-url",
    "period",
    "post-reboot-node-labels",
    "pre-reboot-node-labels",
    "prefer-no-schedule-taint",
    "prometheus-url",
    "reboot-command",
    "reboot-days",
    "reboot-delay",
    "reboot-method",
    "reboot-sentinel",
    "reboot-sentinel-command",
    "reboot-signal",
    "skip-wait-for-delete-timeout",
    "slack-channel",
    "slack-hook-url",
    "slack-username",
    "start-time",
    "time-zone",
];

/// The Kubernetes minors of our range (1.14-1.20).
const KUBERNETES: std::ops::RangeInclusive<u32> = 14..=20;

fn kured(tag: &str) -> Option<&'static Kured> {
    KURED.iter().find(|k| k.tag == tag)
}

/// One file of contrib/kured as the test reads it.
struct KuredFile {
    name: String,
    text: String,
    /// `# kured-releases: A B`
    releases: Vec<String>,
    /// `# kubernetes: 1.14 1.15` (minors), empty for `current`
    kubernetes: Vec<u32>,
    current: bool,
    /// `--name[=value]` in the args, in order
    flags: Vec<(String, String)>,
}

impl KuredFile {
    fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn kured_files() -> Vec<KuredFile> {
    let dir = repo().join("contrib/kured");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no kured contrib in {}", dir.display());
    names
        .into_iter()
        .map(|name| {
            let text = fs::read_to_string(dir.join(&name)).unwrap();
            let header = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("# {key}:")))
                    .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                    .unwrap_or_else(|| {
                        panic!("contrib/kured/{name} has no `# {key}:` line naming what it is for")
                    })
            };
            let releases = header("kured-releases");
            let k8s = header("kubernetes");
            let current = k8s == ["current"];
            let kubernetes = if current {
                Vec::new()
            } else {
                k8s.iter()
                    .map(|v| {
                        v.strip_prefix("1.")
                            .and_then(|m| m.parse().ok())
                            .unwrap_or_else(|| panic!("contrib/kured/{name}: bad minor '{v}'"))
                    })
                    .collect()
            };
            let flags = text
                .lines()
                .filter_map(|l| l.trim_start().strip_prefix("- --"))
                .map(|arg| {
                    let arg = arg.split_whitespace().next().unwrap_or_default();
                    match arg.split_once('=') {
                        Some((n, v)) => (n.to_string(), v.to_string()),
                        None => (arg.to_string(), String::new()),
                    }
                })
                .collect();
            KuredFile {
                name,
                text,
                releases,
                kubernetes,
                current,
                flags,
            }
        })
        .collect()
}

#[test]
fn kured_contrib_uses_only_flags_its_kured_releases_define() {
    let mut errors = Vec::new();
    for file in kured_files() {
        assert!(
            !file.flags.is_empty(),
            "contrib/kured/{}: no args",
            file.name
        );
        for tag in &file.releases {
            let Some(k) = kured(tag) else {
                errors.push(format!(
                    "contrib/kured/{}: kured {tag} is not in the flag table of tests/contrib.rs",
                    file.name
                ));
                continue;
            };
            for (flag, _) in &file.flags {
                if !k.flags.contains(&flag.as_str()) {
                    errors.push(format!(
                        "contrib/kured/{} uses --{flag}, which kured {tag} does not define \
                         (cmd/kured/main.go at tag {tag}): that kured exits with `unknown flag`",
                        file.name
                    ));
                }
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn kured_contrib_covers_kubernetes_1_14_to_1_20_and_the_current_kured() {
    let files = kured_files();
    let mut by_minor: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for file in &files {
        let range = |tag: &str| {
            let k = kured(tag).unwrap_or_else(|| panic!("kured {tag} not in the table"));
            k.kubernetes.unwrap_or_else(|| {
                panic!(
                    "contrib/kured/{}: kured {tag} documents no Kubernetes range",
                    file.name
                )
            })
        };
        for &minor in &file.kubernetes {
            by_minor.entry(minor).or_default().push(&file.name);
            assert!(
                file.releases.iter().any(|t| {
                    let (lo, hi) = range(t);
                    (lo..=hi).contains(&minor)
                }),
                "contrib/kured/{} is for Kubernetes 1.{minor}, but none of kured {:?} is \
                 (the compatibility table of kured's README.md at tag 1.7.0)",
                file.name,
                file.releases
            );
        }
        for tag in file.releases.iter().filter(|_| !file.current) {
            let (lo, hi) = range(tag);
            assert!(
                file.kubernetes.iter().any(|m| (lo..=hi).contains(m)),
                "contrib/kured/{} names kured {tag} (Kubernetes 1.{lo}-1.{hi}, README.md at 1.7.0) \
                 for none of its Kubernetes minors {:?}",
                file.name,
                file.kubernetes
            );
        }
    }
    for minor in KUBERNETES {
        let files = by_minor.get(&minor).cloned().unwrap_or_default();
        assert_eq!(
            files.len(),
            1,
            "Kubernetes 1.{minor} needs exactly one kured contrib file, has {files:?}"
        );
    }
    let newest = KURED.last().unwrap().tag;
    assert!(
        files
            .iter()
            .any(|f| f.current && f.releases.iter().any(|r| r == newest)),
        "no contrib/kured file for the current kured ({newest})"
    );
}

#[test]
fn kured_contrib_puts_the_sentinel_where_each_kured_generation_looks() {
    for file in kured_files() {
        let generations: BTreeSet<_> = file
            .releases
            .iter()
            .map(|t| format!("{:?}", kured(t).expect("in the table").sentinel))
            .collect();
        assert_eq!(
            generations.len(),
            1,
            "contrib/kured/{} mixes kured releases that look for the sentinel in different places",
            file.name
        );
        let sentinel = kured(&file.releases[0]).unwrap().sentinel;
        let value = file.flag("reboot-sentinel").unwrap_or_else(|| {
            panic!(
                "contrib/kured/{}: no --reboot-sentinel (k8s-nokmem writes /run/reboot-required)",
                file.name
            )
        });
        let yaml_value = |key: &str| {
            file.text
                .lines()
                .filter_map(|l| l.trim_start().strip_prefix(&format!("{key}:")))
                .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        match sentinel {
            Sentinel::Host => {
                assert!(
                    ["/run/reboot-required", "/var/run/reboot-required"].contains(&value),
                    "contrib/kured/{}: kured {} tests the sentinel on the host, so it must be \
                     the host's /run/reboot-required, not '{value}'",
                    file.name,
                    file.releases[0]
                );
            }
            Sentinel::Container => {
                let mounts = yaml_value("mountPath");
                let host_paths = yaml_value("path");
                let (dir, base) = value.rsplit_once('/').unwrap();
                assert_eq!(
                    base, "reboot-required",
                    "contrib/kured/{}: {value}",
                    file.name
                );
                assert!(
                    mounts.iter().any(|m| m == dir),
                    "contrib/kured/{}: kured {} reads {value} inside its container, but no \
                     volumeMount puts anything at {dir} (mounts: {mounts:?})",
                    file.name,
                    file.releases[0]
                );
                assert!(
                    host_paths.iter().any(|p| p == "/run" || p == "/var/run"),
                    "contrib/kured/{}: the mount at {dir} must be the host's /run (hostPath), \
                     where k8s-nokmem writes reboot-required; hostPath paths: {host_paths:?}",
                    file.name
                );
            }
        }
    }
}

/// The alert names contrib/prometheus/k8s-nokmem.rules.yml defines.
fn defined_alerts() -> BTreeSet<String> {
    let path = repo().join("contrib/prometheus/k8s-nokmem.rules.yml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn kured_alert_filter_names_exactly_the_alerts_contrib_prometheus_defines() {
    let defined = defined_alerts();
    assert!(!defined.is_empty());
    for file in kured_files() {
        let Some(filter) = file.flag("alert-filter-regexp") else {
            continue;
        };
        // kured matches the regexp unanchored (Go's MatchString): it must be ^(A|B)$
        let names = filter
            .strip_prefix("^(")
            .and_then(|f| f.strip_suffix(")$"))
            .unwrap_or_else(|| {
                panic!(
                    "contrib/kured/{}: --alert-filter-regexp={filter} is not ^(NAME|...)$",
                    file.name
                )
            });
        let named: BTreeSet<String> = names.split('|').map(str::to_string).collect();
        assert_eq!(
            named, defined,
            "contrib/kured/{}: the alert filter must name exactly the alerts of \
             contrib/prometheus/k8s-nokmem.rules.yml (all of them clear with the reboot kured \
             would otherwise hold back)",
            file.name
        );
    }
}

fn promtool() -> Option<&'static str> {
    if Path::new("/usr/bin/promtool").exists() {
        return Some("/usr/bin/promtool");
    }
    common::cannot_run("promtool is missing: run scripts/install-deps.sh (Debian's prometheus)");
    None
}

#[test]
fn prometheus_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    for args in [
        vec!["check", "rules", "contrib/prometheus/k8s-nokmem.rules.yml"],
        vec![
            "test",
            "rules",
            "tests/fixtures/prometheus/k8s-nokmem.test.yml",
        ],
    ] {
        let out = common::run(Command::new(promtool).args(&args).current_dir(repo()));
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The textfile `verify --textfile` writes on an installed node (both originals from
/// packages, so every gauge is there) over the recorded 4.4 kmem-active node.
fn real_textfile() -> String {
    let n = NodeRoot::new();
    n.dpkg_package(
        "kubelet",
        "1.20.2-00",
        &["/usr", "/usr/bin", "/usr/bin/kubelet"],
    );
    n.dpkg_package(
        "runc",
        "1.0.0~rc92-0ubuntu1~16.04.1",
        &["/usr", "/usr/sbin", "/usr/sbin/runc"],
    );
    n.ok(&["install"]);
    let node = repo().join("tests/fixtures/cgroup/4.4-kmem");
    let dir = tempfile::tempdir().unwrap();
    let out = n.run(&[
        "verify",
        "--proc-root",
        node.join("proc").to_str().unwrap(),
        "--cgroup-root",
        node.join("sys/fs/cgroup").to_str().unwrap(),
        "--textfile",
        dir.path().to_str().unwrap(),
    ]);
    fs::read_to_string(dir.path().join("k8s_nokmem.prom")).unwrap_or_else(|e| {
        panic!(
            "no textfile ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn prometheus_rules_and_their_tests_use_the_series_verify_writes() {
    let textfile = real_textfile();
    // `name{labels}` of every sample the real textfile holds
    let samples: BTreeSet<&str> = textfile
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s))
        .collect();
    let names: BTreeSet<&str> = samples
        .iter()
        .map(|s| s.split('{').next().unwrap())
        .collect();
    let rules = fs::read_to_string(repo().join("contrib/prometheus/k8s-nokmem.rules.yml")).unwrap();
    let mut used = BTreeSet::new();
    for expr in rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr:"))
    {
        for (i, _) in expr.match_indices("k8s_nokmem_") {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    assert!(!used.is_empty(), "no k8s_nokmem_ metric in the rules");
    for name in &used {
        assert!(
            names.contains(name.as_str()),
            "the rules use {name}, which `verify --textfile` does not write:\n{textfile}"
        );
    }
    // every input series of the promtool tests, less node_exporter's instance/job labels
    let tests =
        fs::read_to_string(repo().join("tests/fixtures/prometheus/k8s-nokmem.test.yml")).unwrap();
    for series in tests
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- series: '"))
    {
        let series = series.trim_end_matches('\'');
        let (name, labels) = series.split_once('{').unwrap();
        let labels: Vec<&str> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.starts_with("instance=") && !l.starts_with("job="))
            .collect();
        let want = if labels.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{}}}", labels.join(","))
        };
        assert!(
            samples.contains(want.as_str()),
            "the promtool tests feed {want}, which `verify --textfile` does not write:\n{textfile}"
        );
    }
}

#[test]
fn every_contrib_file_ships_in_the_package_examples() {
    let cargo = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let mut missing = Vec::new();
    let mut dirs = vec![repo().join("contrib")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(repo()).unwrap().display().to_string();
            let dest = rel.replacen("contrib/", "usr/share/doc/k8s-nokmem/examples/", 1);
            if !cargo.contains(&format!("[\"{rel}\", \"{dest}\", \"644\"]")) {
                missing.push(rel);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "contrib files missing from [package.metadata.deb] assets in Cargo.toml: {missing:?}"
    );
}

/// node-problem-detector's custom plugin monitor configuration as its source defines it,
/// read from kubernetes/node-problem-detector at v0.6.3, v0.8.0 (the releases of the
/// Kubernetes 1.14-1.20 years) and v1.36.0: the JSON fields all three define.
/// `CustomPluginConfig` and `pluginGlobalConfig` (pkg/custompluginmonitor/types/config.go);
/// `metricsReporting` (v0.8.0) and `skip_initial_status` (v1.x) are left out on purpose.
const NPD_CONFIG: &[&str] = &["plugin", "pluginConfig", "source", "conditions", "rules"];
const NPD_PLUGIN_CONFIG: &[&str] = &[
    "invoke_interval",
    "timeout",
    "max_output_length",
    "concurrency",
    "enable_message_change_based_condition_update",
];
/// `CustomRule` (pkg/custompluginmonitor/types/types.go); `type` is `temporary` or
/// `permanent` (pkg/types/types.go `Temp`, `Perm`).
const NPD_RULE: &[&str] = &["type", "condition", "reason", "path", "args", "timeout"];
/// `Condition` (pkg/types/types.go), the default state of a permanent condition.
const NPD_CONDITION: &[&str] = &["type", "status", "transition", "reason", "message"];
/// `defaultMaxOutputLength` (config.go, every tag above): NPD cuts a plugin's trimmed
/// stdout to this many bytes (plugin.go: `output = output[:MaxOutputLength]`).
const NPD_DEFAULT_MAX_OUTPUT: usize = 80;
/// `maxCustomPluginBufferBytes` (plugin.go at v1.36.0): NPD reads no more of stdout.
const NPD_STDOUT_BUFFER: usize = 4096;

/// A Go `time.ParseDuration` string of the forms used here ("30s", "10m", "1h30m").
fn go_duration(s: &str) -> Option<u64> {
    let mut total = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
    }
    num.is_empty().then_some(total)
}

fn npd_config() -> serde_json::Value {
    let path = repo().join("contrib/node-problem-detector/k8s-nokmem.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn keys_known(what: &str, v: &serde_json::Value, known: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {v}"));
    for key in obj.keys() {
        assert!(
            known.contains(&key.as_str()),
            "{what}: node-problem-detector defines no field '{key}' (known: {known:?})"
        );
    }
}

#[test]
fn npd_config_follows_node_problem_detectors_custom_plugin_schema() {
    let c = npd_config();
    keys_known("k8s-nokmem.json", &c, NPD_CONFIG);
    assert_eq!(c["plugin"], "custom", "the only plugin NPD supports");
    assert!(c["source"].as_str().is_some_and(|s| !s.is_empty()));
    let pc = &c["pluginConfig"];
    keys_known("pluginConfig", pc, NPD_PLUGIN_CONFIG);
    let global = go_duration(pc["timeout"].as_str().unwrap()).expect("timeout: a Go duration");
    let interval = go_duration(pc["invoke_interval"].as_str().unwrap())
        .expect("invoke_interval: a Go duration");
    assert!(global < interval, "a run must end before the next starts");
    let max = pc["max_output_length"].as_u64().expect("max_output_length") as usize;
    assert!(
        max > NPD_DEFAULT_MAX_OUTPUT && max <= NPD_STDOUT_BUFFER,
        "max_output_length {max}: more than NPD's default {NPD_DEFAULT_MAX_OUTPUT}, at most \
         the {NPD_STDOUT_BUFFER} bytes NPD reads"
    );
    let conditions = c["conditions"].as_array().expect("conditions");
    let mut types = BTreeSet::new();
    for cond in conditions {
        keys_known("conditions[]", cond, NPD_CONDITION);
        for key in ["type", "reason", "message"] {
            assert!(
                cond[key].as_str().is_some_and(|s| !s.is_empty()),
                "condition without {key}: {cond}"
            );
        }
        types.insert(cond["type"].as_str().unwrap().to_string());
    }
    let rules = c["rules"].as_array().expect("rules");
    let mut permanent = 0;
    for rule in rules {
        keys_known("rules[]", rule, NPD_RULE);
        match rule["type"].as_str() {
            Some("permanent") => {
                permanent += 1;
                let cond = rule["condition"].as_str().unwrap_or_default();
                assert!(
                    types.contains(cond),
                    "the permanent rule's condition '{cond}' has no default in conditions"
                );
            }
            Some("temporary") => {}
            other => panic!("rule type {other:?}: temporary or permanent"),
        }
        assert!(rule["reason"].as_str().is_some_and(|s| !s.is_empty()));
        // NPD's Validate: the rule path exists (inside NPD's container) and the rule's
        // timeout is not above the global one
        let path = rule["path"].as_str().unwrap();
        assert_eq!(
            path, "/usr/bin/nsenter",
            "the path must exist in NPD's image (util-linux, its Dockerfile); the helper is \
             reached in the host's mount namespace"
        );
        let timeout = go_duration(rule["timeout"].as_str().unwrap()).unwrap();
        assert!(timeout <= global, "rule timeout above the global timeout");
        let args: Vec<&str> = rule["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.ends_with(&["/usr/sbin/k8s-nokmem", "verify", "--npd"]),
            "{args:?}"
        );
    }
    assert_eq!(permanent, 1, "one permanent condition");
}

/// `verify --json` and `verify --npd` of a recorded node on `root`.
fn npd_and_json(root: &Path, fixture: &str, extra: &[&str]) -> (String, serde_json::Value) {
    let node = repo().join("tests/fixtures/cgroup").join(fixture);
    let run = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_k8s-nokmem"))
            .args(["verify", "--root"])
            .arg(root)
            .arg("--proc-root")
            .arg(node.join("proc"))
            .arg("--cgroup-root")
            .arg(node.join("sys/fs/cgroup"))
            .args(extra)
            .arg(format)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json = run("--json");
    (
        run("--npd").trim_end().to_string(),
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{fixture}: {e}: {json}")),
    )
}

#[test]
fn npd_lines_fit_the_config_and_their_first_80_bytes_say_what_is_wrong() {
    let max = npd_config()["pluginConfig"]["max_output_length"]
        .as_u64()
        .unwrap() as usize;
    let bare = tempfile::tempdir().unwrap();
    let installed = NodeRoot::new();
    installed.ok(&["install"]);
    let mut lines = Vec::new();
    let fixtures = fs::read_dir(repo().join("tests/fixtures/cgroup")).unwrap();
    let mut names: Vec<String> = fixtures
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            repo()
                .join("tests/fixtures/cgroup")
                .join(n)
                .join("proc")
                .is_dir()
        })
        .collect();
    names.sort();
    for name in &names {
        lines.push((
            format!("{name} (not installed)"),
            npd_and_json(bare.path(), name, &[]),
        ));
        lines.push((
            format!("{name} (installed)"),
            npd_and_json(&installed.path, name, &[]),
        ));
    }
    let mut actions = BTreeSet::new();
    for (case, (line, json)) in &lines {
        assert!(
            line.len() <= max,
            "{case}: {} bytes, above max_output_length {max}: {line}",
            line.len()
        );
        let status = json["status"].as_str().unwrap();
        let action = json["action"].as_str().unwrap();
        actions.insert(action.to_string());
        let first80 = &line[..line.len().min(NPD_DEFAULT_MAX_OUTPUT)];
        if action != "none" {
            let reason = json["reboot_required"]["reason"].as_str().unwrap();
            let head = format!("{status}: {action}: {reason}");
            assert!(
                first80 == &head[..head.len().min(NPD_DEFAULT_MAX_OUTPUT)],
                "{case}: the first {NPD_DEFAULT_MAX_OUTPUT} bytes NPD keeps by default must be \
                 the status, what puts the fix in effect and why: '{first80}' (want '{head}')"
            );
        } else {
            assert!(
                first80.starts_with(&format!("{status}: ")),
                "{case}: {line}"
            );
        }
    }
    assert!(
        actions.len() >= 3,
        "the fixtures cover too few actions: {actions:?}"
    );
}

/// The first fenced block of README.md whose first line starts with `start`.
fn readme_block(start: &str) -> String {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("```") {
            continue;
        }
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        if block.first().is_some_and(|l| l.starts_with(start)) {
            return block.join("\n") + "\n";
        }
    }
    panic!("README.md has no fenced block starting with '{start}'");
}

/// A minimal .deb of `package` `version` in `dir` (reprepro wants Section and Priority).
fn tiny_deb(dir: &Path, package: &str, version: &str) -> PathBuf {
    let tree = dir.join(format!("tree-{package}-{version}"));
    fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {package}\nVersion: {version}\nSection: admin\nPriority: optional\nArchitecture: amd64\n\
             Maintainer: t <t@example.org>\nDescription: test build\n"
        ),
    )
    .unwrap();
    let deb = dir.join(format!("{package}_{version}_amd64.deb"));
    let out = common::run(Command::new("dpkg-deb").arg("--build").arg(&tree).arg(&deb));
    assert!(out.status.success(), "{out:?}");
    deb
}

/// The repository configuration README's recipe uses and tests/e2e/repo.sh builds from.
const REPREPRO_CONF: &str = "contrib/reprepro/distributions";

#[test]
fn readme_shows_the_shipped_reprepro_configuration() {
    let shipped = fs::read_to_string(repo().join(REPREPRO_CONF))
        .unwrap_or_else(|e| panic!("{REPREPRO_CONF}: {e} (README's repository recipe)"));
    assert_eq!(
        readme_block("Origin: "),
        shipped,
        "README's conf/distributions block must be {REPREPRO_CONF} as shipped"
    );
}

/// README's "An apt repository for the fleet": conf/distributions from
/// contrib/reprepro/distributions, one build per kubelet minor's component, a newer build
/// replacing one, README's way back (`remove`, then `includedeb` the previous build). A
/// Kubernetes 1.20 node's real apt (private directories, a `file:` line as README's, the
/// Release signature checked against the key) then sees only component kubelet-1.20: one
/// k8s-nokmem version (the previous build, neither the newer one nor kubelet-1.19's) and no
/// package that only kubelet-1.19 has; and unattended-upgrades' own matcher, over apt's
/// reading of the Release file, accepts that origin with the Origins-Pattern of
/// contrib/unattended-upgrades/51k8s-nokmem.
#[test]
fn readme_reprepro_repository_matches_the_unattended_upgrades_origins_pattern() {
    for (tool, package) in [
        ("/usr/bin/reprepro", "reprepro"),
        ("/usr/bin/unattended-upgrade", "unattended-upgrades"),
        ("/usr/bin/gpg", "gnupg"),
    ] {
        if !Path::new(tool).exists() {
            common::cannot_run(&format!(
                "{tool} is missing: run scripts/install-deps.sh (Debian's {package})"
            ));
            return;
        }
    }
    let conf = fs::read_to_string(repo().join(REPREPRO_CONF))
        .unwrap_or_else(|e| panic!("{REPREPRO_CONF}: {e} (README's repository recipe)"));
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let gnupg = t.join("gnupg");
    fs::create_dir_all(&gnupg).unwrap();
    fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // the gpg-agent that signing starts ends with the test
    struct Agent<'a>(&'a Path);
    impl Drop for Agent<'_> {
        fn drop(&mut self) {
            let _ = Command::new("gpgconf")
                .args(["--kill", "gpg-agent"])
                .env("GNUPGHOME", self.0)
                .output();
        }
    }
    let _agent = Agent(&gnupg);
    let ok = |cmd: &mut Command| {
        let out = common::run(cmd.env("GNUPGHOME", &gnupg));
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(Command::new("gpg").args([
        "--batch",
        "--quiet",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--quick-generate-key",
        "k8s-nokmem test archive <test@k8s-nokmem.invalid>",
        "ed25519",
        "sign",
        "never",
    ]));
    let keyring = t.join("k8s-nokmem-archive-keyring.gpg");
    ok(Command::new("gpg")
        .args(["--batch", "--quiet", "--output"])
        .arg(&keyring)
        .arg("--export"));
    // the recipe, offline in a private base directory
    let base = t.join("srv");
    fs::create_dir_all(base.join("conf")).unwrap();
    fs::write(base.join("conf/distributions"), &conf).unwrap();
    let reprepro = |args: &[&str], deb: Option<&Path>| {
        let mut cmd = Command::new("reprepro");
        cmd.arg("-b").arg(&base).args(args);
        for var in ["REPREPRO_BASE_DIR", "REPREPRO_CONFIG_DIR"] {
            cmd.env_remove(var);
        }
        if let Some(deb) = deb {
            cmd.arg(deb);
        }
        ok(&mut cmd)
    };
    let include = |component: &str, deb: &Path| {
        reprepro(&["-C", component, "includedeb", "stable"], Some(deb));
    };
    let previous = tiny_deb(t, "k8s-nokmem", "1.20.2+nokmem0.1.0-1");
    include("kubelet-1.20", &previous);
    include(
        "kubelet-1.20",
        &tiny_deb(t, "k8s-nokmem", "1.20.2+nokmem0.2.0-1"),
    );
    // back to the previous build: README's remove, then includedeb
    reprepro(
        &["-C", "kubelet-1.20", "remove", "stable", "k8s-nokmem"],
        None,
    );
    include("kubelet-1.20", &previous);
    // another minor: its own k8s-nokmem build and a package only it has
    include(
        "kubelet-1.19",
        &tiny_deb(t, "k8s-nokmem", "1.19.16+nokmem0.2.0-1"),
    );
    include("kubelet-1.19", &tiny_deb(t, "kubelet", "1.19.16-00"));

    // a Kubernetes 1.20 node's apt, in private directories
    let etc = t.join("etc/apt");
    for d in [
        "apt.conf.d",
        "preferences.d",
        "sources.list.d",
        "trusted.gpg.d",
    ] {
        fs::create_dir_all(etc.join(d)).unwrap();
    }
    for d in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(t.join("var").join(d)).unwrap();
    }
    fs::write(t.join("status"), "").unwrap();
    fs::write(
        etc.join("sources.list"),
        format!(
            "deb [signed-by={}] file:{} stable kubelet-1.20\n",
            keyring.display(),
            base.display()
        ),
    )
    .unwrap();
    let apt_opts = [
        format!("Dir::Etc={}", etc.display()),
        format!("Dir::State={}", t.join("var").display()),
        format!("Dir::State::Lists={}", t.join("var/lists").display()),
        format!("Dir::Cache={}", t.join("var/cache").display()),
        format!("Dir::State::status={}", t.join("status").display()),
        "APT::Architecture=amd64".to_string(),
        "APT::Architectures=amd64".to_string(),
    ];
    let mut update = Command::new("apt-get");
    for o in &apt_opts {
        update.arg("-o").arg(o);
    }
    ok(update.args(["-q", "update"]));
    // unattended-upgrades' own matcher over apt's view of the node's packages
    let pattern = fs::read_to_string(repo().join("contrib/unattended-upgrades/51k8s-nokmem"))
        .unwrap()
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix('"')?.strip_suffix("\";").map(str::to_string)
        })
        .expect("an Origins-Pattern string in contrib/unattended-upgrades/51k8s-nokmem");
    let script = r#"
import sys, importlib.machinery, importlib.util
import apt, apt_pkg
loader = importlib.machinery.SourceFileLoader("uu", "/usr/bin/unattended-upgrade")
spec = importlib.util.spec_from_loader("uu", loader)
uu = importlib.util.module_from_spec(spec)
loader.exec_module(uu)
apt_pkg.init_config()
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    apt_pkg.config.set(k, v)
apt_pkg.init_system()
cache = apt.Cache()
print("packages:", " ".join(sorted(p.name for p in cache)))
pkg = cache["k8s-nokmem"]
print("versions:", " ".join(v.version for v in pkg.versions))
cand = pkg.candidate
for o in cand.origins:
    print("candidate:", cand.version, o.origin, o.archive, o.label, o.component,
          uu.match_whitelist_string(sys.argv[1], o))
"#;
    // the interpreter unattended-upgrade runs with (its #! line), with python3-apt
    let out = ok(Command::new("/usr/bin/python3")
        .args(["-c", script, &pattern])
        .args(&apt_opts));
    assert_eq!(
        out.trim(),
        "packages: k8s-nokmem\n\
         versions: 1.20.2+nokmem0.1.0-1\n\
         candidate: 1.20.2+nokmem0.1.0-1 example-k8s stable k8s-nokmem kubelet-1.20 True",
        "what a node pointed at `stable kubelet-1.20` sees (only that component; the build \
         README's way back put there), its origin, and whether `{pattern}` matches it"
    );
}
