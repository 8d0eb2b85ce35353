//! Tests of the install and remove transactions against a fake systemd: the service
//! order, restarts, rollbacks and policy-rc.d.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::plan::{start_order, units_for};
use super::preflight::{minor_of, upstream_tag};
use super::*;
use crate::config::Config;
use crate::journal;
use crate::paths::{self, Root};
use crate::systemd::fake::{FakeSystemd, Fault, Op};
use crate::targets::State;

const ORIG_KUBELET: &[u8] = b"original kubelet";
const ORIG_RUNC: &[u8] = b"original runc";

/// A node root with originals, dpkg's admin dir and a payload whose MANIFEST matches.
struct TestNode {
    dir: tempfile::TempDir,
    root: Root,
}

impl TestNode {
    fn new() -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let node = TestNode { dir, root };
        node.write("var/lib/dpkg/status", b"");
        node.write("var/lib/dpkg/diversions", b"");
        node.write("usr/bin/kubelet", ORIG_KUBELET);
        node.write("usr/sbin/runc", ORIG_RUNC);
        node.payload(b"nokmem runc", b"nokmem kubelet");
        node
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.dir.path().join(rel)).unwrap()
    }

    fn payload(&self, runc: &[u8], kubelet: &[u8]) {
        self.write("usr/lib/k8s-nokmem/runc", runc);
        self.write("usr/lib/k8s-nokmem/kubelet", kubelet);
        let sha = |rel: &str| paths::sha256_file(&self.dir.path().join(rel)).unwrap();
        let manifest = format!(
            "[payload]\narch = amd64\n[runc]\nfile = runc\nversion = 1.1.5\nsize = {}\nsha256 = {}\n\
             [kubelet]\nfile = kubelet\nversion = 1.20.2\nsize = {}\nsha256 = {}\n",
            runc.len(),
            sha("usr/lib/k8s-nokmem/runc"),
            kubelet.len(),
            sha("usr/lib/k8s-nokmem/kubelet")
        );
        self.write("usr/lib/k8s-nokmem/MANIFEST", manifest.as_bytes());
    }

    fn install(&self, sd: &FakeSystemd) -> anyhow::Result<()> {
        let session = Session::open(&self.root, "install")?;
        let config = Config::load(&self.root, None)?;
        let applied = effect::Applied::of(config.apply);
        install(&self.root, &session, &config, &applied, Some(sd))
    }

    /// Remove; the running units left on k8s-nokmem's binaries.
    fn remove(&self, sd: &FakeSystemd) -> anyhow::Result<Vec<String>> {
        let session = Session::open(&self.root, "remove")?;
        let config = Config::load(&self.root, None)?;
        let applied = effect::Applied::of(config.apply);
        remove(&self.root, &session, &config, &applied, Some(sd))
    }
}

const UNITS: [&str; 2] = ["kubelet.service", "docker.service"];

#[test]
fn services_stop_in_order_start_in_reverse_and_a_rerun_restarts_nothing() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS);
    node.install(&sd).unwrap();
    assert_eq!(
        sd.call_lines(),
        vec![
            "stop kubelet.service",
            "stop docker.service",
            "start docker.service",
            "start kubelet.service"
        ]
    );
    assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
    let after = sd.unit_state("kubelet.service");
    sd.clear_calls();
    node.install(&sd).unwrap();
    assert!(sd.calls().is_empty(), "{:?}", sd.call_lines());
    assert_eq!(sd.unit_state("kubelet.service"), after, "not restarted");
}

