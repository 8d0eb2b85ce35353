//! Tests of the install and remove transactions against a fake systemd: the service
//! order, restarts, rollbacks and policy-rc.d.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::plan::{start_order, units_for};
use super::preflight::{minor_of, upstream_tag};
use super::*;
use crate::config::Config;
use crate::journal;
use crate::paths::Root;
use crate::state::State;
use crate::systemd::fake::{FakeSystemd, Fault, Op};
use crate::systemd::ServiceManager;

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
        let sha = |rel: &str| crate::fs::sha256_file(&self.dir.path().join(rel)).unwrap();
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
        let applied = activation::Applied::of(config.apply);
        install(&self.root, &session, &config, &applied, Some(sd))
    }

    /// Remove; the running units left on k8s-nokmem's binaries.
    fn remove(&self, sd: &FakeSystemd) -> anyhow::Result<Vec<String>> {
        let session = Session::open(&self.root, "remove")?;
        let config = Config::load(&self.root, None)?;
        let applied = activation::Applied::of(config.apply);
        remove(&self.root, &session, &config, &applied, Some(sd))
    }
}

const UNITS: [&str; 2] = ["kubelet.service", "docker.service"];
/// The service calls of a swap of both binaries: stops in order, starts in reverse.
const SWAP_CALLS: [&str; 4] = [
    "stop kubelet.service",
    "stop docker.service",
    "start docker.service",
    "start kubelet.service",
];

#[test]
fn services_stop_in_order_start_in_reverse_and_a_rerun_restarts_nothing() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS);
    node.install(&sd).unwrap();
    assert_eq!(sd.call_lines(), SWAP_CALLS);
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
    let stops_or_starts = sd.stops_and_starts();
    assert!(stops_or_starts.is_empty(), "{stops_or_starts:?}");
    assert_eq!(sd.unit_state("kubelet.service"), before, "not restarted");
    // an upgrade of the payload: still nothing restarted
    node.payload(b"nokmem runc 2", b"nokmem kubelet 2");
    node.install(&sd).unwrap();
    assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet 2");
    assert!(sd.stops_and_starts().is_empty(), "{:?}", sd.call_lines());
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
    let stops_or_starts = sd.stops_and_starts();
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
    // with an active docker.socket: still only the services are named, nothing stopped
    let socket_node = TestNode::new();
    let with_socket =
        FakeSystemd::with_active(&["kubelet.service", "docker.service", "docker.socket"]);
    socket_node.install(&with_socket).unwrap();
    socket_node.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        b"[services]\napply = reboot\n",
    );
    with_socket.clear_calls();
    assert_eq!(
        socket_node.remove(&with_socket).unwrap(),
        vec!["kubelet.service", "docker.service"]
    );
    assert!(
        with_socket.stops_and_starts().is_empty(),
        "{:?}",
        with_socket.call_lines()
    );
    assert_eq!(socket_node.read("usr/sbin/runc"), ORIG_RUNC);

    let config = Config::load(&node.root, None).unwrap();
    let applied = activation::Applied::of(config.apply);
    let image = activation::Judged::Image(crate::policy::SkipReason::SystemdNotRunning);
    activation::after_remove(&node.root, &applied, &left, &image);
    assert!(!crate::reboot::read(&node.root).required, "image: no flag");
    for _ in 0..2 {
        activation::after_remove(&node.root, &applied, &left, &activation::Judged::Here);
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
    let applied = activation::Applied::of(Config::load(&node.root, None).unwrap().apply);
    activation::after_remove(&node.root, &applied, &left, &activation::Judged::Here);
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
    assert_eq!(sd.call_lines(), SWAP_CALLS);
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

/// On the node itself ([`activation::Judged::Here`]) install's effect is judged from the
/// node's kernel and cgroups (`[verify] proc-root`/`cgroup-root`, recorded trees here): a
/// reboot that will help is flagged (once), one that cannot is not, and `apply = reboot`
/// flags the reboot that starts the new binaries. In an image build
/// ([`activation::Judged::Image`]) the same config flags nothing.
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
        let config_text = recorded_node_config(tree, extra);
        for judged in [
            activation::Judged::Here,
            activation::Judged::Image(crate::policy::SkipReason::SystemdNotRunning),
        ] {
            let node = TestNode::new();
            node.write("etc/k8s-nokmem/k8s-nokmem.conf", config_text.as_bytes());
            let sd = FakeSystemd::with_active(&UNITS);
            node.install(&sd).unwrap();
            let config = Config::load(&node.root, None).unwrap();
            let applied = activation::Applied::of(config.apply);
            for _ in 0..2 {
                activation::after_install(&node.root, &config, &applied, true, &judged);
            }
            let flag = crate::reboot::read(&node.root);
            let want = flagged && judged == activation::Judged::Here;
            assert_eq!(flag.required, want, "{case} {judged:?}");
            if want {
                assert_eq!(flag.packages, vec!["k8s-nokmem"], "{case}: listed once");
            }
        }
    }
}

