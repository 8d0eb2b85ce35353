//! The swap transaction against a fake node root with the real `dpkg-divert --root`:
//! install, idempotent re-install, remove restoring byte-identical originals, missing and
//! symlinked targets, foreign diversions, a bad payload (a bad config: tests/config.rs), a
//! failpoint at every step (error: rollback to an identical tree; abort: the next run
//! converges), and the lock.
//! Services are skipped under `--root`; their behaviour is unit-tested with the fake in
//! src/cli/install.rs.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;

use common::assert_contains;
use common::node::{self, assert_same, sha256, stderr, Entry, NodeRoot};

const KUBELET_LINE: &str =
    "diversion of /usr/bin/kubelet to /usr/bin/kubelet.distrib by k8s-nokmem";
const RUNC_LINE: &str = "diversion of /usr/sbin/runc to /usr/sbin/runc.distrib by k8s-nokmem";
/// preflight, 2 stages, 2 stops, 2 diverts, 2 places, 2 starts, record.
const INSTALL_STEPS: usize = 12;
/// preflight, 2 stops, 2 unplaces, 2 undiverts, 2 starts, record.
const REMOVE_STEPS: usize = 10;
/// An upgrade of kubelet alone: preflight, stage, stop, place, start, record (no divert:
/// the path is already ours).
const UPGRADE_STEPS: usize = 6;
/// The kubelet of the upgraded payload.
const NEW_KUBELET: &[u8] = b"#!/bin/sh\necho nokmem kubelet v1.20.3\n";
/// Where an upgrade keeps the previous kubelet payload until it commits.
const KUBELET_ASIDE: &str = "usr/bin/.kubelet.k8s-nokmem-prev";

/// The payload is in place, the originals are aside byte for byte, both diversions ours.
fn assert_installed(n: &NodeRoot) {
    assert_eq!(n.read("usr/bin/kubelet"), node::PAYLOAD_KUBELET);
    assert_eq!(n.read("usr/sbin/runc"), node::PAYLOAD_RUNC);
    assert_eq!(n.read("usr/bin/kubelet.distrib"), node::ORIG_KUBELET);
    assert_eq!(n.read("usr/sbin/runc.distrib"), node::ORIG_RUNC);
    assert_eq!(n.diversions(), vec![KUBELET_LINE, RUNC_LINE]);
}

#[test]
fn install_swaps_and_a_rerun_changes_nothing() {
    let n = NodeRoot::new();
    let log = n.ok(&["install"]);
    assert_installed(&n);
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[0].starts_with("k8s-nokmem: info: install v") && lines[0].contains("root="),
        "{log}"
    );
    assert_contains(
        &log,
        &[
            "install [1/12] preflight: ok (",
            "install [6/12] divert '/usr/sbin/runc': ok (",
            "install [9/12] place '/usr/bin/kubelet': ok (",
            "install [4/12] stop 'kubelet.service': skipped (root is '",
            "install [12/12] record '/var/lib/k8s-nokmem/state.json': ok (",
            "keep the old binaries until they restart",
        ],
        "log",
    );
    let mode = std::fs::metadata(n.abs("usr/bin/kubelet")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777,
        0o755
    );
    let state = String::from_utf8(n.read("var/lib/k8s-nokmem/state.json")).unwrap();
    assert!(state.contains(&sha256(node::ORIG_KUBELET)), "{state}");
    assert!(state.contains(&sha256(node::PAYLOAD_KUBELET)), "{state}");

    let before = n.snapshot();
    let state_before = n.read("var/lib/k8s-nokmem/state.json");
    let log = n.ok(&["install"]);
    assert!(log.contains("nothing to do"), "{log}");
    assert!(
        !log.contains("stop '"),
        "nothing is stopped on a re-run:\n{log}"
    );
    assert_same(&before, &n.snapshot(), "re-install");
    assert_eq!(n.read("var/lib/k8s-nokmem/state.json"), state_before);

    let status = n.run(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("k8s-nokmem: installed"), "{text}");
}

#[test]
fn remove_restores_the_identical_tree_and_twice_is_fine() {
    let n = NodeRoot::new();
    let before = n.snapshot();
    n.ok(&["install"]);
    let log = n.ok(&["remove"]);
    assert!(
        log.contains("remove [4/10] unplace '/usr/bin/kubelet': ok ("),
        "{log}"
    );
    assert!(
        log.contains("undivert '/usr/bin/kubelet': ok (original back)"),
        "{log}"
    );
    assert!(n.diversions().is_empty());
    assert_same(&before, &n.snapshot(), "install + remove");
    assert!(!n.exists("var/lib/k8s-nokmem/state.json"));
    let log = n.ok(&["remove"]);
    assert!(log.contains("nothing to do"), "{log}");
    assert_same(&before, &n.snapshot(), "remove twice");
    let status = n.run(&["status", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["installed"], "not-installed");
}

#[test]
fn a_missing_target_is_diverted_anyway_and_reported() {
    let n = NodeRoot::bare();
    n.write("usr/sbin/runc", node::ORIG_RUNC, 0o755);
    let before = n.snapshot();
    let log = n.ok(&["install"]);
    assert!(
        log.contains("'/usr/bin/kubelet' (kubelet) did not exist: it is diverted anyway"),
        "{log}"
    );
    assert_eq!(n.read("usr/bin/kubelet"), node::PAYLOAD_KUBELET);
    assert!(!n.exists("usr/bin/kubelet.distrib"));
    assert!(n.diversions().contains(&KUBELET_LINE.to_string()));
    n.ok(&["install"]);
    n.ok(&["remove"]);
    assert!(!n.exists("usr/bin/kubelet"));
    assert_same(&before, &n.snapshot(), "missing target, install + remove");
}

#[test]
fn a_configured_symlink_target_is_refused_with_its_real_path_then_the_real_path_works() {
    // /usr/sbin/runc -> runc-1.0: diverting the link would leave the real file (which dpkg
    // tracks and upgrades, and which docker may run by that name) kmem-enabled. The config
    // must name the real path; the error says which.
    let n = NodeRoot::bare();
    n.write("usr/bin/kubelet", node::ORIG_KUBELET, 0o755);
    n.write("usr/sbin/runc-1.0", node::ORIG_RUNC, 0o755);
    std::os::unix::fs::symlink("runc-1.0", n.abs("usr/sbin/runc")).unwrap();
    n.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        b"[runc]\npath = /usr/sbin/runc\n",
        0o644,
    );
    let before = n.snapshot();
    let out = n.run(&["install"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("k8s-nokmem.conf") && err.contains("set path = /usr/sbin/runc-1.0"),
        "{err}"
    );
    assert_same(&before, &n.snapshot(), "refused symlink target");

    n.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        b"[runc]\npath = /usr/sbin/runc-1.0\n",
        0o644,
    );
    let before = n.snapshot();
    n.ok(&["install"]);
    assert_eq!(n.read("usr/sbin/runc-1.0"), node::PAYLOAD_RUNC);
    assert_eq!(
        n.read("usr/sbin/runc"),
        node::PAYLOAD_RUNC,
        "the link now leads to the payload"
    );
    assert_eq!(n.read("usr/sbin/runc-1.0.distrib"), node::ORIG_RUNC);
    n.ok(&["remove"]);
    assert_same(&before, &n.snapshot(), "real path of a symlink target");
}