#[test]
fn apply_reboot_swaps_with_no_service_stopped_or_started() {
    let node = TestNode::new();
    node.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        b"[services]\napply = reboot\n",
    );
    let sd = FakeSystemd::with_active(&UNITS);
    let before = sd.unit_state("kubelet.service");
    node.install(&sd).unwrap();
    assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
    assert_eq!(node.read("usr/sbin/runc"), b"nokmem runc");
    let stops_or_starts: Vec<String> = sd
        .call_lines()
        .into_iter()
        .filter(|l| l.starts_with("stop ") || l.starts_with("start "))
        .collect();
    assert!(stops_or_starts.is_empty(), "{stops_or_starts:?}");
    assert_eq!(sd.unit_state("kubelet.service"), before, "not restarted");
    // an upgrade of the payload: still nothing restarted
    node.payload(b"nokmem runc 2", b"nokmem kubelet 2");
    node.install(&sd).unwrap();
    assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet 2");
    assert!(
        !sd.call_lines()
            .iter()
            .any(|l| l.starts_with("stop ") || l.starts_with("start ")),
        "{:?}",
        sd.call_lines()
    );
}

/// `[services] apply = reboot` governs remove as it does install: the originals go back
/// underneath the running services (nothing stopped or started), byte for byte, and on the
/// node the reboot that starts them is flagged, once. In an image nothing is flagged.
#[test]
fn apply_reboot_removes_with_no_service_stopped_and_flags_the_reboot() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS);
    node.install(&sd).unwrap();
    node.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        b"[services]\napply = reboot\n",
    );
    sd.clear_calls();
    let before = sd.unit_state("docker.service");
    let left = node.remove(&sd).unwrap();
    let stops_or_starts: Vec<String> = sd
        .call_lines()
        .into_iter()
        .filter(|l| l.starts_with("stop ") || l.starts_with("start "))
        .collect();
    assert!(stops_or_starts.is_empty(), "{stops_or_starts:?}");
    assert_eq!(sd.unit_state("docker.service"), before, "not restarted");
    assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
    assert_eq!(node.read("usr/sbin/runc"), ORIG_RUNC);
    assert!(!node.dir.path().join("usr/bin/kubelet.distrib").exists());
    assert_eq!(
        fs::read_to_string(node.dir.path().join("var/lib/dpkg/diversions")).unwrap(),
        ""
    );
    assert_eq!(left, vec!["kubelet.service", "docker.service"]);

    let config = Config::load(&node.root, None).unwrap();
    let applied = effect::Applied::of(config.apply);
    let image = effect::Judged::Image(crate::policy::SkipReason::SystemdNotRunning);
    effect::after_remove(&node.root, &applied, &left, &image);
    assert!(!crate::reboot::read(&node.root).required, "image: no flag");
    for _ in 0..2 {
        effect::after_remove(&node.root, &applied, &left, &effect::Judged::Here);
    }
    let flag = crate::reboot::read(&node.root);
    assert!(flag.required && flag.by_us, "{flag:?}");
    assert_eq!(flag.packages, vec!["k8s-nokmem"], "listed once");

    // restart (the default) restarts and flags nothing
    let node = TestNode::new();
    node.install(&sd).unwrap();
    sd.clear_calls();
    let left = node.remove(&sd).unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(sd.call_lines().len(), 4, "{:?}", sd.call_lines());
    let applied = effect::Applied::of(Config::load(&node.root, None).unwrap().apply);
    effect::after_remove(&node.root, &applied, &left, &effect::Judged::Here);
    assert!(!crate::reboot::read(&node.root).required);
}

#[test]
fn an_upgrade_restarts_only_the_services_of_changed_binaries() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS);
    node.install(&sd).unwrap();
    sd.clear_calls();
    node.payload(b"nokmem runc", b"nokmem kubelet 2");
    node.install(&sd).unwrap();
    assert_eq!(
        sd.call_lines(),
        vec!["stop kubelet.service", "start kubelet.service"]
    );
    sd.clear_calls();
    node.payload(b"nokmem runc 2", b"nokmem kubelet 2");
    node.install(&sd).unwrap();
    assert_eq!(
        sd.call_lines(),
        vec!["stop docker.service", "start docker.service"]
    );
}

