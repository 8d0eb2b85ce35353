//! `k8s-nokmem install` / `remove` on a booted systemd (the nspawn testbed): the real
//! dpkg-divert on the live root, the services stopped and started over D-Bus, their state
//! read with `systemctl show`. Stand-ins: `kubelet.service` (Type=simple, /usr/bin/kubelet =
//! `sleep 1000001`) and `docker.service` (Type=notify, needs `/usr/sbin/runc --version` to
//! work); the runc is docker.io's own, a packaged file. The payload is two small scripts with
//! a MANIFEST of their sha256s.
//!
//! Needs root and the testbed root (`scripts/testbed-root.sh`); without them it fails (skipped under
//! `K8S_NOKMEM_ALLOW_SKIP=1`).

mod common;
#[macro_use]
#[path = "common/nspawn.rs"]
mod nspawn;

use std::process::Output;
use std::time::Instant;

use common::{assert_contains, assert_lacks};
use nspawn::{HELPER, STAND_IN_UNITS};
use sha2::{Digest, Sha256};

const PAYLOAD_KUBELET: &[u8] =
    b"#!/bin/sh\n# nokmem stand-in kubelet (payload)\nexec sleep 2000001\n";
const PAYLOAD_RUNC: &[u8] =
    b"#!/bin/sh\n# nokmem stand-in runc (payload)\necho 'runc version 1.1.5+nokmem'\n";
const BROKEN_KUBELET: &[u8] = b"#!/bin/sh\necho 'payload kubelet: cannot run here' >&2\nexit 1\n";
/// A kubelet that starts, then exits 3 s later (a bad flag, the wrong cgroup driver).
const LATE_DYING_KUBELET: &[u8] =
    b"#!/bin/sh\necho 'payload kubelet: up, failing in 3 s' >&2\nsleep 3\nexit 1\n";
const KUBELET_LINE: &str =
    "diversion of /usr/bin/kubelet to /usr/bin/kubelet.distrib by k8s-nokmem";
const RUNC_LINE: &str = "diversion of /usr/sbin/runc to /usr/sbin/runc.distrib by k8s-nokmem";

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compare file contents by sha256 (binaries make unreadable assertion messages).
#[track_caller]
fn assert_content(tb: &nspawn::Testbed, inside: &str, want: &[u8], what: &str) {
    assert_eq!(
        sha256(&tb.read(inside)),
        sha256(want),
        "{what}: content of {inside}"
    );
}

/// The payload and its MANIFEST under /usr/lib/k8s-nokmem, as the package ships them.
fn write_payload(tb: &nspawn::Testbed, runc: &[u8], kubelet: &[u8]) {
    tb.write("/usr/lib/k8s-nokmem/runc", runc, 0o755);
    tb.write("/usr/lib/k8s-nokmem/kubelet", kubelet, 0o755);
    let manifest = format!(
        "; stand-in payload for tests/nspawn_swap.rs\n[payload]\narch = amd64\nbuilt = 2026-11-28T00:00:00Z\n\n\
         [runc]\nfile = runc\nversion = 1.1.5\nsource = test\ngo = go1.19.8\n\
         tags = seccomp nokmem\narch = amd64\nsize = {}\nsha256 = {}\n\n\
         [kubelet]\nfile = kubelet\nversion = 1.20.2\nsource = test\ngo = go1.19.8\n\
         tags = selinux notest nokmem\narch = amd64\nsize = {}\nsha256 = {}\n",
        runc.len(),
        sha256(runc),
        kubelet.len(),
        sha256(kubelet)
    );
    tb.write("/usr/lib/k8s-nokmem/MANIFEST", manifest, 0o644);
}

/// The config: runc named explicitly, so these tests do not depend on target detection.
/// Debian's runc package ships `/usr/sbin/runc` and a `/usr/bin/runc -> ../sbin/runc`
/// symlink and docker finds `/usr/sbin/runc` first in $PATH: `path = auto` must pick it
/// (`auto_detected_runc_is_the_one_docker_runs`).
/// `settle = 6s`: long enough to see a kubelet that exits 3 s after it started.
/// `apply = restart`: these tests are about the restart (the default, `auto`, restarts
/// nothing on this machine's >= 4.6 kernel); [`with_apply`] sets another mode.
const CONFIG: &str =
    "[runc]\npath = /usr/sbin/runc\n\n[services]\ntimeout = 30s\nsettle = 6s\napply = restart\n";

/// [`CONFIG`] with `[services] apply = MODE`.
fn with_apply(mode: &str) -> String {
    CONFIG.replace("apply = restart", &format!("apply = {mode}"))
}

/// A testbed (not booted yet) with the stand-in services, the helper, its config and a
/// payload.
fn node(test: &str, kubelet_payload: &[u8]) -> Option<nspawn::Testbed> {
    let tb = nspawn::stand_in_node(test)?;
    write_payload(&tb, PAYLOAD_RUNC, kubelet_payload);
    tb.install_helper(CONFIG);
    Some(tb)
}

/// [`node`], booted, its services up.
fn testbed(test: &str, kubelet_payload: &[u8]) -> Option<nspawn::Testbed> {
    let mut tb = node(test, kubelet_payload)?;
    tb.boot();
    tb.assert_active(&STAND_IN_UNITS, "after boot");
    Some(tb)
}

/// The reboot is flagged, once, for k8s-nokmem (/run is the container's tmpfs: read inside).
#[track_caller]
fn assert_reboot_flagged_once(tb: &nspawn::Testbed, log: &str) {
    assert_eq!(
        tb.sh_ok("cat /run/reboot-required.pkgs"),
        "k8s-nokmem\n",
        "flagged once:\n{log}"
    );
    assert_eq!(
        tb.sh_ok("cat /run/reboot-required"),
        "*** System restart required ***\n"
    );
}