#[test]
fn another_packages_diversion_is_refused_and_nothing_changes() {
    let n = NodeRoot::new();
    n.divert_as(
        "kubelet-wrapper",
        "/usr/bin/kubelet",
        "/usr/bin/kubelet.real",
    );
    let before = n.snapshot();
    let out = n.run(&["install"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("install step 1 'preflight' failed: nothing was changed"),
        "{err}"
    );
    assert!(
        err.contains("'/usr/bin/kubelet' is already diverted to '/usr/bin/kubelet.real' by package 'kubelet-wrapper'"),
        "{err}"
    );
    assert!(err.contains("note: "), "{err}");
    assert_same(&before, &n.snapshot(), "refused install");
}

#[test]
fn payload_checksum_mismatch_is_refused() {
    let n = NodeRoot::new();
    n.write("usr/lib/k8s-nokmem/kubelet", b"tampered", 0o755);
    let before = n.snapshot();
    let out = n.run(&["install"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("payload '/usr/lib/k8s-nokmem/kubelet' under root")
            && err.contains(&sha256(b"tampered"))
            && err.contains("nothing was changed")
            && err.contains("--reinstall"),
        "{err}"
    );
    assert_same(&before, &n.snapshot(), "bad payload");
}

#[test]
fn an_error_at_any_install_step_rolls_back_to_the_identical_tree() {
    for step in 1..=INSTALL_STEPS {
        let n = NodeRoot::new();
        let before = n.snapshot();
        let out = n.run_with_failpoint(&["install"], &format!("{step}:error"));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "step {step}: {err}");
        assert!(
            err.contains(&format!("install step {step}/{INSTALL_STEPS} '"))
                && err.contains("the original binaries are back in place")
                && err.contains("failpoint"),
            "step {step}: {err}"
        );
        if step > 1 {
            assert!(
                err.contains(&format!("rollback [{step}/{INSTALL_STEPS}] ")),
                "step {step}: {err}"
            );
        }
        assert_same(&before, &n.snapshot(), &format!("error at step {step}"));
        assert!(n.diversions().is_empty(), "step {step}");
        assert!(!n.exists("var/lib/k8s-nokmem/journal.json"), "step {step}");
        // and the node still installs cleanly afterwards
        n.ok(&["install"]);
        assert_installed(&n);
    }
}

#[test]
fn an_error_at_any_remove_step_rolls_back_to_installed() {
    for step in 1..=REMOVE_STEPS {
        let n = NodeRoot::new();
        n.ok(&["install"]);
        let before = n.snapshot();
        let out = n.run_with_failpoint(&["remove"], &format!("{step}:error"));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "step {step}: {err}");
        assert!(
            err.contains(&format!("remove step {step}/{REMOVE_STEPS} '")),
            "step {step}: {err}"
        );
        assert_same(
            &before,
            &n.snapshot(),
            &format!("remove error at step {step}"),
        );
        n.ok(&["remove"]);
        assert!(n.diversions().is_empty(), "step {step}");
    }
}

/// Abort (as kill -9 or a power loss) right after step `step` is journalled.
fn abort_at(n: &NodeRoot, command: &str, step: usize) {
    let out = n.run_with_failpoint(&[command], &format!("{step}:abort"));
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{command} step {step}: expected SIGABRT, got {}: {}",
        out.status,
        stderr(&out)
    );
    assert!(
        n.exists("var/lib/k8s-nokmem/journal.json"),
        "{command} step {step}"
    );
}

#[test]
fn an_install_killed_at_any_step_converges_on_the_next_run() {
    for step in 1..=INSTALL_STEPS {
        let n = NodeRoot::new();
        let before = n.snapshot();
        abort_at(&n, "install", step);
        let log = n.ok(&["install"]);
        assert!(
            log.contains("interrupted install transaction"),
            "step {step}: {log}"
        );
        assert_installed(&n);
        assert!(!n.exists("var/lib/k8s-nokmem/journal.json"));
        let status = n.run(&["status"]);
        assert_eq!(
            status.status.code(),
            Some(0),
            "step {step}: {}",
            stderr(&status)
        );
        n.ok(&["remove"]);
        assert_same(
            &before,
            &n.snapshot(),
            &format!("abort at {step}, install, remove"),
        );
    }
}

#[test]
fn an_install_killed_at_any_step_then_removed_gives_the_originals() {
    for step in 1..=INSTALL_STEPS {
        let n = NodeRoot::new();
        let before = n.snapshot();
        abort_at(&n, "install", step);
        let status = n.run(&["status"]);
        assert_eq!(
            status.status.code(),
            Some(1),
            "step {step}: interrupted is a problem"
        );
        n.ok(&["remove"]);
        assert_same(&before, &n.snapshot(), &format!("abort at {step}, remove"));
    }
}