#[test]
fn a_failed_start_rolls_back_and_starts_the_originals() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS).with_fault_times(
        Op::Start,
        "kubelet.service",
        Fault::failed("exit-code"),
        1,
    );
    let err = node.install(&sd).unwrap_err();
    let chain = format!("{err:#}");
    assert!(
        chain.contains("install step 11/12 'start kubelet.service' failed; rolled back")
            && chain.contains("the original binaries are back in place")
            && chain.contains("journalctl -u kubelet.service"),
        "{chain}"
    );
    assert_eq!(
        sd.call_lines(),
        vec![
            "stop kubelet.service",
            "stop docker.service",
            "start docker.service",
            "start kubelet.service",
            // rollback: undo the starts, the files, then the stops
            "stop kubelet.service",
            "stop docker.service",
            "start docker.service",
            "start kubelet.service",
        ]
    );
    assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
    assert_eq!(node.read("usr/sbin/runc"), ORIG_RUNC);
    for unit in UNITS {
        assert_eq!(sd.unit_state(unit).active_state, "active", "{unit}");
    }
}

#[test]
fn a_failed_upgrade_starts_the_services_on_the_previous_payload() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS);
    node.install(&sd).unwrap();
    node.payload(b"nokmem runc", b"nokmem kubelet 2");
    let sd = FakeSystemd::with_active(&UNITS).with_fault_times(
        Op::Start,
        "kubelet.service",
        Fault::failed("exit-code"),
        1,
    );
    let err = node.install(&sd).unwrap_err();
    let chain = format!("{err:#}");
    assert!(
        chain.contains("install step 5/6 'start kubelet.service' failed; rolled back")
            && chain.contains("the node runs the previous payload again (kubelet)"),
        "{chain}"
    );
    assert_eq!(
        sd.call_lines(),
        vec![
            "stop kubelet.service",
            "start kubelet.service",
            // rollback: undo the start, the file, then the stop
            "stop kubelet.service",
            "start kubelet.service",
        ]
    );
    assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
    assert_eq!(node.read("usr/bin/kubelet.distrib"), ORIG_KUBELET);
    assert_eq!(sd.unit_state("kubelet.service").active_state, "active");
}

#[test]
fn a_service_that_dies_after_starting_is_a_failed_start() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS).with_dies_after_start("docker.service");
    let err = node.install(&sd).unwrap_err();
    let chain = format!("{err:#}");
    assert!(
        chain.contains("install step 11/12 'start kubelet.service' failed; rolled back")
            && chain.contains("the original binaries are back in place")
            && chain.contains("'docker.service' did not stay up for 20s after it started")
            && chain.contains("activating/auto-restart"),
        "{chain}"
    );
    assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
    assert_eq!(node.read("usr/sbin/runc"), ORIG_RUNC);
    for unit in UNITS {
        assert_eq!(sd.unit_state(unit).active_state, "active", "{unit}");
    }
    assert!(!node
        .dir
        .path()
        .join("var/lib/k8s-nokmem/state.json")
        .exists());
}

#[test]
fn an_active_docker_socket_stops_before_docker_and_starts_right_before_it() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&["kubelet.service", "docker.service", "docker.socket"]);
    node.install(&sd).unwrap();
    let want = vec![
        "stop kubelet.service",
        "stop docker.socket",
        "stop docker.service",
        "start docker.socket",
        "start docker.service",
        "start kubelet.service",
    ];
    assert_eq!(sd.call_lines(), want);
    assert_eq!(sd.unit_state("docker.socket").active_state, "active");
    sd.clear_calls();
    node.remove(&sd).unwrap();
    assert_eq!(sd.call_lines(), want, "remove");
    // an inactive socket is left alone, and docker alone restarted
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS).with_inactive("docker.socket");
    node.install(&sd).unwrap();
    assert!(
        !sd.call_lines().iter().any(|c| c.contains("socket")),
        "{:?}",
        sd.call_lines()
    );
}