/// Only kubelet can veto or pass the settle check (issue 15 item 3): a process that is not
/// kubelet's main process (nobody's, as root) answers `500` on kubelet's healthz address
/// 127.0.0.1:10248, where kubelet does not listen: the install goes through, after the
/// real settle window.
#[test]
fn a_strangers_answer_on_kubelets_healthz_port_does_not_fail_the_install() {
    use crate::systemd::fake::{in_private_network, Stranger};
    use crate::systemd::settle::KUBELET_HEALTHZ;
    let node = TestNode::new();
    node.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        b"[services]\nsettle = 2s\n",
    );
    let sd = FakeSystemd::with_active(&UNITS).with_real_settle();
    let (result, took) = in_private_network(|| {
        let stranger = Stranger::serve_500(KUBELET_HEALTHZ);
        assert_eq!(stranger.addr, KUBELET_HEALTHZ);
        let t0 = std::time::Instant::now();
        let result = node.install(&sd).map_err(|e| format!("{e:#}"));
        (result, t0.elapsed())
    });
    result.expect("a stranger's 500 on 127.0.0.1:10248 failed the install");
    assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
    assert!(
        took >= std::time::Duration::from_secs(2),
        "the settle window was not watched: {took:?}"
    );
}

/// The journal a remove killed right after journalling its first unplace leaves
/// (`K8S_NOKMEM_FAILPOINT=unplace:abort`): both services stopped, no file touched.
fn interrupted_remove(node: &TestNode, sd: &FakeSystemd) {
    use super::plan::{remove_steps, Swapped};
    let state = State::load(&node.root).unwrap();
    let swapped: Vec<Swapped> = crate::divert::DpkgDivert::new(&node.root)
        .list()
        .unwrap()
        .into_iter()
        .filter(|d| d.is_ours())
        .map(|d| {
            let (name, t) = state
                .targets
                .iter()
                .find(|(_, t)| t.path == d.path)
                .unwrap();
            Swapped {
                name: name.clone(),
                ours: vec![t.payload_sha256.clone()],
                original: Some(t.original.clone()),
                payload: None,
                diversion: d,
            }
        })
        .collect();
    let units: Vec<String> = UNITS.iter().map(|u| u.to_string()).collect();
    let steps = remove_steps(&units, &swapped, journal::now());
    let at = steps.iter().position(|s| s.name() == "unplace").unwrap();
    let mut j = journal::Journal::new(journal::Transaction::Remove, steps);
    j.begun = at + 1;
    j.done = at;
    j.save(&node.root).unwrap();
    for unit in UNITS {
        sd.stop(unit, std::time::Duration::from_secs(1)).unwrap();
    }
}