#[test]
fn a_remove_killed_at_any_step_converges_on_the_next_run() {
    for step in 1..=REMOVE_STEPS {
        let n = NodeRoot::new();
        let before = n.snapshot();
        n.ok(&["install"]);
        abort_at(&n, "remove", step);
        let log = n.ok(&["remove"]);
        assert!(
            log.contains("interrupted remove transaction"),
            "step {step}: {log}"
        );
        assert_same(
            &before,
            &n.snapshot(),
            &format!("remove aborted at {step}, remove"),
        );
        // an interrupted remove followed by install (postinst abort-remove) installs
        n.ok(&["install"]);
        abort_at(&n, "remove", step);
        n.ok(&["install"]);
        assert_installed(&n);
    }
}

#[test]
fn a_second_run_fails_naming_the_lock_and_its_holder() {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::Write;
    let n = NodeRoot::new();
    std::fs::create_dir_all(n.abs("var/lib/k8s-nokmem")).unwrap();
    let mut file = std::fs::File::create(n.abs("var/lib/k8s-nokmem/lock")).unwrap();
    writeln!(file, "4242").unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap();
    let before = n.snapshot();
    for command in ["install", "remove"] {
        let out = n.run(&[command]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("another k8s-nokmem run holds the lock '")
                && err.contains("var/lib/k8s-nokmem/lock' (pid 4242)"),
            "{err}"
        );
    }
    assert_same(&before, &n.snapshot(), "locked");
    drop(held);
    n.ok(&["install"]);
}

/// Issue 15 item 12: `--root DIR` without a dpkg database is refused, and nothing is created
/// under DIR.
#[test]
fn a_root_without_a_dpkg_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
    std::fs::write(dir.path().join("usr/bin/kubelet"), node::ORIG_KUBELET).unwrap();
    let before = node::NodeRoot::listing(dir.path());
    for command in ["install", "remove", "recover"] {
        let out = common::run(
            std::process::Command::new(env!("CARGO_BIN_EXE_k8s-nokmem"))
                .args([command, "--root"])
                .arg(dir.path())
                .env_remove("DPKG_ROOT")
                .env_remove("K8S_NOKMEM_FAILPOINT"),
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(
            err.contains(&format!(
                "is not the root of a Debian system: it has no dpkg database ('{}/var/lib/dpkg' is not a directory)",
                dir.path().display()
            )) && err.contains("note: give --root"),
            "{command}: {err}"
        );
        assert_eq!(
            node::NodeRoot::listing(dir.path()),
            before,
            "{command} created something"
        );
    }
}

/// A process that holds an `fcntl` write lock on `path` (as dpkg and apt take theirs) until
/// it is killed; its pid.
struct FcntlHolder(std::process::Child);

impl FcntlHolder {
    fn hold(path: &std::path::Path) -> FcntlHolder {
        use std::io::BufRead;
        let script = "import fcntl, os, sys\n\
                      fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640)\n\
                      fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n\
                      print('locked', flush=True)\n\
                      sys.stdin.read()\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("failed to start python3 ({e}): run `apt-get install python3`")
            });
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "locked",
            "python3 could not lock {}",
            path.display()
        );
        FcntlHolder(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for FcntlHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 15 item 12: while another process holds dpkg's frontend lock (or its database
/// lock) a hand-run install or remove refuses, naming the lock and its holder, and changes
/// nothing; run from a maintainer script (dpkg sets DPKG_MAINTSCRIPT_*, and is the one
/// holding the lock) it proceeds.
#[test]
fn a_hand_run_waits_for_dpkg_but_a_maintainer_script_run_proceeds() {
    for lock in ["lock-frontend", "lock"] {
        let n = NodeRoot::new();
        let holder = FcntlHolder::hold(&n.abs(&format!("var/lib/dpkg/{lock}")));
        let before = n.snapshot();
        for command in ["install", "remove"] {
            let out = n.run(&[command]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{command} ({lock}): {err}");
            assert!(
                err.contains(&format!(
                    "dpkg's lock '{}/var/lib/dpkg/{lock}' is held by another process (pid {}): apt or dpkg is running",
                    n.path.display(),
                    holder.pid()
                )) && err.contains(&format!("{command} refused: nothing was changed"))
                    && err.contains("note: wait for apt or dpkg to finish"),
                "{command} ({lock}): {err}"
            );
        }
        assert_same(&before, &n.snapshot(), "refused while dpkg runs");
        assert!(!n.exists("var/lib/k8s-nokmem/state.json"));

        // from dpkg's postinst and prerm: dpkg holds the lock, the helper proceeds
        for (command, script) in [("install", "postinst"), ("remove", "prerm")] {
            let out = common::run(
                n.helper(&[command])
                    .env("DPKG_MAINTSCRIPT_PACKAGE", "k8s-nokmem")
                    .env("DPKG_MAINTSCRIPT_NAME", script),
            );
            assert!(
                out.status.success(),
                "{command} from {script} ({lock}): {}",
                stderr(&out)
            );
        }
        assert_same(
            &before,
            &n.snapshot(),
            "install then remove from the scripts",
        );
        drop(holder);
        n.ok(&["install"]);
        assert_installed(&n);
    }
}

#[test]
fn an_upgrade_replaces_only_the_changed_binary() {
    let n = NodeRoot::new();
    n.ok(&["install"]);
    n.set_payload(node::PAYLOAD_RUNC, NEW_KUBELET, "1.20.3");
    let log = n.ok(&["install"]);
    assert!(log.contains("stop 'kubelet.service'"), "{log}");
    assert!(
        !log.contains("docker.service"),
        "runc unchanged: docker untouched:\n{log}"
    );
    assert!(!log.contains("'/usr/sbin/runc'"), "{log}");
    assert!(
        !log.contains("divert '"),
        "an already diverted path is not diverted again:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "install [4/{UPGRADE_STEPS}] place '/usr/bin/kubelet': ok (the previous payload kept aside)"
        )),
        "{log}"
    );
    assert_eq!(n.read("usr/bin/kubelet"), NEW_KUBELET);
    assert_eq!(n.read("usr/bin/kubelet.distrib"), node::ORIG_KUBELET);
    assert!(!n.exists(KUBELET_ASIDE), "committed: nothing kept aside");
}