#[test]
fn a_service_that_never_starts_still_gets_the_originals_back() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS).with_fault(
        Op::Start,
        "kubelet.service",
        Fault::failed("exit-code"),
    );
    let err = node.install(&sd).unwrap_err();
    let chain = format!("{err:#}");
    assert!(
        chain.contains(
            "the original binaries are back in place; but services did not all come back"
        ) && chain.contains("'kubelet.service'"),
        "{chain}"
    );
    assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
    assert!(!node
        .dir
        .path()
        .join("var/lib/k8s-nokmem/journal.json")
        .exists());
    assert_eq!(sd.unit_state("docker.service").active_state, "active");
}

#[test]
fn a_unit_that_is_not_running_is_not_started() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&["kubelet.service"]).with_inactive("docker.service");
    node.install(&sd).unwrap();
    assert_eq!(
        sd.call_lines(),
        vec!["stop kubelet.service", "start kubelet.service"]
    );
    assert_eq!(sd.unit_state("docker.service").active_state, "inactive");
    assert_eq!(node.read("usr/sbin/runc"), b"nokmem runc");
    sd.clear_calls();
    node.remove(&sd).unwrap();
    assert_eq!(
        sd.call_lines(),
        vec!["stop kubelet.service", "start kubelet.service"]
    );
}

#[test]
fn policy_rc_d_101_leaves_that_unit_alone() {
    let node = TestNode::new();
    node.write(
        "usr/sbin/policy-rc.d",
        b"#!/bin/sh\n[ \"$1\" = docker.service ] && exit 101\nexit 0\n",
    );
    let sd = FakeSystemd::with_active(&UNITS);
    node.install(&sd).unwrap();
    assert_eq!(
        sd.call_lines(),
        vec!["stop kubelet.service", "start kubelet.service"]
    );
    assert_eq!(
        node.read("usr/sbin/runc"),
        b"nokmem runc",
        "files swapped anyway"
    );
}

#[test]
fn an_unreachable_bus_changes_nothing() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS).with_no_bus();
    let err = node.install(&sd).unwrap_err();
    assert!(
        format!("{err:#}").contains(
            "failed to read the state of 'kubelet.service' over D-Bus; nothing was changed"
        ),
        "{err:#}"
    );
    assert!(sd.calls().is_empty());
    assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
}

#[test]
fn missing_units_are_skipped() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&["kubelet.service"]);
    node.install(&sd).unwrap();
    assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
    assert_eq!(sd.unit_state("kubelet.service").active_state, "active");
}

#[test]
fn remove_restarts_the_services_on_the_originals() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS);
    node.install(&sd).unwrap();
    sd.clear_calls();
    node.remove(&sd).unwrap();
    assert_eq!(
        sd.call_lines(),
        vec![
            "stop kubelet.service",
            "stop docker.service",
            "start docker.service",
            "start kubelet.service"
        ]
    );
    assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
    sd.clear_calls();
    node.remove(&sd).unwrap();
    assert!(sd.calls().is_empty(), "remove twice touches nothing");
}

#[test]
fn upstream_tags_of_package_versions() {
    for (version, want) in [
        ("1.19.16-00", "v1.19.16"),
        ("1:1.19.16-00", "v1.19.16"),
        ("1.20.5+really1.20.2-1", "v1.20.2"),
        ("1.14.6", "v1.14.6"),
    ] {
        assert_eq!(upstream_tag(version), want, "case {version}");
    }
    assert_eq!(minor_of("1:1.19.16-00"), "1.19");
}

#[test]
fn sockets_start_right_before_their_service() {
    let units = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let table: [(&[&str], &[&str]); 3] = [
        (
            &["kubelet.service", "docker.socket", "docker.service"],
            &["docker.socket", "docker.service", "kubelet.service"],
        ),
        (
            &["kubelet.service", "docker.service"],
            &["docker.service", "kubelet.service"],
        ),
        (
            &["a.socket", "b.service", "kubelet.service"],
            &["kubelet.service", "b.service", "a.socket"],
        ),
    ];
    for (stop, start) in table {
        assert_eq!(
            start_order(&units(stop)),
            units(start),
            "stop order {stop:?}"
        );
    }
}