/// `k8s-nokmem <command>` under `[services] apply = <apply>`, which must touch no service: no
/// stop or start in its log, the same start timestamps after. Its log, and the services'
/// state before it.
fn run_touching_no_service(
    tb: &nspawn::Testbed,
    command: &str,
    apply: Option<&str>,
) -> (String, Vec<(String, String)>) {
    // None: the shipped default, no apply line at all
    tb.write_config(match apply {
        Some(mode) => with_apply(mode),
        None => CONFIG.replace("apply = restart\n", ""),
    });
    let apply = apply.unwrap_or("auto (the default)");
    let before = services(tb);
    let log = helper_ok(tb, &[command]);
    assert_lacks(
        &log,
        &["stop '", "start '"],
        format!("apply = {apply}: the {command} log"),
    );
    assert_eq!(
        services(tb),
        before,
        "start timestamps changed: a service was restarted:\n{log}"
    );
    (log, before)
}

/// ActiveState and ActiveEnterTimestampMonotonic of both services.
fn services(tb: &nspawn::Testbed) -> Vec<(String, String)> {
    STAND_IN_UNITS
        .iter()
        .map(|u| {
            let p = tb.unit_props(u, &["ActiveState", "ActiveEnterTimestampMonotonic"]);
            (
                p["ActiveState"].clone(),
                p["ActiveEnterTimestampMonotonic"].clone(),
            )
        })
        .collect()
}

/// The command line of a unit's main process (what binary it runs).
fn main_cmdline(tb: &nspawn::Testbed, unit: &str) -> String {
    let pid = tb.unit_prop(unit, "MainPID");
    assert_ne!(pid, "0", "{unit} has no main process");
    tb.sh_ok(&format!("tr '\\0' ' ' </proc/{pid}/cmdline"))
        .trim()
        .to_string()
}

fn diversions(tb: &nspawn::Testbed) -> Vec<String> {
    let out = tb.sh_ok("LC_ALL=C dpkg-divert --list 'k8s-nokmem' | sort");
    out.lines().map(str::to_string).collect()
}