/// The state file, parsed (it is outside the snapshots).
fn state_json(n: &NodeRoot) -> serde_json::Value {
    serde_json::from_slice(&n.read("var/lib/k8s-nokmem/state.json")).unwrap()
}

/// A node with the 1.20.2 payload installed and the 1.20.3 payload unpacked (an upgrade
/// ready to run); its snapshot and state.
fn node_before_upgrade() -> (NodeRoot, BTreeMap<String, Entry>, serde_json::Value) {
    let n = NodeRoot::new();
    n.ok(&["install"]);
    n.set_payload(node::PAYLOAD_RUNC, NEW_KUBELET, "1.20.3");
    let (before, state) = (n.snapshot(), state_json(&n));
    (n, before, state)
}

#[test]
fn a_failed_upgrade_keeps_the_previous_payload() {
    for step in 1..=UPGRADE_STEPS {
        let (n, before, state) = node_before_upgrade();
        let out = n.run_with_failpoint(&["install"], &format!("{step}:error"));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "step {step}: {err}");
        assert!(
            err.contains(&format!("install step {step}/{UPGRADE_STEPS} '"))
                && err.contains("the node runs the previous payload again (kubelet)"),
            "step {step}: {err}"
        );
        assert_same(&before, &n.snapshot(), &format!("upgrade error at {step}"));
        assert_eq!(
            n.read("usr/bin/kubelet"),
            node::PAYLOAD_KUBELET,
            "step {step}"
        );
        assert_eq!(n.diversions(), vec![KUBELET_LINE, RUNC_LINE], "step {step}");
        assert_eq!(
            state_json(&n),
            state,
            "step {step}: state of the previous payload"
        );
        // the previous payload is what the state describes: the old package is consistent
        n.set_payload(node::PAYLOAD_RUNC, node::PAYLOAD_KUBELET, "1.20.2");
        let log = n.ok(&["install"]);
        assert!(log.contains("nothing to do"), "step {step}: {log}");
    }
}

#[test]
fn an_upgrade_killed_at_any_step_converges_to_the_previous_payload_then_does_what_is_asked() {
    for step in 1..=UPGRADE_STEPS {
        // the next install recovers (the previous payload is back: with it unpacked again
        // there is nothing to do), then upgrades
        let (n, before, state) = node_before_upgrade();
        abort_at(&n, "install", step);
        n.set_payload(node::PAYLOAD_RUNC, node::PAYLOAD_KUBELET, "1.20.2");
        let log = n.ok(&["install"]);
        assert!(
            log.contains("interrupted install transaction") && log.contains("nothing to do"),
            "step {step}: {log}"
        );
        n.set_payload(node::PAYLOAD_RUNC, NEW_KUBELET, "1.20.3");
        assert_same(&before, &n.snapshot(), &format!("upgrade killed at {step}"));
        assert_eq!(state_json(&n), state, "step {step}");
        abort_at(&n, "install", step);
        n.ok(&["install"]);
        assert_eq!(n.read("usr/bin/kubelet"), NEW_KUBELET, "step {step}");
        assert!(!n.exists(KUBELET_ASIDE), "step {step}");
        let status = n.run(&["status"]);
        assert_eq!(
            status.status.code(),
            Some(0),
            "step {step}: {}",
            stderr(&status)
        );

        // remove after the kill: the originals, as before the first install
        let n = NodeRoot::new();
        let pristine = n.snapshot();
        n.ok(&["install"]);
        n.set_payload(node::PAYLOAD_RUNC, NEW_KUBELET, "1.20.3");
        abort_at(&n, "install", step);
        n.ok(&["remove"]);
        n.set_payload(node::PAYLOAD_RUNC, node::PAYLOAD_KUBELET, "1.20.2");
        assert_same(
            &pristine,
            &n.snapshot(),
            &format!("upgrade killed at {step}, remove"),
        );
        assert!(n.diversions().is_empty(), "step {step}");
    }
}

/// The journal an older helper wrote for an upgrade: a divert step for the path it already
/// diverted, and a place without the previous payload, interrupted at `begun` steps.
fn legacy_upgrade_journal(n: &NodeRoot, begun: usize) {
    let file = |bytes: &[u8]| serde_json::json!({"kind": "file", "sha256": sha256(bytes), "size": bytes.len(), "mode": 493});
    let (path, to) = ("/usr/bin/kubelet", "/usr/bin/kubelet.distrib");
    let state: serde_json::Value = state_json(n);
    let journal = serde_json::json!({
        "version": 1, "command": "install", "pid": 1, "started": 0,
        "steps": [
            {"step": "preflight"},
            {"step": "stage", "target": "kubelet", "path": path,
             "payload": "/usr/lib/k8s-nokmem/kubelet", "sha256": sha256(NEW_KUBELET)},
            {"step": "stop", "unit": "kubelet.service"},
            {"step": "divert", "target": "kubelet", "path": path, "divert_to": to,
             "original": file(node::ORIG_KUBELET)},
            {"step": "place", "target": "kubelet", "path": path, "divert_to": to,
             "payload": "/usr/lib/k8s-nokmem/kubelet", "sha256": sha256(NEW_KUBELET),
             "original": file(node::ORIG_KUBELET)},
            {"step": "start", "unit": "kubelet.service"},
            {"step": "record", "state": state},
        ],
        "begun": begun, "done": begun - 1, "phase": "forward",
    });
    n.write(
        "var/lib/k8s-nokmem/journal.json",
        serde_json::to_string_pretty(&journal).unwrap().as_bytes(),
        0o644,
    );
}