/// Issue 15 item 4: finishing an interrupted remove (the next install or remove) starts
/// every service it stopped even when a step fails (here docker, started again meanwhile,
/// whose stop times out): no unit that ran before stays stopped; the journal is kept, and
/// once the stop works the remove finishes.
#[test]
fn finishing_an_interrupted_remove_starts_what_it_stopped_even_when_a_step_fails() {
    for next in ["remove", "install"] {
        let node = TestNode::new();
        let sd = FakeSystemd::with_active(&UNITS);
        node.install(&sd).unwrap();
        interrupted_remove(&node, &sd);
        // docker came back meanwhile (socket activation, an operator), and its stop hangs
        sd.start("docker.service", std::time::Duration::from_secs(1))
            .unwrap();
        sd.add_fault(Op::Stop, "docker.service", Fault::Timeout, Some(1));
        sd.clear_calls();
        let err = match next {
            "remove" => node.remove(&sd).map(drop),
            _ => node.install(&sd),
        }
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("failed to resolve the interrupted remove transaction")
                && msg.contains("step 3/10 'stop docker.service' failed; the services it stopped were started again ('docker.service', 'kubelet.service')")
                && msg.contains("did not finish within"),
            "{next}: {msg}"
        );
        for unit in UNITS {
            assert_eq!(
                sd.unit_state(unit).active_state,
                "active",
                "{next}: {unit} after the failed recovery: {:?}",
                sd.call_lines()
            );
        }
        assert!(
            journal::Journal::load(&node.root).unwrap().is_some(),
            "{next}: the journal must stay for the next run"
        );
        // the stop works again: the remove is finished, then the command runs
        sd.clear_calls();
        match next {
            "remove" => {
                node.remove(&sd).unwrap();
                assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
            }
            _ => {
                node.install(&sd).unwrap();
                assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
            }
        }
        assert!(journal::Journal::load(&node.root).unwrap().is_none());
        for unit in UNITS {
            assert_eq!(sd.unit_state(unit).active_state, "active", "{next}: {unit}");
        }
    }
}

/// kubelet restarting after a failure (`activating/auto-restart`), as before `kubeadm join`.
fn crash_looping_kubelet(sd: FakeSystemd) -> FakeSystemd {
    let mut state = sd.unit_state("kubelet.service");
    state.active_state = "activating".into();
    state.sub_state = "auto-restart".into();
    state.result = "exit-code".into();
    state.main_pid = 0;
    sd.with_state(state)
}

/// The last transaction's journal records kubelet as restarting before it.
#[track_caller]
fn assert_kubelet_journalled_failing(node: &TestNode) {
    let last = journal::Journal::load_last(&node.root).unwrap().unwrap();
    assert_eq!(
        last.failing.get("kubelet.service").map(String::as_str),
        Some("activating/auto-restart"),
        "{last:?}"
    );
}

/// Issue 15 item 10: a unit that was failing before the swap is stopped and started like
/// the others but judged against that state: its start that leaves it restarting again is
/// no failure, and it is not required to stay up; one that systemd gave up on (failed) is
/// worse, and rolled back.
#[test]
fn a_unit_failing_before_the_swap_is_judged_against_that_state() {
    let node = TestNode::new();
    let sd = crash_looping_kubelet(FakeSystemd::with_active(&UNITS))
        .with_dies_after_start("kubelet.service");
    node.install(&sd).unwrap();
    assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
    assert_eq!(sd.call_lines(), SWAP_CALLS);
    assert_kubelet_journalled_failing(&node);

    // worse than before: the start leaves it failed (systemd gave up): rolled back
    let node = TestNode::new();
    let sd = crash_looping_kubelet(FakeSystemd::with_active(&UNITS)).with_fault_times(
        Op::Start,
        "kubelet.service",
        Fault::failed("exit-code"),
        1,
    );
    let err = format!("{:#}", node.install(&sd).unwrap_err());
    assert!(
        err.contains("'start kubelet.service' failed") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(node.read("usr/bin/kubelet"), ORIG_KUBELET);
}

/// Issue 15 item 10: a crash-looping unit caught in the moment it is `active` after a
/// restart (it became active just now) is watched until it has been up for
/// `JUST_STARTED`: when it falls back into its loop it counts as failing, as one found
/// restarting does; a unit up for long is not waited for.
#[test]
fn a_unit_caught_active_between_two_crashes_counts_as_failing() {
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS).with_dies_after_start("kubelet.service");
    let mut state = sd.unit_state("kubelet.service");
    state.active_enter_usec = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    sd.set_state(state.clone());
    let t0 = std::time::Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(600));
            let mut crashed = state.clone();
            crashed.active_state = "activating".into();
            crashed.sub_state = "auto-restart".into();
            crashed.result = "exit-code".into();
            crashed.main_pid = 0;
            sd.set_state(crashed);
        });
        node.install(&sd).unwrap();
    });
    assert!(
        t0.elapsed() < super::plan::JUST_STARTED + std::time::Duration::from_secs(2),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet");
    assert_kubelet_journalled_failing(&node);
    // up for long: no wait, and a failure after the start is a failure
    let node = TestNode::new();
    let sd = FakeSystemd::with_active(&UNITS).with_dies_after_start("kubelet.service");
    let t0 = std::time::Instant::now();
    assert!(node.install(&sd).is_err());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t0.elapsed()
    );
}

