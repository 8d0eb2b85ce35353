//! The real D-Bus client against a real systemd: the testbed root booted with
//! `systemd-nspawn -b` (tests/common/nspawn.rs), stand-in `kubelet.service` (Type=simple) and
//! `docker.service` (Type=notify) units, plus units that are missing, masked, crash right
//! after start, fail their start job, or never get ready.
//!
//! `client_in_a_booted_systemd` (host) boots the testbed, copies this test binary in and runs
//! the ignored `inside_client_scenarios` there, which drives `k8s_nokmem::systemd` directly;
//! the host side then checks the units with `systemctl show` and runs `k8s-nokmem status`.
//!
//! Needs root and the testbed root (`scripts/testbed-root.sh`); without them it fails (skipped under
//! `K8S_NOKMEM_ALLOW_SKIP=1`).

#[path = "common/nspawn.rs"]
mod nspawn;

use std::time::{Duration, Instant};

use k8s_nokmem::systemd::{ServiceAction, ServiceManager, Started, SystemdClient, SystemdError};

const INSIDE_ENV: &str = "K8S_NOKMEM_INSIDE_TESTBED";
const T: Duration = Duration::from_secs(20);

fn write_misbehaving_units(tb: &nspawn::Testbed) {
    tb.write(
        "/usr/local/bin/crash",
        "#!/bin/sh\necho 'stand-in: cannot run' >&2\nexit 3\n",
        0o755,
    );
    tb.write(
        "/etc/systemd/system/crashes.service",
        "[Service]\nExecStart=/usr/local/bin/crash\nRestart=always\nRestartSec=10\n",
        0o644,
    );
    // item 4 of issue 10: up when its start job ends, gone 3 s later, restarted
    tb.write(
        "/etc/systemd/system/dies-later.service",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'sleep 3; exit 1'\nRestart=always\n",
        0o644,
    );
    tb.write(
        "/etc/systemd/system/fails.service",
        "[Service]\nType=notify\nExecStart=/usr/local/bin/crash\n",
        0o644,
    );
    tb.mask("masked-thing.service");
    tb.write(
        "/etc/systemd/system/oneshot.service",
        "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        0o644,
    );
    tb.write(
        "/etc/systemd/system/noise.service",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
        0o644,
    );
    tb.write(
        "/etc/systemd/system/slow.service",
        "[Service]\nType=notify\nExecStart=/bin/sleep 600\nTimeoutStartSec=600\n",
        0o644,
    );
}