#[test]
fn an_older_helpers_interrupted_upgrade_no_longer_blocks_install_or_remove() {
    // killed with the divert (4) or the place (5) journalled: the previous payload is at
    // the path, the original aside, and undoing that divert used to be impossible
    for begun in [4, 5] {
        for command in ["install", "remove"] {
            let (n, _, _) = node_before_upgrade();
            let pristine_kubelet = node::ORIG_KUBELET;
            legacy_upgrade_journal(&n, begun);
            let log = n.ok(&[command]);
            assert!(
                log.contains("interrupted install transaction"),
                "{command} after {begun}: {log}"
            );
            assert!(
                log.contains(
                    "divert '/usr/bin/kubelet': ok (diverted before this transaction: kept)"
                ),
                "{command} after {begun}: {log}"
            );
            if command == "install" {
                assert_eq!(n.read("usr/bin/kubelet"), NEW_KUBELET);
                assert_eq!(n.diversions(), vec![KUBELET_LINE, RUNC_LINE]);
            } else {
                assert_eq!(n.read("usr/bin/kubelet"), pristine_kubelet);
                assert!(n.diversions().is_empty());
            }
            assert!(!n.exists("var/lib/k8s-nokmem/journal.json"));
        }
    }
}

/// Issue 15 item 12: a journal whose `begun` is past its last step (or `done` past `begun`)
/// is an error naming the file and the fix, for every command that reads it; no panic, and
/// nothing changes.
#[test]
fn a_journal_with_impossible_counters_is_a_clear_error_not_a_panic() {
    for (begun, done, want) in [
        (9, 6, "9 steps begun, but it has 7 steps"),
        (3, 5, "5 steps done, but only 3 begun"),
    ] {
        let (n, _, _) = node_before_upgrade();
        legacy_upgrade_journal(&n, 2);
        let path = n.abs("var/lib/k8s-nokmem/journal.json");
        let mut journal: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        journal["begun"] = begun.into();
        journal["done"] = done.into();
        n.write(
            "var/lib/k8s-nokmem/journal.json",
            serde_json::to_string_pretty(&journal).unwrap().as_bytes(),
            0o644,
        );
        let before = n.snapshot();
        for command in ["install", "remove", "recover"] {
            let out = n.run(&[command]);
            let err = stderr(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} ({begun}/{done}): {err}"
            );
            assert!(
                !err.contains("panicked") && out.status.signal().is_none(),
                "{command} ({begun}/{done}) panicked: {err}"
            );
            assert!(
                err.contains("var/lib/k8s-nokmem/journal.json' is inconsistent: ")
                    && err.contains(want)
                    && err.contains("away after checking the node with `k8s-nokmem status`"),
                "{command} ({begun}/{done}): {err}"
            );
        }
        assert_same(&before, &n.snapshot(), "inconsistent journal");
    }
}