/// How fixed a node is by the rule's verdict: in effect, pods to recreate, a reboot, an
/// operator's action.
fn rank(action: crate::verify::Action) -> u8 {
    use crate::verify::Action::*;
    match action {
        None => 0,
        RecreatePods => 1,
        Reboot => 2,
        Operator => 3,
    }
}

/// The node right after an install, as verify's rule sees it: the payload in place, the
/// pods that ran before it now from before the swap, the running kubelet the payload only
/// if the services were restarted (a restart recreates no pod cgroup: kubelet keeps them).
fn after_install_model(
    i: &crate::verify::verdict::Inputs,
    restarted: bool,
) -> crate::verify::verdict::Inputs {
    let mut a = i.clone();
    a.payload_kubelet = Some(true);
    a.running_old_kubelet = !restarted;
    a.rebooted_since_swap = Some(false);
    if let Some(active) = a.active.as_mut() {
        active.before_swap += active.not_swapped;
        active.not_swapped = 0;
    }
    a
}

/// Every combination of the evidence the rule reads on a node about to be swapped.
fn evidence_grid() -> Vec<crate::verify::verdict::Inputs> {
    use crate::cmdline::{Loader, NextBoot};
    use crate::verify::verdict::{Active, Inputs};
    let mut out = Vec::new();
    for release in [
        None,
        Some((3, 10)),
        Some((4, 4)),
        Some((5, 4)),
        Some((6, 1)),
    ] {
        for v1_memory in [Some(true), Some(false), None] {
            for cmdline_nokmem in [false, true] {
                for kubepods in [0, 3] {
                    for pods in [0, 4] {
                        for kernel in [0, 7] {
                            for walked in [true, false] {
                                for (managed, loader, param) in [
                                    (true, Loader::Grub, true),
                                    (true, Loader::Grub, false),
                                    (false, Loader::Grub, false),
                                    (
                                        true,
                                        Loader::Other {
                                            file: "/boot/firmware/cmdline.txt".into(),
                                            line: "append it".into(),
                                        },
                                        false,
                                    ),
                                ] {
                                    out.push(Inputs {
                                        release,
                                        v1_memory,
                                        cmdline_nokmem,
                                        kernel_wide_ignored: false,
                                        active: walked.then_some(Active {
                                            kubepods,
                                            not_swapped: pods,
                                            kernel,
                                            ..Active::default()
                                        }),
                                        payload_kubelet: Some(false),
                                        running_old_kubelet: false,
                                        rebooted_since_swap: None,
                                        boot_time: Some(1000),
                                        cmdline_managed: managed,
                                        loader,
                                        next_boot: NextBoot {
                                            dropin: managed,
                                            grub_cfg_has_param: param,
                                            grub_cfg_written: Some(2000),
                                        },
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The reason `auto` is the default: on every combination of evidence, verify's own rule
/// ([`crate::verify::verdict::decide`]) finds the node after an `auto` install at least as
/// fixed as after a `restart` install. Where `auto` restarts nothing, either the running
/// binaries matter and it flags the reboot that replaces them, or they make no difference to
/// kmem and it asks for neither: the rule's verdict is then the same with or without the
/// restart. And the comparison has teeth: never restarting leaves some node less fixed
/// (Linux < 4.6 with a clean kubepods: the old kubelet keeps creating kmem pods).
#[test]
fn auto_never_leaves_a_node_less_fixed_than_restart() {
    use crate::verify::verdict::{binaries_irrelevant, decide};
    let grid = evidence_grid();
    let (mut restarts, mut flags, mut neither) = (0, 0, 0);
    for i in &grid {
        let applied = activation::auto(Some(i));
        let with_restart = decide(&after_install_model(i, true));
        let with_auto = decide(&after_install_model(i, applied.restart));
        assert!(
            rank(with_auto.action) <= rank(with_restart.action),
            "auto ({}) leaves {:?} where restart leaves {:?}: {i:?}",
            applied.why,
            with_auto,
            with_restart
        );
        let irrelevant = binaries_irrelevant(i);
        match (applied.restart, applied.flag()) {
            (true, _) => {
                assert!(irrelevant.is_none(), "{}: {i:?}", applied.why);
                restarts += 1;
            }
            (false, true) => {
                assert!(
                    irrelevant.is_none(),
                    "a reboot for binaries that do not matter ({irrelevant:?}): {i:?}"
                );
                flags += 1;
            }
            (false, false) => {
                assert!(
                    irrelevant.is_some(),
                    "neither restart nor reboot where the binaries matter: {i:?}"
                );
                assert_eq!(with_auto, with_restart, "{i:?}");
                neither += 1;
            }
        }
    }
    assert!(
        restarts > 0 && flags > 0 && neither > 0,
        "{restarts} {flags} {neither}"
    );
    assert!(
        grid.iter().any(|i| {
            rank(decide(&after_install_model(i, false)).action)
                > rank(decide(&after_install_model(i, true)).action)
        }),
        "never restarting must lose somewhere, or this test proves nothing"
    );
    assert!(activation::auto(None).restart, "no evidence: as restart");
}

/// A conffile that reads the kernel and cgroups from the recorded node
/// tests/fixtures/cgroup/TREE (`[verify] proc-root`, `cgroup-root`), then `extra`.
fn recorded_node_config(tree: &str, extra: &str) -> String {
    let recorded = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cgroup")
        .join(tree);
    format!(
        "[verify]\nproc-root = {}\ncgroup-root = {}\n{extra}",
        recorded.join("proc").display(),
        recorded.join("sys/fs/cgroup").display()
    )
}

/// `apply = auto` on a recorded node (tests/fixtures/cgroup/TREE), through the install
/// transaction with the fake systemd and the after-install step; `config` is added to the
/// conffile, `grub_cfg` is the node's /boot/grub/grub.cfg. Returns the decision, whether a
/// service was stopped, and whether reboot-required was flagged.
fn auto_install(
    tree: &str,
    config: &str,
    grub_cfg: Option<&str>,
) -> (activation::Applied, bool, bool) {
    let config_text = format!(
        "[services]\napply = auto\n{}",
        recorded_node_config(tree, config)
    );
    let node = TestNode::new();
    node.write("etc/k8s-nokmem/k8s-nokmem.conf", config_text.as_bytes());
    if let Some(cfg) = grub_cfg {
        node.write(
            "etc/default/grub",
            b"GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n",
        );
        node.write("boot/grub/grub.cfg", cfg.as_bytes());
    }
    let sd = FakeSystemd::with_active(&UNITS);
    let session = Session::open(&node.root, "install").unwrap();
    let config = Config::load(&node.root, None).unwrap();
    let applied = activation::Applied::decide(&node.root, &config, &activation::Judged::Here);
    install(&node.root, &session, &config, &applied, Some(&sd)).unwrap();
    drop(session);
    assert_eq!(node.read("usr/bin/kubelet"), b"nokmem kubelet", "{tree}");
    let stopped = !sd.stops_and_starts().is_empty();
    assert_eq!(stopped, applied.restart, "{tree}: {:?}", sd.call_lines());
    activation::after_install(
        &node.root,
        &config,
        &applied,
        true,
        &activation::Judged::Here,
    );
    let flag = crate::reboot::read(&node.root);
    assert!(!flag.required || flag.by_us, "{tree}: {flag:?}");
    (applied, stopped, flag.required)
}

const GRUB_CFG_WITH_PARAM: &str =
    "menuentry 'Ubuntu' {\n\tlinux /boot/vmlinuz-5.4.0-150-generic root=/dev/sda1 ro quiet cgroup.memory=nokmem\n}\n";

/// Linux < 4.6 with a clean kubepods hierarchy: the restart puts the fix in effect now.
#[test]
fn auto_restarts_on_4_4_with_a_clean_kubepods() {
    for tree in ["4.4-nokmem", "4.4-kmem"] {
        let (applied, stopped, flagged) = auto_install(tree, "", None);
        assert!(stopped && !flagged, "{tree}: {}", applied.why);
        assert!(
            applied
                .why
                .contains("restarting: on Linux 4.4 with a clean kubepods hierarchy"),
            "{tree}: {}",
            applied.why
        );
    }
    let (applied, stopped, flagged) = auto_install("3.10-eio", "", None);
    assert!(stopped && !flagged, "{}", applied.why);
    assert!(applied.why.contains("on Linux 3.10 with a clean kubepods"));
}

/// Linux < 4.6 with a kmem-active kubepods: a restart would only kill the containers; the
/// reboot is flagged.
#[test]
fn auto_flags_the_reboot_on_4_4_with_a_kmem_active_kubepods() {
    let (applied, stopped, flagged) = auto_install("4.4-kubepods", "", None);
    assert!(!stopped && flagged, "{}", applied.why);
    assert!(
        applied.why.contains("no service stopped, reboot flagged")
            && applied
                .why
                .contains("kubepods or its QoS cgroups account kmem"),
        "{}",
        applied.why
    );
}

/// cgroup v2 only: nothing to restart for and nothing a reboot would add.
#[test]
fn auto_neither_restarts_nor_flags_a_reboot_on_cgroup_v2() {
    let (applied, stopped, flagged) = auto_install("v2-only", "", None);
    assert!(!stopped && !flagged, "{}", applied.why);
    assert!(
        applied.why.contains(
            "no service stopped, no reboot for the services: no cgroup v1 memory controller"
        ) && applied.why.contains("nothing a reboot would add"),
        "{}",
        applied.why
    );
}

/// Linux >= 4.6 booted with cgroup.memory=nokmem: kmem is off kernel-wide whatever the
/// binaries: nothing to restart for and nothing a reboot would add.
#[test]
fn auto_neither_restarts_nor_flags_a_reboot_when_booted_with_nokmem() {
    let (applied, stopped, flagged) = auto_install("nokmem-cmdline", "", Some(GRUB_CFG_WITH_PARAM));
    assert!(!stopped && !flagged, "{}", applied.why);
    assert!(
        applied.why.contains(
            "Linux 5.4 booted with cgroup.memory=nokmem: kmem accounting is off kernel-wide"
        ) && applied.why.contains("nothing a reboot would add"),
        "{}",
        applied.why
    );
}

/// Linux >= 4.6 without the parameter: no service stopped (the binaries do not matter), the
/// reboot flagged because the next boot carries the parameter; with `[kernel] cmdline =
/// leave` the next boot would not, and no reboot is flagged (the operator's action is
/// reported instead).
#[test]
fn auto_flags_the_reboot_on_5_4_only_when_the_next_boot_carries_nokmem() {
    let (applied, stopped, flagged) = auto_install("5.4-kmem", "", Some(GRUB_CFG_WITH_PARAM));
    assert!(!stopped && flagged, "{}", applied.why);
    assert!(
        applied.why.contains(
            "Linux 5.4 accounts kmem in every cgroup v1 memory cgroup until booted with cgroup.memory=nokmem"
        ) && applied.why.contains("reboot-required is flagged when the next boot carries it"),
        "{}",
        applied.why
    );
    let (applied, stopped, flagged) = auto_install(
        "5.4-kmem",
        "[kernel]\ncmdline = leave\n",
        Some("menuentry 'Ubuntu' {\n\tlinux /boot/vmlinuz root=/dev/sda1 ro\n}\n"),
    );
    assert!(!stopped && !flagged, "{}", applied.why);
}