#[test]
fn client_in_a_booted_systemd() {
    let Some(root) = nspawn::root_or_skip("client_in_a_booted_systemd") else {
        return;
    };
    let started = Instant::now();
    let mut tb = nspawn::Testbed::new(&root);
    nspawn::write_stand_in_services(&tb);
    write_misbehaving_units(&tb);
    tb.boot();
    for unit in ["kubelet.service", "docker.service"] {
        assert_eq!(
            tb.unit_prop(unit, "ActiveState"),
            "active",
            "{unit} after boot"
        );
    }
    let exe = std::env::current_exe().unwrap();
    tb.copy_in(&exe, "/usr/local/bin/systemd-test", 0o755);
    let out = tb.run_env(
        &[
            "/usr/local/bin/systemd-test",
            "--exact",
            "inside_client_scenarios",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ],
        &[(INSIDE_ENV, "1"), ("RUST_LOG", "k8s_nokmem=trace")],
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "the client scenarios failed inside the testbed:\n{}",
        nspawn::show(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("D-Bus <- JobRemoved("),
        "no trace of JobRemoved:\n{stderr}"
    );

    // the state the scenarios left, as systemctl sees it
    for unit in ["kubelet.service", "docker.service"] {
        let p = tb.unit_props(unit, &["ActiveState", "SubState", "ActiveEnterTimestamp"]);
        assert_eq!(p["ActiveState"], "active", "{unit}: {p:?}");
        assert!(!p["ActiveEnterTimestamp"].is_empty(), "{unit}: {p:?}");
    }
    assert_eq!(tb.unit_prop("masked-thing.service", "LoadState"), "masked");
    assert_eq!(tb.unit_prop("crashes.service", "ActiveState"), "inactive");

    status_reads_services(&tb);
    eprintln!(
        "client_in_a_booted_systemd: {} ms",
        started.elapsed().as_millis()
    );
}

/// `k8s-nokmem status --json` inside reads the services over D-Bus.
fn status_reads_services(tb: &nspawn::Testbed) {
    tb.copy_in(
        env!("CARGO_BIN_EXE_k8s-nokmem"),
        "/usr/sbin/k8s-nokmem",
        0o755,
    );
    let out = tb.run(&["k8s-nokmem", "status", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", nspawn::show(&out)));
    let services = report["services"]
        .as_array()
        .unwrap_or_else(|| panic!("status --json has no services:\n{}", nspawn::show(&out)));
    for unit in ["kubelet.service", "docker.service"] {
        let s = services
            .iter()
            .find(|s| s["unit"] == unit)
            .unwrap_or_else(|| panic!("status has no '{unit}':\n{stdout}"));
        assert_eq!(s["active_state"], "active", "{unit} in status:\n{stdout}");
        assert_eq!(s["load_state"], "loaded", "{unit} in status:\n{stdout}");
        let since = tb.unit_prop(unit, "ActiveEnterTimestampMonotonic");
        assert!(
            s["active_enter_usec"].as_u64().unwrap_or(0) > 0,
            "{unit}: {s} ({since})"
        );
        let pid = tb.unit_prop(unit, "MainPID");
        assert_eq!(
            s["main_pid"].to_string(),
            pid,
            "{unit} main pid in status:\n{stdout}"
        );
    }
    let text = tb.run(&["k8s-nokmem", "status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("kubelet.service: active/running"),
        "status text lacks the kubelet line:\n{text}"
    );
}

// ---- inside the testbed ------------------------------------------------------------------

fn systemctl_show(unit: &str, prop: &str) -> String {
    let out = std::process::Command::new("systemctl")
        .args(["show", "-p", prop, "--value", unit])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn timestamp(unit: &str) -> String {
    systemctl_show(unit, "ActiveEnterTimestampMonotonic")
}

#[test]
#[ignore = "runs inside the nspawn testbed, started by client_in_a_booted_systemd"]
fn inside_client_scenarios() {
    if std::env::var(INSIDE_ENV).as_deref() != Ok("1") {
        // `--include-ignored` on the host: nothing to do here
        eprintln!("inside_client_scenarios: not inside the testbed; client_in_a_booted_systemd runs it there");
        return;
    }
    let _ = env_logger::builder().is_test(true).try_init();
    let sd = SystemdClient::system().expect("connect to the testbed's system bus");

    // 1. stop kubelet then docker: when stop returns the job is over and the unit is down
    let before = [timestamp("kubelet.service"), timestamp("docker.service")];
    for unit in ["kubelet.service", "docker.service"] {
        let t0 = Instant::now();
        let action = sd
            .stop(unit, T)
            .unwrap_or_else(|e| panic!("stop {unit}: {e}"));
        assert_eq!(
            action,
            ServiceAction::Done {
                job_result: "done".into()
            },
            "stop {unit}"
        );
        assert_eq!(
            systemctl_show(unit, "ActiveState"),
            "inactive",
            "{unit} right after stop"
        );
        let s = sd.state(unit).unwrap();
        assert_eq!(
            (s.active_state.as_str(), s.main_pid),
            ("inactive", 0),
            "{unit}: {s:?}"
        );
        eprintln!("scenario: stop {unit}: {} ms", t0.elapsed().as_millis());
    }
    // 2. start docker (notify: ready when the job ends) then kubelet (simple), then both
    //    stay up for the settle window, watched together
    let mut started = Vec::new();
    for unit in ["docker.service", "kubelet.service"] {
        let t0 = Instant::now();
        let action = sd
            .start(unit, T)
            .unwrap_or_else(|e| panic!("start {unit}: {e}"));
        assert_eq!(
            action,
            ServiceAction::Done {
                job_result: "done".into()
            },
            "start {unit}"
        );
        assert_eq!(
            systemctl_show(unit, "ActiveState"),
            "active",
            "{unit} right after start"
        );
        let s = sd.state(unit).unwrap();
        assert_eq!(
            s.main_pid.to_string(),
            systemctl_show(unit, "MainPID"),
            "{unit}"
        );
        assert!(s.active_enter_usec > 0, "{unit}: {s:?}");
        started.push(Started::now(s));
        eprintln!("scenario: start {unit}: {} ms", t0.elapsed().as_millis());
    }
    let t0 = Instant::now();
    sd.settle(&started, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("settle of docker and kubelet: {e}"));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "the 2 s window is paid once for both units: {took:?}"
    );
    let after = [timestamp("kubelet.service"), timestamp("docker.service")];
    assert_ne!(before[0], after[0], "kubelet restarted");
    assert_ne!(before[1], after[1], "docker restarted");

    // 3. starting an active unit restarts nothing and does not wait for the settle time
    let t0 = Instant::now();
    sd.start("kubelet.service", T).unwrap();
    assert_eq!(
        timestamp("kubelet.service"),
        after[0],
        "an active kubelet was restarted"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );

    // 4. a missing unit: skipped, with a note that names it
    for result in [
        sd.stop("nonexistent.service", T),
        sd.start("nonexistent.service", T),
    ] {
        let action = result.unwrap();
        assert_eq!(action, ServiceAction::Missing);
        let note = action.note("nonexistent.service").unwrap();
        assert!(
            note.contains("'nonexistent.service' does not exist"),
            "{note}"
        );
    }
    assert_eq!(
        sd.state("nonexistent.service").unwrap().load_state,
        "not-found"
    );

    // 5. a masked unit: left alone
    assert_eq!(
        sd.stop("masked-thing.service", T).unwrap(),
        ServiceAction::Masked
    );
    assert_eq!(
        sd.start("masked-thing.service", T).unwrap(),
        ServiceAction::Masked
    );
    let s = sd.state("masked-thing.service").unwrap();
    assert_eq!(
        (s.load_state.as_str(), s.active_state.as_str()),
        ("masked", "inactive")
    );

    // 6. a simple unit whose binary exits at once: the job is done, but it is not running
    //    (right after the job, or within the settle window)
    let err = match sd.start("crashes.service", T) {
        Err(e) => e,
        Ok(_) => {
            let s = sd.state("crashes.service").unwrap();
            sd.settle(&[Started::now(s)], Duration::from_secs(2))
                .unwrap_err()
        }
    };
    match &err {
        SystemdError::NotActive {
            unit,
            active_state,
            sub_state,
            ..
        }
        | SystemdError::Settle {
            unit,
            active_state,
            sub_state,
            ..
        } => {
            assert_eq!(unit, "crashes.service");
            assert!(
                (active_state.as_str(), sub_state.as_str()) == ("activating", "auto-restart")
                    || active_state == "failed",
                "{err}"
            );
        }
        other => panic!("crashes.service: expected NotActive or Settle, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("'crashes.service'") && msg.contains("journalctl -u crashes.service"),
        "{msg}"
    );
    assert!(msg.contains("exit-code"), "{msg}");
    sd.stop("crashes.service", T).unwrap();

    // 6b. a simple unit that runs 3 s, then exits (Restart=always): its start is fine, the
    //     settle window sees it go
    let t0 = Instant::now();
    sd.start("dies-later.service", T).unwrap();
    let s = sd.state("dies-later.service").unwrap();
    assert_eq!(s.active_state, "active", "{s:?}");
    let err = sd
        .settle(&[Started::now(s)], Duration::from_secs(8))
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(&err, SystemdError::Settle { unit, .. } if unit == "dies-later.service"),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(6),
        "seen when it exited, not at the end of the window: {took:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("'dies-later.service' did not stay up for 8s after it started")
            && msg.contains("journalctl -u dies-later.service"),
        "{msg}"
    );
    sd.stop("dies-later.service", T).unwrap();

    // 7. a notify unit whose start job fails: job result and unit Result named
    let err = sd.start("fails.service", T).unwrap_err();
    match &err {
        SystemdError::JobFailed {
            job_result,
            unit_result,
            ..
        } => {
            assert_eq!(
                (job_result.as_str(), unit_result.as_str()),
                ("failed", "exit-code"),
                "{err}"
            );
        }
        other => panic!("fails.service: expected JobFailed, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("start job for 'fails.service' ended with result 'failed'"),
        "{msg}"
    );
    assert!(msg.contains("journalctl -u fails.service"), "{msg}");

    // 8. a job that does not end within the timeout
    let t0 = Instant::now();
    let err = sd
        .start("slow.service", Duration::from_millis(700))
        .unwrap_err();
    assert!(
        matches!(err, SystemdError::Timeout { verb: "start", .. }),
        "{err:?}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(700) && t0.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains("did not finish within"), "{err}");
    // the queued start is replaced by the stop
    assert_eq!(
        sd.stop("slow.service", T).unwrap(),
        ServiceAction::Done {
            job_result: "done".into()
        }
    );
    assert_eq!(systemctl_show("slow.service", "ActiveState"), "inactive");

    // 9. a oneshot that ran fine is inactive again, and that is a successful start
    assert_eq!(
        sd.start("oneshot.service", T).unwrap(),
        ServiceAction::Done {
            job_result: "done".into()
        }
    );
    assert_eq!(systemctl_show("oneshot.service", "Result"), "success");

    // 10. others' jobs finishing while we wait are not taken for ours
    let noise = std::thread::spawn(|| {
        for _ in 0..20 {
            let _ = std::process::Command::new("systemctl")
                .args(["restart", "--no-block", "noise.service"])
                .status();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    for _ in 0..3 {
        sd.stop("kubelet.service", T).unwrap();
        assert_eq!(systemctl_show("kubelet.service", "ActiveState"), "inactive");
        sd.start("kubelet.service", T).unwrap();
        assert_eq!(systemctl_show("kubelet.service", "ActiveState"), "active");
    }
    noise.join().unwrap();
}

/// The testbed runs the real dockerd (docker.io) with containers in cgroup v1 memory
/// cgroups, and survives a reboot with its files (the e2e tests of issue 6 build on this).
#[test]
fn testbed_runs_docker_and_reboots() {
    let Some(root) = nspawn::root_or_skip("testbed_runs_docker_and_reboots") else {
        return;
    };
    let mut tb = nspawn::Testbed::boot_new(&root);
    assert_eq!(
        tb.unit_prop("docker.service", "ActiveState"),
        "active",
        "{}",
        tb.journal("docker.service")
    );
    // an image without a registry: a busybox-static root
    let out = tb.sh_ok(
        "set -e; d=$(mktemp -d); mkdir -p $d/bin; cp /bin/busybox $d/bin/; \
         for a in sh cat echo; do ln -s busybox $d/bin/$a; done; \
         tar -C $d -c . | docker import - testbed/busybox:1 >/dev/null; rm -rf $d; \
         docker run --rm --memory 64m testbed/busybox:1 sh -c 'grep memory /proc/self/cgroup; echo ran'",
    );
    assert!(out.contains("ran"), "{out}");
    assert!(
        out.contains(":memory:/docker/"),
        "container not in a docker memory cgroup: {out}"
    );
    // a container's memory cgroup is a real v1 one with the kmem files
    let out = tb.sh_ok(
        "id=$(docker run -d testbed/busybox:1 sh -c 'exec sleep 100'); \
         ls /sys/fs/cgroup/memory/docker/$id/memory.kmem.limit_in_bytes; docker rm -f $id >/dev/null",
    );
    assert!(out.contains("memory.kmem.limit_in_bytes"), "{out}");

    tb.write("/etc/k8s-nokmem-reboot-check", "before reboot\n", 0o644);
    let before = tb.leader();
    tb.reboot();
    assert_ne!(tb.leader(), before);
    assert_eq!(tb.read("/etc/k8s-nokmem-reboot-check"), b"before reboot\n");
    let images = tb.sh_ok("docker image ls --format '{{.Repository}}:{{.Tag}}'");
    assert!(
        images.contains("testbed/busybox:1"),
        "image lost in the reboot: {images}"
    );
}