/// On `n`, install refuses (exit 2), its error saying each of `refusal`, and changes nothing;
/// with `drop_in` as /etc/k8s-nokmem/conf.d/50-local.conf it installs, its log saying each
/// of `warning`.
#[track_caller]
fn refused_until_a_drop_in_says_warn(
    n: &NodeRoot,
    refusal: &[&str],
    what: &str,
    drop_in: &[u8],
    warning: &[&str],
) {
    let before = n.snapshot();
    let out = n.run(&["install"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_contains(&err, refusal, "install's error");
    assert_same(&before, &n.snapshot(), what);
    assert!(n.diversions().is_empty());

    n.write("etc/k8s-nokmem/conf.d/50-local.conf", drop_in, 0o644);
    let log = n.ok(&["install"]);
    assert_contains(&log, warning, "install log");
    assert_installed(n);
}

#[test]
fn version_skew_refuses_by_default_and_warn_overrides() {
    let n = NodeRoot::new();
    n.dpkg_package(
        "kubelet",
        "1.19.16-00",
        &["/usr", "/usr/bin", "/usr/bin/kubelet"],
    );
    refused_until_a_drop_in_says_warn(
        &n,
        &[
            "version skew: the payload kubelet is 1.20.2, package 'kubelet' has 1.19.16-00",
            "refusing to replace a 1.19 kubelet with a 1.20 one",
            "nothing was changed",
            "check out kubernetes v1.19.16 in DIR and run `scripts/build-deb.sh -- --kubernetes-src DIR`",
            "set `version-skew = warn` under [kubelet] in a drop-in, /etc/k8s-nokmem/conf.d/50-local.conf",
        ],
        "skew refused",
        b"[kubelet]\nversion-skew = warn\n",
        &[
            "warn: version skew",
            "version-skew = warn at /etc/k8s-nokmem/conf.d/50-local.conf:2",
        ],
    );
}

/// A Docker 18.09 node (Ubuntu 16.04's containerd 1.2) and the default payload runc 1.1.5:
/// containerd 1.2's tags pin runc v1.0.0-rc5+ (v1.2.0, 58592df) to v1.0.0-rc10 (v1.2.12 ..
/// v1.2.14, vendor.conf), so install refuses before changing anything, naming both versions
/// and `[runc] containerd-skew`; with `warn` it installs.
#[test]
fn a_runc_the_nodes_containerd_does_not_support_is_refused_and_warn_overrides() {
    let n = NodeRoot::new();
    n.dpkg_package(
        "containerd",
        "1.2.6-0ubuntu1~16.04.6",
        &["/usr", "/usr/bin", "/usr/bin/containerd"],
    );
    refused_until_a_drop_in_says_warn(
        &n,
        &[
            "containerd 1.2.6-0ubuntu1~16.04.6 (package 'containerd') does not support the payload runc 1.1.5",
            "containerd 1.2 ships and tests runc v1.0.0-rc5 to v1.0.0-rc10",
            "[runc] containerd-skew = refuse, the default",
            "nothing was changed",
            "check out that runc tag (e.g. v1.0.0-rc10) in DIR and run `scripts/build-deb.sh -- --runc-src DIR`",
            "set `containerd-skew = warn` under [runc] in a drop-in, /etc/k8s-nokmem/conf.d/50-local.conf",
        ],
        "containerd skew refused",
        b"[runc]\ncontainerd-skew = warn\n",
        &[
            "warn: containerd 1.2.6-0ubuntu1~16.04.6 (package 'containerd') does not support the payload runc 1.1.5",
            "installing anyway ([runc] containerd-skew = warn at /etc/k8s-nokmem/conf.d/50-local.conf:2)",
        ],
    );
}

/// A containerd 1.6 node (Debian 12's docker.io: containerd 1.6.20, runc 1.1.5) takes the
/// default payload runc 1.1.5 with no word above debug.
#[test]
fn a_runc_the_nodes_containerd_supports_installs() {
    let n = NodeRoot::new();
    n.dpkg_package(
        "containerd",
        "1.6.20~ds1-1+b1",
        &["/usr", "/usr/bin", "/usr/bin/containerd"],
    );
    let log = n.ok(&["install"]);
    assert!(!log.contains("containerd"), "{log}");
    assert_installed(&n);
}

/// The files in `usr/bin` whose name starts with `prefix`.
fn named_like(n: &NodeRoot, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(n.abs("usr/bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    out.sort();
    out
}

#[test]
fn remove_moves_a_file_someone_else_put_there_aside_and_undiverts() {
    let n = NodeRoot::new();
    n.ok(&["install"]);
    n.write("usr/bin/kubelet", b"hand-copied hotfix", 0o755);
    // a failure after the move puts everything back as it was
    let before = n.snapshot();
    let out = n.run_with_failpoint(&["remove"], "undivert:error");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("put back the file moved to '/usr/bin/kubelet.k8s-nokmem-foreign-"),
        "{}",
        stderr(&out)
    );
    assert_same(
        &before,
        &n.snapshot(),
        "remove rolled back with a foreign file",
    );

    let log = n.ok(&["remove"]);
    let moved = named_like(&n, "kubelet.k8s-nokmem-foreign-");
    assert_eq!(moved.len(), 1, "{moved:?}\n{log}");
    assert!(
        log.contains(&format!(
            "'/usr/bin/kubelet' under root '{}' was a file of 18 bytes",
            n.path.display()
        )) && log.contains(&format!("moved it to '/usr/bin/{}'", moved[0])),
        "{log}"
    );
    assert_eq!(
        n.read(&format!("usr/bin/{}", moved[0])),
        b"hand-copied hotfix"
    );
    assert_eq!(n.read("usr/bin/kubelet"), node::ORIG_KUBELET);
    assert!(!n.exists("usr/bin/kubelet.distrib"));
    assert!(n.diversions().is_empty(), "no orphan diversion");
    assert_eq!(n.read("usr/sbin/runc"), node::ORIG_RUNC);
    let status = n.run(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    n.ok(&["install"]);
    assert_installed(&n);
}

#[test]
fn prerm_remove_works_with_and_without_the_helper() {
    for with_helper in [true, false] {
        let n = NodeRoot::new();
        let before = n.snapshot();
        n.ok(&["install"]);
        let out = n.prerm_remove(with_helper);
        let err = stderr(&out);
        assert!(out.status.success(), "helper {with_helper}: {err}");
        assert_eq!(
            err.contains("the k8s-nokmem helper is missing"),
            !with_helper,
            "{err}"
        );
        assert!(n.diversions().is_empty(), "helper {with_helper}: {err}");
        assert_same(
            &before,
            &n.snapshot(),
            &format!("prerm, helper {with_helper}"),
        );
    }
    // without the helper, a file k8s-nokmem did not place is moved aside, not deleted
    let n = NodeRoot::new();
    n.ok(&["install"]);
    n.write("usr/bin/kubelet", b"hand-copied hotfix", 0o755);
    let out = n.prerm_remove(false);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let moved = named_like(&n, "kubelet.k8s-nokmem-foreign-");
    assert_eq!(moved.len(), 1, "{moved:?}\n{err}");
    assert!(err.contains(&moved[0]), "says where: {err}");
    assert_eq!(
        n.read(&format!("usr/bin/{}", moved[0])),
        b"hand-copied hotfix"
    );
    assert_eq!(n.read("usr/bin/kubelet"), node::ORIG_KUBELET);
    assert!(n.diversions().is_empty());
}

#[test]
fn status_finds_a_diversion_without_our_file() {
    let n = NodeRoot::new();
    n.ok(&["install"]);
    std::fs::remove_file(n.abs("usr/bin/kubelet")).unwrap();
    let out = n.run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("is diverted by k8s-nokmem but nothing is there"),
        "{text}"
    );
    // install repairs it
    n.ok(&["install"]);
    assert_installed(&n);
}

#[test]
fn auto_follows_a_usual_symlink_to_the_real_binary() {
    // bookworm's runc: /usr/sbin/runc, and /usr/bin/runc -> ../sbin/runc
    let n = NodeRoot::bare();
    n.write("usr/bin/kubelet", node::ORIG_KUBELET, 0o755);
    n.write("usr/sbin/runc", node::ORIG_RUNC, 0o755);
    std::os::unix::fs::symlink("../sbin/runc", n.abs("usr/bin/runc")).unwrap();
    n.dpkg_package(
        "runc",
        "1.1.5+ds1-1",
        &[
            "/usr",
            "/usr/sbin",
            "/usr/sbin/runc",
            "/usr/bin",
            "/usr/bin/runc",
        ],
    );
    let before = n.snapshot();
    n.ok(&["install"]);
    assert_eq!(n.read("usr/sbin/runc"), node::PAYLOAD_RUNC);
    assert_eq!(
        n.read("usr/bin/runc"),
        node::PAYLOAD_RUNC,
        "through the link"
    );
    assert_eq!(n.diversions(), vec![KUBELET_LINE, RUNC_LINE]);
    n.ok(&["remove"]);
    assert_same(&before, &n.snapshot(), "bookworm runc layout");

    // a usual path that is a symlink elsewhere: the file it points to is swapped
    let n = NodeRoot::bare();
    n.write("usr/bin/kubelet", node::ORIG_KUBELET, 0o755);
    n.write("opt/runc/runc-1.0", node::ORIG_RUNC, 0o755);
    std::os::unix::fs::symlink("/opt/runc/runc-1.0", n.abs("usr/sbin/runc")).unwrap();
    let before = n.snapshot();
    let log = n.ok(&["install"]);
    assert_eq!(n.read("opt/runc/runc-1.0"), node::PAYLOAD_RUNC, "{log}");
    assert!(
        n.diversions().contains(
            &"diversion of /opt/runc/runc-1.0 to /opt/runc/runc-1.0.distrib by k8s-nokmem"
                .to_string()
        ),
        "{:?}",
        n.diversions()
    );
    let log = n.ok(&["install"]);
    assert!(log.contains("nothing to do"), "stable on a re-run:\n{log}");
    n.ok(&["remove"]);
    assert_same(&before, &n.snapshot(), "linked runc");
}

#[test]
fn two_real_runcs_swap_the_one_first_in_path_and_warn() {
    let n = NodeRoot::new();
    n.write("usr/bin/runc", b"containerd.io runc", 0o755);
    let log = n.ok(&["install"]);
    assert!(
        log.contains(
            "several runc binaries: '/usr/sbin/runc', '/usr/bin/runc'; swapping '/usr/sbin/runc'"
        ),
        "{log}"
    );
    assert_eq!(n.read("usr/sbin/runc"), node::PAYLOAD_RUNC);
    assert_eq!(n.read("usr/bin/runc"), b"containerd.io runc");
}

#[test]
fn a_damaged_state_file_does_not_block_remove() {
    let n = NodeRoot::new();
    let before = n.snapshot();
    n.ok(&["install"]);
    n.write("var/lib/k8s-nokmem/state.json", b"{garbage", 0o644);
    let out = n.run(&["install"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("state.json' is not valid") && err.contains("move it away"),
        "{err}"
    );
    let log = n.ok(&["remove"]);
    assert!(log.contains("going by the diversions alone"), "{log}");
    assert_same(&before, &n.snapshot(), "remove with a damaged state file");
}

#[test]
fn dpkg_root_in_the_environment_acts_like_root() {
    let n = NodeRoot::new();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_k8s-nokmem"));
    cmd.arg("install")
        .env("DPKG_ROOT", &n.path)
        .env_remove("RUST_LOG")
        .env_remove("K8S_NOKMEM_FAILPOINT");
    let out = common::run(&mut cmd);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(&format!("root={}", n.path.display())), "{log}");
    assert!(
        log.contains("stop 'kubelet.service': skipped (root is '"),
        "{log}"
    );
    assert_installed(&n);
}

#[test]
fn an_interrupted_remove_finishes_even_after_the_payload_is_gone() {
    let n = NodeRoot::new();
    let before = n.snapshot();
    n.ok(&["install"]);
    // killed after the kubelet payload was deleted, before its diversion went
    abort_at(&n, "remove", 5);
    for f in ["kubelet", "runc", "MANIFEST"] {
        std::fs::remove_file(n.abs(&format!("usr/lib/k8s-nokmem/{f}"))).unwrap();
    }
    let log = n.ok(&["remove"]);
    assert!(log.contains("finishing the interrupted remove"), "{log}");
    let mut after = n.snapshot();
    let mut want = before.clone();
    for m in [&mut after, &mut want] {
        m.retain(|k, _| !k.starts_with("usr/lib/k8s-nokmem"));
    }
    assert_same(&want, &after, "remove finished without a payload");
}

/// Unmounts on drop, also when the test panics.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn not_enough_free_space_is_refused_before_any_change() {
    if !common::root_or_skip("mounting a small tmpfs") {
        return;
    }
    let n = NodeRoot::new();
    let bin = n.abs("usr/bin");
    common::ok(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "k8s-nokmem-test"])
            .arg(&bin),
    );
    let _guard = Mounted(bin);
    n.write("usr/bin/kubelet", node::ORIG_KUBELET, 0o755);
    n.set_payload(node::PAYLOAD_RUNC, &vec![b'k'; 2 << 20], "1.20.2");
    let before = n.snapshot();
    let out = n.run(&["install"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not enough free space in '/usr/bin' under root")
            && err.contains("for the kubelet payload: need 3 MiB")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_same(&before, &n.snapshot(), "no space");
}

/// One syscall line of `strace -y`: its name, arguments and result.
fn syscall(line: &str) -> Option<(&str, Vec<&str>, &str)> {
    let (name, rest) = line.split_once('(')?;
    let (args, ret) = rest.rsplit_once(") = ")?;
    Some((name, args.split(", ").collect(), ret.trim()))
}

/// The path an `*at` syscall names: `N</dir>` or `AT_FDCWD</cwd>` plus `"name"`.
fn at_path(dirfd: &str, name: &str) -> std::path::PathBuf {
    let name = name.trim_matches('"');
    let dir = dirfd
        .split_once('<')
        .map(|(_, d)| d.trim_end_matches('>'))
        .unwrap_or("/");
    std::path::Path::new(dir).join(name)
}

/// Every rename and unlink the helper makes itself (dpkg-divert is another process) is
/// followed by an fsync of the directory it changed before the next change: a power loss
/// keeps a finished step finished.
#[test]
fn every_rename_and_unlink_is_followed_by_a_directory_fsync() {
    let n = NodeRoot::new();
    let traces = tempfile::tempdir().unwrap();
    for cmd in ["install", "remove"] {
        let trace = traces.path().join(cmd);
        let helper = n.helper(&[cmd]);
        let mut strace = std::process::Command::new("strace");
        strace
            .arg("-y")
            .arg("-o")
            .arg(&trace)
            .args([
                "-e",
                "trace=rename,renameat,renameat2,unlink,unlinkat,fsync,fdatasync",
            ])
            .arg(helper.get_program())
            .args(helper.get_args())
            .envs(helper.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .env_remove("RUST_LOG")
            .env_remove("DPKG_ROOT")
            .env_remove("K8S_NOKMEM_FAILPOINT");
        let out = strace
            .output()
            .unwrap_or_else(|e| panic!("strace: {e}; apt-get install strace"));
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
        let text = std::fs::read_to_string(&trace).unwrap();
        let mut pending: Vec<(std::path::PathBuf, String)> = Vec::new();
        let mut changes = 0;
        for line in text.lines() {
            let Some((name, args, ret)) = syscall(line) else {
                continue;
            };
            if ret != "0" {
                continue;
            }
            let changed: Vec<std::path::PathBuf> = match (name, args.as_slice()) {
                ("rename", [from, to, ..]) => {
                    vec![at_path("AT_FDCWD</>", from), at_path("AT_FDCWD</>", to)]
                }
                ("renameat" | "renameat2", [d1, from, d2, to, ..]) => {
                    vec![at_path(d1, from), at_path(d2, to)]
                }
                ("unlink", [p, ..]) => vec![at_path("AT_FDCWD</>", p)],
                ("unlinkat", [d, p, ..]) => vec![at_path(d, p)],
                ("fsync" | "fdatasync", [fd]) => {
                    let dir = at_path(fd, "");
                    pending.retain(|(d, _)| *d != dir);
                    continue;
                }
                _ => continue,
            };
            assert!(
                pending.is_empty(),
                "{cmd}: no directory fsync after {:?} before `{line}`:\n{text}",
                pending
            );
            for p in changed {
                let dir = p.parent().unwrap().to_path_buf();
                if dir.starts_with(&n.path) && !pending.iter().any(|(d, _)| *d == dir) {
                    pending.push((dir, line.to_string()));
                }
            }
            changes += 1;
        }
        assert!(
            pending.is_empty(),
            "{cmd}: no directory fsync after {pending:?}:\n{text}"
        );
        assert!(changes >= 4, "{cmd}: too few changes traced:\n{text}");
    }
    assert!(n.diversions().is_empty());
}

/// Ubuntu 16.04's dpkg-divert (1.18.4) has no `--root`: under `--root R` the helper says so
/// before it changes anything. No dpkg that old can be installed here (its archive is not
/// reachable), so a script on `$PATH` answers as 1.18.4 does: its `--version` text, and
/// an error for the unknown option.
#[test]
fn a_dpkg_divert_without_root_option_is_refused_up_front() {
    use std::os::unix::fs::PermissionsExt;
    let n = NodeRoot::new();
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("dpkg-divert");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$1\" in --version)\n  printf 'Debian dpkg-divert version 1.18.4.\\n\\nThis is free software.\\n'; exit 0;;\nesac\n\
         echo \"dpkg-divert: error: unknown option --root\" >&2\nexit 2\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let before = n.snapshot();
    for cmd in ["install", "remove"] {
        let out = common::run(n.helper(&[cmd]).env("PATH", &path));
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {log}");
        assert!(
            log.contains(&format!(
                "dpkg-divert 1.18.4 cannot work on root '{}': its --root option needs dpkg 1.19.2 or later",
                n.path.display()
            )),
            "{cmd}: {log}"
        );
        assert_same(&before, &n.snapshot(), cmd);
    }
}

/// state.json as the first releases wrote it (no `original_package`, no `swapped_at`) and
/// without a `version` field (legacy: read as version 1): status and remove read it, and
/// remove restores the identical tree.
#[test]
fn a_state_file_in_the_oldest_layout_is_read_by_status_and_remove() {
    let n = NodeRoot::new();
    let before = n.snapshot();
    n.ok(&["install"]);
    let rel = "var/lib/k8s-nokmem/state.json";
    let mut state: serde_json::Value = serde_json::from_slice(&n.read(rel)).unwrap();
    let top = state.as_object_mut().unwrap();
    top.remove("version");
    for target in top["targets"].as_object_mut().unwrap().values_mut() {
        let target = target.as_object_mut().unwrap();
        target.remove("original_package");
        target.remove("swapped_at");
    }
    n.write(rel, state.to_string().as_bytes(), 0o644);

    let status = n.run(&["status", "--json"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{out}\n{}", stderr(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["installed"], "installed", "{out}");
    assert_eq!(json["problems"], serde_json::json!([]), "{out}");

    let log = n.ok(&["remove"]);
    assert!(!log.contains("going by the diversions alone"), "{log}");
    assert!(
        log.contains("undivert '/usr/bin/kubelet': ok (original back)"),
        "{log}"
    );
    assert_same(&before, &n.snapshot(), "install, old-layout state, remove");
}

/// A state.json a newer k8s-nokmem wrote (a higher version, a layout this one does not
/// know) is refused by install and remove before anything changes, naming the file, the
/// version and the fix; status reports it as a problem.
#[test]
fn a_state_file_of_a_newer_version_is_refused_and_nothing_changes() {
    let n = NodeRoot::new();
    n.ok(&["install"]);
    let rel = "var/lib/k8s-nokmem/state.json";
    let mut state: serde_json::Value = serde_json::from_slice(&n.read(rel)).unwrap();
    state["version"] = 2.into();
    state["generation"] = 7.into();
    n.write(rel, state.to_string().as_bytes(), 0o644);
    let want = format!(
        "state file '{}' has version 2, but this k8s-nokmem ({}) reads versions up to 1: a newer k8s-nokmem wrote it; upgrade k8s-nokmem (`apt install k8s-nokmem`), then run the command again",
        n.abs(rel).display(),
        env!("CARGO_PKG_VERSION")
    );
    let before = n.snapshot();
    for command in ["remove", "install"] {
        let out = n.run(&[command]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(
            err.contains(&format!(
                "{command} step 1 'preflight' failed: nothing was changed"
            )),
            "{command}: {err}"
        );
        assert!(err.contains(&want), "{command}: {err}");
        assert_same(&before, &n.snapshot(), command);
    }
    let status = n.run(&["status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(1), "{out}\n{}", stderr(&status));
    assert!(out.contains(&format!("problem: {want}")), "{out}");
    assert_same(&before, &n.snapshot(), "status");
}