#[test]
fn units_follow_the_configured_order() {
    let config = Config {
        service_order: vec!["a.service".into(), "b.service".into()],
        ..Config::default()
    };
    let restart = [
        vec!["b.service".to_string(), "c.service".to_string()],
        vec!["a.service".to_string()],
    ];
    assert_eq!(
        units_for(&config, restart.iter()),
        vec!["a.service", "b.service", "c.service"]
    );
}

#[test]
fn the_record_step_stamps_when_each_payload_was_placed() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS);
    let swapped_at = |name: &str| State::load(&node.root).unwrap().targets[name].swapped_at;
    let t0 = journal::now();
    node.install(&sd).unwrap();
    let t1 = journal::now();
    for name in ["runc", "kubelet"] {
        let at = swapped_at(name).unwrap();
        assert!((t0..=t1).contains(&at), "{name}: {at} not in {t0}..={t1}");
    }
    // an older swap time (as a swap an hour ago left it) stays while its payload stays
    let mut state = State::load(&node.root).unwrap();
    for t in state.targets.values_mut() {
        t.swapped_at = Some(t0 - 3600);
    }
    state.save(&node.root).unwrap();
    node.install(&sd).unwrap();
    assert_eq!(swapped_at("kubelet"), Some(t0 - 3600));
    // an upgrade of kubelet stamps kubelet only
    node.payload(b"nokmem runc", b"nokmem kubelet 2");
    node.install(&sd).unwrap();
    assert!(swapped_at("kubelet").unwrap() >= t1);
    assert_eq!(swapped_at("runc"), Some(t0 - 3600));
}

/// On the node itself ([`effect::Judged::Here`]) install's effect is judged from the
/// node's kernel and cgroups (`[verify] proc-root`/`cgroup-root`, recorded trees here): a
/// reboot that will help is flagged (once), one that cannot is not, and `apply = reboot`
/// flags the reboot that starts the new binaries. In an image build
/// ([`effect::Judged::Image`]) the same config flags nothing.
#[test]
fn install_flags_reboot_required_on_the_node_only_when_a_reboot_helps() {
    let cases = [
        ("4.4-kubepods", "", true),
        ("5.4-kmem", "[kernel]\ncmdline = leave\n", false),
        ("v2-only", "", false),
        ("v2-only", "[services]\napply = reboot\n", true),
    ];
    for (tree, extra, flagged) in cases {
        let case = format!("{tree} {extra:?}");
        let recorded = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cgroup")
            .join(tree);
        let config_text = format!(
            "[verify]\nproc-root = {}\ncgroup-root = {}\n{extra}",
            recorded.join("proc").display(),
            recorded.join("sys/fs/cgroup").display()
        );
        for judged in [
            effect::Judged::Here,
            effect::Judged::Image(crate::policy::SkipReason::SystemdNotRunning),
        ] {
            let node = TestNode::new();
            node.write("etc/k8s-nokmem/k8s-nokmem.conf", config_text.as_bytes());
            let sd = FakeSystemd::with_active(&UNITS);
            node.install(&sd).unwrap();
            let config = Config::load(&node.root, None).unwrap();
            let applied = effect::Applied::of(config.apply);
            for _ in 0..2 {
                effect::after_install(&node.root, &config, &applied, true, &judged);
            }
            let flag = crate::reboot::read(&node.root);
            let want = flagged && judged == effect::Judged::Here;
            assert_eq!(flag.required, want, "{case} {judged:?}");
            if want {
                assert_eq!(flag.packages, vec!["k8s-nokmem"], "{case}: listed once");
            }
        }
    }
}