fn helper(tb: &nspawn::Testbed, args: &[&str]) -> (Output, String) {
    let mut argv = vec![HELPER];
    argv.extend_from_slice(args);
    let t0 = Instant::now();
    let out = tb.run(&argv);
    eprintln!(
        "k8s-nokmem {}: {} ms",
        args.join(" "),
        t0.elapsed().as_millis()
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    eprint!("{log}");
    (out, log)
}

fn helper_ok(tb: &nspawn::Testbed, args: &[&str]) -> String {
    let (out, log) = helper(tb, args);
    assert!(
        out.status.success(),
        "k8s-nokmem {} failed:\n{}",
        args.join(" "),
        nspawn::show(&out)
    );
    log
}

/// After a rolled-back install: the originals in place, no state recorded, and kubelet's
/// journal shows the payload's attempt (`payload_said`).
fn assert_rolled_back(tb: &nspawn::Testbed, runc: &[u8], payload_said: &str) {
    assert_originals(tb, runc, "after the rolled-back install");
    assert!(
        !tb.path("/var/lib/k8s-nokmem/state.json").exists(),
        "state recorded after a rollback"
    );
    let journal = tb.journal("kubelet.service");
    assert!(journal.contains(payload_said), "{journal}");
}

fn assert_originals(tb: &nspawn::Testbed, runc: &[u8], what: &str) {
    assert_content(tb, "/usr/bin/kubelet", nspawn::ORIG_KUBELET, what);
    assert_content(tb, "/usr/sbin/runc", runc, what);
    assert!(
        diversions(tb).is_empty(),
        "{what}: diversions left: {:?}",
        diversions(tb)
    );
    tb.assert_active(&STAND_IN_UNITS, what);
    assert_eq!(
        main_cmdline(tb, "kubelet.service"),
        "sleep 1000001",
        "{what}: kubelet runs the original"
    );
}

/// `test_name!()` names the test it is in: the testbed and a skip message carry it.
#[test]
fn test_name_is_the_enclosing_test() {
    assert_eq!(test_name!(), "test_name_is_the_enclosing_test");
}

#[test]
fn install_restarts_services_on_the_payload_and_remove_restores() {
    let Some(tb) = testbed(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    let orig_runc = tb.read("/usr/sbin/runc");
    let booted = services(&tb);

    // install: both services stopped and started again on the payload
    let log = helper_ok(&tb, &["install"]);
    assert_contains(
        &log,
        &[
            "stop 'kubelet.service': ok",
            "stop 'docker.service': ok",
            "start 'docker.service': ok",
            "start 'kubelet.service': ok",
        ],
        "install log",
    );
    let stop = log.find("stop 'kubelet.service'").unwrap();
    let start = log.find("start 'kubelet.service'").unwrap();
    assert!(
        stop < log.find("stop 'docker.service'").unwrap()
            && start > log.find("start 'docker.service'").unwrap(),
        "order:\n{log}"
    );
    assert_content(&tb, "/usr/bin/kubelet", PAYLOAD_KUBELET, "after install");
    assert_content(&tb, "/usr/sbin/runc", PAYLOAD_RUNC, "after install");
    assert_content(
        &tb,
        "/usr/bin/kubelet.distrib",
        nspawn::ORIG_KUBELET,
        "after install",
    );
    assert_content(&tb, "/usr/sbin/runc.distrib", &orig_runc, "after install");
    assert_eq!(diversions(&tb), vec![KUBELET_LINE, RUNC_LINE]);
    let installed = services(&tb);
    for (i, unit) in STAND_IN_UNITS.iter().enumerate() {
        assert_eq!(
            installed[i].0,
            "active",
            "{unit} after install\n{}",
            tb.journal(unit)
        );
        assert_ne!(
            installed[i].1, booted[i].1,
            "{unit} was not restarted by install"
        );
    }
    assert_eq!(
        main_cmdline(&tb, "kubelet.service"),
        "sleep 2000001",
        "kubelet runs the payload"
    );

    // status over D-Bus
    let out = tb.run(&[HELPER, "status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "status after install:\n{}",
        nspawn::show(&out)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["installed"], "installed", "{json}");
    let states: Vec<&str> = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["active_state"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(states, vec!["active", "active"], "{json}");

    // an unchanged re-install restarts nothing
    let log = helper_ok(&tb, &["install"]);
    assert!(
        !log.contains("stop '"),
        "a re-install stopped something:\n{log}"
    );
    assert_eq!(
        services(&tb),
        installed,
        "a re-install restarted a service:\n{log}"
    );

    // remove: originals back, services restarted on them
    let log = helper_ok(&tb, &["remove"]);
    assert_contains(
        &log,
        &[
            "stop 'kubelet.service': ok",
            "start 'kubelet.service': ok",
            "start 'docker.service': ok",
        ],
        "remove log",
    );
    assert_originals(&tb, &orig_runc, "after remove");
    let removed = services(&tb);
    for (i, unit) in STAND_IN_UNITS.iter().enumerate() {
        assert_ne!(
            removed[i].1, installed[i].1,
            "{unit} was not restarted by remove"
        );
    }
    // and twice is fine, restarting nothing
    let log = helper_ok(&tb, &["remove"]);
    assert!(
        !log.contains("stop '"),
        "a second remove stopped something:\n{log}"
    );
    assert_eq!(services(&tb), removed);
}

#[test]
fn a_payload_that_fails_to_start_is_rolled_back() {
    let Some(tb) = testbed(test_name!(), BROKEN_KUBELET) else {
        return;
    };
    let orig_runc = tb.read("/usr/sbin/runc");
    let (out, log) = helper(&tb, &["install"]);
    assert!(
        !out.status.success(),
        "install of a broken payload succeeded:\n{log}"
    );
    assert!(
        log.contains("'kubelet.service'"),
        "the failure does not name the unit:\n{log}"
    );
    assert!(
        log.contains("journalctl -u kubelet.service"),
        "no journalctl pointer:\n{log}"
    );
    assert!(log.contains("rollback"), "no rollback in the log:\n{log}");
    // the journal shows the payload's attempt
    assert_rolled_back(&tb, &orig_runc, "payload kubelet: cannot run here");
}

/// Issue 10 item 4: a kubelet whose start job succeeds but that exits 3 s later (the
/// stand-in unit has `Restart=always`) is a failed start: rolled back, and the error names
/// the unit and what happened.
#[test]
fn a_kubelet_that_dies_after_starting_is_rolled_back() {
    let Some(tb) = testbed(test_name!(), LATE_DYING_KUBELET) else {
        return;
    };
    let orig_runc = tb.read("/usr/sbin/runc");
    let t0 = Instant::now();
    let (out, log) = helper(&tb, &["install"]);
    let took = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(2),
        "install of a kubelet that dies after 3 s:\n{log}"
    );
    assert_contains(
        &log,
        &[
            "start 'kubelet.service'",
            "'kubelet.service' did not stay up for 6s after it started",
            "rolled back",
            "the original binaries are back in place",
            "journalctl -u kubelet.service",
        ],
        "the log",
    );
    assert!(
        log.contains("auto-restart") || log.contains("main process changed"),
        "the log does not say why:\n{log}"
    );
    assert!(took.as_secs() < 60, "install took {took:?}");
    assert_rolled_back(&tb, &orig_runc, "payload kubelet: up, failing in 3 s");
}

/// Issue 10 item 10: a node where no dbus-daemon runs (dbus.service and dbus.socket masked):
/// install and remove reach systemd over its private socket, /run/systemd/private.
#[test]
fn without_a_system_bus_systemd_is_reached_over_its_private_socket() {
    let Some(mut tb) = node(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    for unit in ["dbus.service", "dbus.socket"] {
        tb.mask(unit);
    }
    tb.boot();
    assert_eq!(tb.unit_prop("dbus.socket", "LoadState"), "masked");
    assert_ne!(tb.unit_prop("dbus.service", "ActiveState"), "active");
    let out = tb.sh("test -S /run/dbus/system_bus_socket && echo there || echo none");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "none");
    let orig_runc = tb.read("/usr/sbin/runc");
    let booted = services(&tb);

    let log = helper_ok(&tb, &["install"]);
    assert!(
        log.contains("private socket /run/systemd/private"),
        "no word about the private socket:\n{log}"
    );
    assert_contains(
        &log,
        &["stop 'kubelet.service': ok", "start 'kubelet.service': ok"],
        "install log",
    );
    assert_content(&tb, "/usr/bin/kubelet", PAYLOAD_KUBELET, "after install");
    let installed = services(&tb);
    for (i, unit) in STAND_IN_UNITS.iter().enumerate() {
        assert_eq!(installed[i].0, "active", "{unit}\n{}", tb.journal(unit));
        assert_ne!(installed[i].1, booted[i].1, "{unit} was not restarted");
    }
    assert_eq!(main_cmdline(&tb, "kubelet.service"), "sleep 2000001");
    helper_ok(&tb, &["remove"]);
    assert_originals(&tb, &orig_runc, "after remove without a bus");
}

/// docker.service as in `write_stand_in_services`, with a stop that takes 4 s.
fn slow_stopping_docker(tb: &nspawn::Testbed) {
    tb.write(
        "/etc/systemd/system/docker.service",
        "[Unit]\nDescription=stand-in docker, slow to stop\nStartLimitIntervalSec=0\n\n\
         [Service]\nType=notify\nNotifyAccess=all\nExecStart=/usr/local/bin/stand-in-dockerd\n\
         ExecStop=/bin/sleep 4\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
}

/// Issue 10 item 5: a dropped SSH session (SIGHUP) while `install` runs in its own session
/// (`setsid`, as under `apt`) does not kill the transaction half-way: it finishes, the
/// services run, and the log says a signal arrived.
#[test]
fn sighup_while_docker_stops_does_not_cut_the_install_short() {
    let Some(mut tb) = node(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    slow_stopping_docker(&tb);
    tb.boot();
    tb.start_detached(&format!("{HELPER} install"));
    tb.wait_for_state("docker.service", "deactivating", 60);
    tb.sh_ok("kill -HUP $(pgrep -x k8s-nokmem)");
    let (rc, log) = tb.wait_detached(120);
    assert_eq!(rc, "0", "install after SIGHUP:\n{log}");
    assert!(
        log.contains("SIGHUP arrived during `k8s-nokmem install`"),
        "the signal is not logged:\n{log}"
    );
    assert!(
        !tb.path("/var/lib/k8s-nokmem/journal.json").exists(),
        "{log}"
    );
    assert_content(&tb, "/usr/bin/kubelet", PAYLOAD_KUBELET, "after install");
    tb.assert_active(&STAND_IN_UNITS, &format!("after the install:\n{log}"));
    assert_eq!(main_cmdline(&tb, "kubelet.service"), "sleep 2000001");
}

/// Run `k8s-nokmem <command>` with an abort failpoint armed (`place:abort`): it must die
/// there. Its log.
fn killed_at(tb: &nspawn::Testbed, command: &str, failpoint: &str) -> String {
    let out = tb.run_env(
        &[HELPER, command],
        &[("K8S_NOKMEM_FAILPOINT", failpoint)],
        std::time::Duration::from_secs(120),
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("failpoint: aborting"), "{log}");
    log
}

/// Issue 10 item 5: an install that dies between its diversions and its payload (abort, as
/// SIGKILL or the OOM killer would) leaves no /usr/bin/kubelet; at the next boot
/// k8s-nokmem-recover.service puts the originals back before docker and kubelet start,
/// and `verify` had reported the pending journal as a problem.
#[test]
fn an_install_killed_mid_way_is_resolved_at_boot_before_the_services() {
    let Some(mut tb) = testbed(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    let orig_runc = tb.read("/usr/sbin/runc");
    let unit = "k8s-nokmem-recover.service";
    tb.install_unit(unit);
    tb.symlink(
        &format!("/etc/systemd/system/sysinit.target.wants/{unit}"),
        &format!("/lib/systemd/system/{unit}"),
    );
    let log = killed_at(&tb, "install", "place:abort");
    assert!(
        !tb.path("/usr/bin/kubelet").exists(),
        "the kill was meant to leave no /usr/bin/kubelet:\n{log}"
    );
    let out = tb.run(&[HELPER, "verify", "--json"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("\"transaction\"") && report.contains("an interrupted install"),
        "verify does not report the pending journal:\n{}",
        nspawn::show(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", nspawn::show(&out));

    tb.reboot();
    let recover = tb.unit_props(
        unit,
        &["Result", "ExecMainStatus", "ExecMainExitTimestampMonotonic"],
    );
    let recover_log = tb.journal(unit);
    assert_eq!(recover["Result"], "success", "{recover:?}\n{recover_log}");
    assert!(
        recover_log.contains("interrupted install transaction resolved"),
        "{recover_log}"
    );
    let done: u64 = recover["ExecMainExitTimestampMonotonic"].parse().unwrap();
    assert!(done > 0, "{recover:?}");
    for svc in STAND_IN_UNITS {
        let p = tb.unit_props(svc, &["ExecMainStartTimestampMonotonic"]);
        let started: u64 = p["ExecMainStartTimestampMonotonic"].parse().unwrap();
        assert!(
            started > done,
            "{svc} started ({started}) before the recovery ended ({done})"
        );
    }
    assert!(!tb.path("/var/lib/k8s-nokmem/journal.json").exists());
    assert_originals(&tb, &orig_runc, "after the boot-time recovery");
    assert!(!tb.path("/var/lib/k8s-nokmem/state.json").exists());
    // the next install does what it was asked
    helper_ok(&tb, &["install"]);
    assert_content(
        &tb,
        "/usr/bin/kubelet",
        PAYLOAD_KUBELET,
        "after the next install",
    );
}

/// Issue 10 item 11: an active docker.socket is stopped before docker, so a client knocking
/// on the socket cannot start docker mid-swap, and started again right before docker (systemd
/// refuses to start a socket whose service already runs: "Socket service docker.service
/// already active, refusing"). The stand-in docker.service does not `Requires=` its socket,
/// the harder case (docker.io's does, and then starting docker starts the socket too).
#[test]
fn docker_socket_is_stopped_around_the_swap() {
    let Some(mut tb) = node(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    slow_stopping_docker(&tb);
    // unmask docker.socket: a stand-in that socket-activates the stand-in docker
    let _ = std::fs::remove_file(tb.path("/etc/systemd/system/docker.socket"));
    tb.write(
        "/etc/systemd/system/docker.socket",
        "[Unit]\nDescription=stand-in docker socket\n\n[Socket]\nListenStream=/run/stand-in-docker.sock\n\n\
         [Install]\nWantedBy=sockets.target\n",
        0o644,
    );
    tb.symlink(
        "/etc/systemd/system/sockets.target.wants/docker.socket",
        "/etc/systemd/system/docker.socket",
    );
    tb.boot();
    assert_eq!(tb.unit_prop("docker.socket", "ActiveState"), "active");
    tb.start_detached(&format!("{HELPER} install"));
    tb.wait_for_state("docker.service", "deactivating", 60);
    let socket_meanwhile = tb.unit_prop("docker.socket", "ActiveState");
    let (rc, log) = tb.wait_detached(120);
    assert_eq!(rc, "0", "{log}");
    assert_eq!(
        socket_meanwhile, "inactive",
        "docker.socket listened while docker stopped:\n{log}"
    );
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("the log lacks \"{what}\":\n{log}"))
    };
    assert!(
        at("stop 'kubelet.service': ok") < at("stop 'docker.socket': ok")
            && at("stop 'docker.socket': ok") < at("stop 'docker.service': ok")
            && at("start 'docker.socket': ok") < at("start 'docker.service': ok")
            && at("start 'docker.service': ok") < at("start 'kubelet.service': ok"),
        "order:\n{log}"
    );
    assert_eq!(tb.unit_prop("docker.socket", "ActiveState"), "active");
    tb.assert_active(&STAND_IN_UNITS, "after the install");
    helper_ok(&tb, &["remove"]);
    assert_eq!(tb.unit_prop("docker.socket", "ActiveState"), "active");
}

/// A testbed (not booted) whose payload kubelet is a real binary named kubelet (comm
/// "kubelet"): a copy of sleep, which kubelet.service runs; and sleep's bytes.
fn sleep_kubelet_testbed(test: &str) -> Option<(nspawn::Testbed, Vec<u8>)> {
    let tb = nspawn::stand_in_node(test)?;
    let sleep = tb.read("/usr/bin/sleep");
    write_payload(&tb, PAYLOAD_RUNC, &sleep);
    tb.write(
        "/etc/systemd/system/kubelet.service",
        "[Unit]\nDescription=stand-in kubelet\nAfter=docker.service\n\n\
         [Service]\nExecStart=/usr/bin/kubelet 3000003\nRestart=always\nRestartSec=10\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    Some((tb, sleep))
}

/// Issue 10 item 11: k8s-nokmem-verify.service runs confined (bounded capabilities, no
/// network, /var and /sys read-only except its outputs) and still does its job: it reads
/// the running kubelet's /proc/PID/exe (root, with every capability) in init's mount
/// namespace, writes /run/k8s-nokmem/verify.json and the Prometheus textfile.
#[test]
fn the_verify_unit_runs_confined_and_still_sees_the_kubelet() {
    let Some((mut tb, _)) = sleep_kubelet_testbed(test_name!()) else {
        return;
    };
    tb.install_helper(&format!("{CONFIG}\n[verify]\nboot-wait = 1s\n"));
    let unit = "k8s-nokmem-verify.service";
    tb.install_unit(unit);
    tb.write("/var/lib/node_exporter/textfile_collector/.keep", "", 0o644);
    tb.boot();
    helper_ok(&tb, &["install"]);
    let pid = tb.unit_prop("kubelet.service", "MainPID");
    assert_eq!(
        tb.sh_ok(&format!("cat /proc/{pid}/comm")).trim(),
        "kubelet",
        "the stand-in kubelet's process name"
    );

    let props = tb.unit_props(
        unit,
        &[
            "CapabilityBoundingSet",
            "PrivateNetwork",
            "ReadOnlyPaths",
            "ProtectSystem",
        ],
    );
    assert_eq!(props["PrivateNetwork"], "yes", "{props:?}");
    let caps = props["CapabilityBoundingSet"].to_lowercase();
    assert!(
        caps.contains("cap_sys_ptrace")
            && !caps.contains("cap_sys_admin")
            && !caps.contains("cap_net_admin"),
        "{props:?}"
    );
    assert!(props["ReadOnlyPaths"].contains("/var"), "{props:?}");

    // a oneshot: `systemctl start` returns when it ran (it fails on this host's kernel-wide
    // kmem, a problem, exit 1: what counts here is what it could see and write)
    let _ = tb.run(&["systemctl", "start", unit]);
    let log = tb.journal(unit);
    // /run is the container's own tmpfs: read it from inside
    let state = tb.sh_ok("cat /run/k8s-nokmem/verify.json");
    let report: serde_json::Value = serde_json::from_str(&state)
        .unwrap_or_else(|e| panic!("verify.json is not JSON ({e}):\n{log}"));
    let checks = report["checks"].as_array().expect("checks");
    let check = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no '{name}' check in verify.json:\n{report:#}"))
    };
    let kubelet = check("running-kubelet");
    assert_eq!(kubelet["status"], "ok", "{kubelet:#}\n{log}");
    assert!(
        kubelet["summary"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("pid {pid}")),
        "{kubelet:#}"
    );
    // found as systemd's MainPID, over the bus the confined unit still reaches
    assert_eq!(
        kubelet["evidence"][0]["source"], "MainPID of 'kubelet.service'",
        "{kubelet:#}"
    );
    for name in ["payload", "diversions"] {
        assert_eq!(check(name)["status"], "ok", "{:#}\n{log}", check(name));
    }
    let prom = String::from_utf8_lossy(
        &tb.read("/var/lib/node_exporter/textfile_collector/k8s_nokmem.prom"),
    )
    .into_owned();
    assert!(prom.contains("k8s_nokmem_"), "{prom}");
    assert!(
        !log.contains("Permission denied") && !log.contains("Read-only file system"),
        "{log}"
    );

    // and CAP_SYS_PTRACE is what lets it see the kubelet: without it, no kubelet is visible
    tb.write(
        &format!("/etc/systemd/system/{unit}.d/no-ptrace.conf"),
        "[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE CAP_SYSLOG\n",
        0o644,
    );
    tb.sh_ok("systemctl daemon-reload");
    let _ = tb.run(&["systemctl", "start", unit]);
    let state = tb.sh_ok("cat /run/k8s-nokmem/verify.json");
    let report: serde_json::Value = serde_json::from_str(&state).unwrap();
    let kubelet = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "running-kubelet")
        .cloned()
        .unwrap();
    assert_eq!(
        kubelet["status"], "skipped",
        "without CAP_SYS_PTRACE: {kubelet:#}"
    );
}

/// The running kubelet is what systemd runs: kubelet.service's MainPID. A process named
/// kubelet that another user runs, or that root runs outside the unit, is not it (either
/// would otherwise make verify call the payload "not running" and ask for a reboot).
#[test]
fn the_running_kubelet_is_the_units_main_process_not_a_process_name() {
    let Some((mut tb, sleep)) = sleep_kubelet_testbed(test_name!()) else {
        return;
    };
    tb.install_helper(CONFIG);
    // impostors: a copy of sleep named kubelet, one byte longer (not the payload)
    let mut impostor = sleep.clone();
    impostor.push(0);
    tb.write("/opt/impostor/kubelet", &impostor, 0o755);
    tb.boot();
    helper_ok(&tb, &["install"]);
    let pid = tb.unit_prop("kubelet.service", "MainPID");
    tb.sh_ok(
        "setsid -f setpriv --reuid=65534 --regid=65534 --clear-groups /opt/impostor/kubelet 3000004 </dev/null >/dev/null 2>&1; \
         setsid -f /opt/impostor/kubelet 3000005 </dev/null >/dev/null 2>&1; sleep 0.3",
    );
    let impostors = tb.sh_ok("pgrep -x kubelet | sort -n | tr '\\n' ' '");
    assert_eq!(
        impostors.split_whitespace().count(),
        3,
        "the unit's kubelet and two impostors: {impostors}"
    );

    let (out, log) = helper(&tb, &["verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify --json is not JSON ({e}):\n{log}"));
    let kubelet = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "running-kubelet")
        .cloned()
        .unwrap_or_else(|| panic!("no running-kubelet check:\n{report:#}"));
    assert_eq!(kubelet["status"], "ok", "{kubelet:#}\n{log}");
    let evidence = kubelet["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 1, "only the unit's process: {kubelet:#}");
    assert_eq!(evidence[0]["pid"].to_string(), pid, "{kubelet:#}");
    assert_eq!(
        evidence[0]["source"], "MainPID of 'kubelet.service'",
        "{kubelet:#}"
    );
    assert_ne!(report["action"], "reboot", "{report:#}");
}

#[test]
fn masked_and_missing_units_are_left_alone() {
    let Some(mut tb) = node(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    // no kubelet unit on this node; docker masked
    let _ = std::fs::remove_file(tb.path("/etc/systemd/system/kubelet.service"));
    let _ = std::fs::remove_file(
        tb.path("/etc/systemd/system/multi-user.target.wants/kubelet.service"),
    );
    let _ =
        std::fs::remove_file(tb.path("/etc/systemd/system/multi-user.target.wants/docker.service"));
    tb.mask("docker.service");
    tb.boot();
    assert_eq!(tb.unit_prop("kubelet.service", "LoadState"), "not-found");
    assert_eq!(tb.unit_prop("docker.service", "LoadState"), "masked");

    let log = helper_ok(&tb, &["install"]);
    assert!(
        log.contains("'kubelet.service'") && log.contains("does not exist"),
        "missing unit not noted:\n{log}"
    );
    assert!(
        log.contains("'docker.service'") && log.contains("masked"),
        "masked unit not noted:\n{log}"
    );
    assert_content(&tb, "/usr/bin/kubelet", PAYLOAD_KUBELET, "after install");
    assert_eq!(diversions(&tb), vec![KUBELET_LINE, RUNC_LINE]);
    assert_eq!(tb.unit_prop("docker.service", "LoadState"), "masked");
    assert_eq!(tb.unit_prop("docker.service", "ActiveState"), "inactive");
    let log = helper_ok(&tb, &["remove"]);
    assert!(diversions(&tb).is_empty(), "{log}");
}

#[test]
fn auto_detected_runc_is_the_one_docker_runs() {
    let Some(tb) = testbed(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    std::fs::remove_file(tb.path("/etc/k8s-nokmem/k8s-nokmem.conf")).unwrap();
    helper_ok(&tb, &["install"]);
    // what docker.service (and a shell) would run as `runc`
    let runc = tb.sh_ok("readlink -f \"$(command -v runc)\"");
    assert_content(
        &tb,
        runc.trim(),
        PAYLOAD_RUNC,
        "the runc found in $PATH after install",
    );
    helper_ok(&tb, &["remove"]);
}

/// A system bus that cannot be reached stops install before any change; a policy-rc.d that
/// forbids (exit 101) leaves the services running while the files are swapped.
#[test]
fn no_bus_changes_nothing_and_policy_rc_d_keeps_services_running() {
    let Some(tb) = testbed(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    let orig_runc = tb.read("/usr/sbin/runc");
    let booted = services(&tb);

    let out = tb.run_env(
        &[HELPER, "install"],
        &[(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/run/k8s-nokmem-test/no-bus",
        )],
        std::time::Duration::from_secs(60),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    eprint!("{log}");
    assert_eq!(out.status.code(), Some(2), "install without a bus:\n{log}");
    assert!(
        log.contains("D-Bus") && log.contains("nothing was changed"),
        "{log}"
    );
    assert_originals(&tb, &orig_runc, "after install without a bus");
    assert_eq!(services(&tb), booted, "a service was touched without a bus");

    tb.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755);
    let log = helper_ok(&tb, &["install"]);
    assert!(
        log.contains("keep"),
        "no word about the old binaries:\n{log}"
    );
    assert_content(
        &tb,
        "/usr/bin/kubelet",
        PAYLOAD_KUBELET,
        "after install under policy-rc.d 101",
    );
    assert_eq!(diversions(&tb), vec![KUBELET_LINE, RUNC_LINE]);
    assert_eq!(
        services(&tb),
        booted,
        "policy-rc.d 101, yet a service was restarted:\n{log}"
    );
    assert_eq!(
        main_cmdline(&tb, "kubelet.service"),
        "sleep 1000001",
        "kubelet keeps the old binary"
    );
    helper_ok(&tb, &["remove"]);
    assert_originals(&tb, &orig_runc, "after remove under policy-rc.d 101");
    assert_eq!(
        services(&tb),
        booted,
        "policy-rc.d 101, yet remove restarted a service"
    );
}

#[test]
fn apply_reboot_swaps_with_no_service_restarted_and_flags_reboot_required() {
    let Some(tb) = testbed(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    let (log, booted) = run_touching_no_service(&tb, "install", Some("reboot"));
    assert_content(&tb, "/usr/bin/kubelet", PAYLOAD_KUBELET, "after install");
    assert_content(&tb, "/usr/sbin/runc", PAYLOAD_RUNC, "after install");
    assert_eq!(diversions(&tb), vec![KUBELET_LINE, RUNC_LINE]);
    assert_eq!(
        main_cmdline(&tb, "kubelet.service"),
        "sleep 1000001",
        "the running kubelet keeps its old file until the reboot"
    );
    assert_reboot_flagged_once(&tb, &log);

    // an hourly verify run and a re-install: still one line, nothing restarted
    tb.run(&[HELPER, "verify", "--state"]);
    helper_ok(&tb, &["install"]);
    assert_eq!(tb.sh_ok("cat /run/reboot-required.pkgs"), "k8s-nokmem\n");
    assert_eq!(services(&tb), booted);
}

/// Issue 15 item 4: a remove killed once it stopped the services (`unplace:abort`); docker
/// is started again meanwhile and now hangs in its stop (`ExecStop` longer than
/// `[services] timeout`). `recover` fails on that stop and keeps the journal, but starts
/// every service the remove stopped; once docker stops normally, `recover` finishes the
/// remove.
#[test]
fn a_recovery_whose_stop_times_out_still_starts_what_the_remove_stopped() {
    let Some(tb) = testbed(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    let orig_runc = tb.read("/usr/sbin/runc");
    helper_ok(&tb, &["install"]);
    killed_at(&tb, "remove", "unplace:abort");
    for unit in STAND_IN_UNITS {
        assert_ne!(
            tb.unit_prop(unit, "ActiveState"),
            "active",
            "{unit} after the killed remove"
        );
    }
    // docker comes back (socket activation, an operator) and its stop now takes 8 s,
    // against a 6 s timeout
    tb.write(
        "/etc/systemd/system/docker.service.d/hang.conf",
        "[Service]\nExecStop=/bin/sleep 8\nTimeoutStopSec=60\n",
        0o644,
    );
    tb.sh_ok("systemctl daemon-reload && systemctl start docker.service");
    tb.write_config(CONFIG.replace("timeout = 30s", "timeout = 6s"));
    let (out, log) = helper(&tb, &["recover"]);
    assert_eq!(out.status.code(), Some(2), "recover:\n{log}");
    assert_contains(
        &log,
        &[
            "recover [3/10] stop 'docker.service': FAILED",
            "recover [8/10] start 'docker.service': ok",
            "recover [9/10] start 'kubelet.service': ok",
            "step 3/10 'stop docker.service' failed; the services it stopped were started again ('docker.service', 'kubelet.service')",
            "did not finish within 6s",
        ],
        "the log",
    );
    tb.assert_active(
        &STAND_IN_UNITS,
        &format!("after the failed recovery\n{log}"),
    );
    assert!(tb.path("/var/lib/k8s-nokmem/journal.json").exists());
    // docker stops in time again: the next recover finishes the remove
    tb.sh_ok("rm -r /etc/systemd/system/docker.service.d && systemctl daemon-reload");
    let log = helper_ok(&tb, &["recover"]);
    assert!(
        log.contains("interrupted remove transaction resolved"),
        "{log}"
    );
    assert!(!tb.path("/var/lib/k8s-nokmem/journal.json").exists());
    assert_originals(&tb, &orig_runc, "after the recovered remove");
}

/// A kubelet that cannot run yet (kubeadm's node before `kubeadm join`: no config), under
/// the stand-in unit's `Restart=always` / `RestartSec=10`: it crash-loops.
const UNJOINED_KUBELET: &[u8] =
    b"#!/bin/sh\necho 'kubelet: failed to load kubelet config file /var/lib/kubelet/config.yaml' >&2\nexit 1\n";
/// The payload kubelet on that node: it cannot run either, until the join.
const UNJOINED_PAYLOAD: &[u8] =
    b"#!/bin/sh\necho 'payload kubelet: failed to load kubelet config file' >&2\nexit 1\n";

/// A crash-looping kubelet as it is for a moment after each restart: up for 2 s, then it
/// fails (restarted 1 s later, by a drop-in).
const UNJOINED_SLOW_KUBELET: &[u8] =
    b"#!/bin/sh\necho 'kubelet: starting; no config yet' >&2\nsleep 2\nexit 1\n";
const UNJOINED_SLOW_PAYLOAD: &[u8] =
    b"#!/bin/sh\necho 'payload kubelet: failed to load kubelet config file' >&2\nsleep 2\nexit 1\n";

/// Issue 15 item 10: on a node whose kubelet crash-loops before install (kubeadm before
/// `kubeadm join`), install succeeds: the payload is in place and diverted, kubelet is back
/// in its crash loop (running the payload), docker is up, and the log says kubelet was
/// failing before and is no worse. Remove restores the originals the same way.
#[test]
fn a_kubelet_crash_looping_before_install_does_not_block_it() {
    crash_looping_kubelet_case(test_name!(), UNJOINED_KUBELET, UNJOINED_PAYLOAD, None);
}

/// Issue 15 item 10: the same, with install run in the moment the crash-looping kubelet is
/// `active` after a restart: it is watched until it has been up for 5 s, falls back into
/// its loop meanwhile, and counts as failing.
#[test]
fn a_kubelet_caught_up_between_two_crashes_does_not_block_install() {
    crash_looping_kubelet_case(
        test_name!(),
        UNJOINED_SLOW_KUBELET,
        UNJOINED_SLOW_PAYLOAD,
        Some("RestartSec=1"),
    );
}

fn crash_looping_kubelet_case(test: &str, kubelet: &[u8], payload: &[u8], restart: Option<&str>) {
    let Some(mut tb) = node(test, payload) else {
        return;
    };
    tb.write("/usr/bin/kubelet", kubelet, 0o755);
    if let Some(restart) = restart {
        tb.write(
            "/etc/systemd/system/kubelet.service.d/restart.conf",
            format!("[Service]\n{restart}\n"),
            0o644,
        );
    }
    tb.boot();
    tb.wait_for_restarting("kubelet.service", 30);
    if restart.is_some() {
        // right after a restart: active, and about to fail again
        tb.wait_for_state("kubelet.service", "active", 30);
    }
    assert_eq!(tb.unit_prop("docker.service", "ActiveState"), "active");
    let orig_runc = tb.read("/usr/sbin/runc");

    let (out, log) = helper(&tb, &["install"]);
    assert_eq!(out.status.code(), Some(0), "install:\n{log}");
    let mut wants = vec![
        "'kubelet.service' is failing before the swap (",
        "stop 'kubelet.service': ok",
        "start 'kubelet.service': ok",
        "6 s after its start: no worse than before",
        "'docker.service' stayed up for 6 s, and 'kubelet.service', failing before the swap, no worse",
    ];
    if restart.is_some() {
        wants.push("'kubelet.service' became active ");
    } else {
        wants.push("'kubelet.service' was activating/auto-restart before the swap and is activating/auto-restart 6 s after its start");
    }
    assert_contains(&log, &wants, "install log");
    assert_content(&tb, "/usr/bin/kubelet", payload, "after install");
    assert_content(&tb, "/usr/sbin/runc", PAYLOAD_RUNC, "after install");
    assert_content(&tb, "/usr/bin/kubelet.distrib", kubelet, "after install");
    assert_eq!(diversions(&tb), vec![KUBELET_LINE, RUNC_LINE]);
    assert!(tb.path("/var/lib/k8s-nokmem/state.json").exists());
    assert!(!tb.path("/var/lib/k8s-nokmem/journal.json").exists());
    assert_eq!(tb.unit_prop("docker.service", "ActiveState"), "active");
    // back in its crash loop, now on the payload: not worse
    tb.wait_for_restarting("kubelet.service", 30);
    let journal = tb.journal("kubelet.service");
    assert!(
        journal.contains("payload kubelet: failed to load kubelet config file"),
        "kubelet did not run the payload:\n{journal}"
    );

    let (out, log) = helper(&tb, &["remove"]);
    assert_eq!(out.status.code(), Some(0), "remove:\n{log}");
    assert!(log.contains("no worse than before"), "{log}");
    assert_content(&tb, "/usr/bin/kubelet", kubelet, "after remove");
    assert_content(&tb, "/usr/sbin/runc", &orig_runc, "after remove");
    assert!(diversions(&tb).is_empty(), "{:?}", diversions(&tb));
    assert_eq!(tb.unit_prop("docker.service", "ActiveState"), "active");
    tb.wait_for_restarting("kubelet.service", 30);
}

/// `[services] apply = reboot` governs `apt remove` too (issue 17): the originals go back
/// underneath the running services, none is stopped or started, the running kubelet keeps
/// the payload until the reboot, and the reboot is flagged once.
#[test]
fn apply_reboot_removes_with_no_service_restarted_and_flags_reboot_required() {
    let Some(tb) = testbed(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    let orig_runc = tb.read("/usr/sbin/runc");
    helper_ok(&tb, &["install"]);
    assert_eq!(
        main_cmdline(&tb, "kubelet.service"),
        "sleep 2000001",
        "install (apply = restart) runs the payload"
    );
    // whatever install's own rule flagged, the flag must come from remove
    tb.sh_ok("rm -f /run/reboot-required /run/reboot-required.pkgs");
    let (log, _) = run_touching_no_service(&tb, "remove", Some("reboot"));
    assert!(
        log.contains("kubelet.service, docker.service keep running k8s-nokmem's binaries until the node reboots"),
        "{log}"
    );
    assert_content(
        &tb,
        "/usr/bin/kubelet",
        nspawn::ORIG_KUBELET,
        "after remove",
    );
    assert_content(&tb, "/usr/sbin/runc", &orig_runc, "after remove");
    assert!(diversions(&tb).is_empty(), "{:?}", diversions(&tb));
    assert_eq!(
        main_cmdline(&tb, "kubelet.service"),
        "sleep 2000001",
        "the running kubelet keeps the payload until the reboot"
    );
    assert_reboot_flagged_once(&tb, &log);
}

/// `[services] apply = auto` (the default) on this machine's kernel (>= 4.6: kmem is
/// kernel-wide until booted with the parameter, whatever the binaries): a restart would
/// change nothing but the containers, so install stops nothing and says why (issue 17). The
/// node has no grub: a reboot would not bring the parameter, so none is flagged; once
/// grub's files carry it (drop-in, grub.cfg), the same install flags the reboot that boots
/// with it. Where auto restarts (Linux < 4.6, clean kubepods) and the other kernel cases
/// are tested on recorded nodes in src/swap/tests.rs.
#[test]
fn apply_auto_on_a_kernel_wide_kmem_kernel_swaps_with_no_service_restarted() {
    let Some(tb) = testbed(test_name!(), PAYLOAD_KUBELET) else {
        return;
    };
    // the shipped default: no apply line at all
    let (log, booted) = run_touching_no_service(&tb, "install", None);
    assert!(
        log.contains("[services] apply = auto: no service stopped, no reboot for the services: ")
            && log.contains(
                "whatever runc and kubelet write; a restart would only kill the containers"
            ),
        "{log}"
    );
    assert_content(&tb, "/usr/bin/kubelet", PAYLOAD_KUBELET, "after install");
    assert_eq!(
        tb.sh_ok("ls /run/reboot-required /run/reboot-required.pkgs 2>/dev/null || true"),
        "",
        "no grub: a reboot would not bring the parameter, none is flagged:\n{log}"
    );
    // grub, and a grub.cfg that carries the parameter: the next boot has it
    tb.write(
        "/etc/default/grub",
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n",
        0o644,
    );
    tb.write(
        "/boot/grub/grub.cfg",
        "menuentry 'Debian' {\n\tlinux /boot/vmlinuz root=/dev/sda1 ro quiet cgroup.memory=nokmem\n}\n",
        0o644,
    );
    let log = helper_ok(&tb, &["install"]);
    assert_eq!(services(&tb), booted, "a service was restarted");
    assert_eq!(
        tb.sh_ok("cat /run/reboot-required.pkgs"),
        "k8s-nokmem\n",
        "the next boot carries the parameter: flagged once:\n{log}"
    );
}
