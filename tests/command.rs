//! The programs the helper starts get a clean signal state: nothing blocked, nothing
//! ignored, whatever the helper blocks during a transaction (SIGHUP, SIGINT, SIGTERM) or
//! inherited as ignored (`nohup apt upgrade`, a shell's background job). A `dpkg-divert`
//! first on `$PATH` records the `SigBlk`/`SigIgn` lines of its own /proc status, then runs
//! the real one, during a real `install --root`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use common::node::{self, NodeRoot};

/// The `SigBlk:`/`SigIgn:` masks in a /proc status text.
fn masks(status: &str) -> Vec<(String, u64)> {
    status
        .lines()
        .filter_map(|l| {
            let (key, hex) = l.split_once(':')?;
            let mask = u64::from_str_radix(hex.trim(), 16).ok()?;
            Some((key.to_string(), mask))
        })
        .collect()
}

/// `script` as `dpkg-divert` in `bin`, and a `$PATH` that finds it first.
fn dpkg_divert_first_on_path(bin: &std::path::Path, script: &str) -> String {
    let wrapper = bin.join("dpkg-divert");
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn children_start_with_no_signal_blocked_or_ignored() {
    let n = NodeRoot::new();
    let bin = tempfile::tempdir().unwrap();
    let seen = bin.path().join("seen");
    let groups = bin.path().join("groups");
    let path = dpkg_divert_first_on_path(
        bin.path(),
        &format!(
            // builtins only: the shell's own state as the helper started it, before it forks
            "#!/bin/sh\nwhile IFS= read -r l; do case \"$l\" in SigBlk:*|SigIgn:*) echo \"$l\" >> '{}';; NSpid:*|NSpgid:*) echo \"$l\" >> '{}';; esac; done < /proc/$$/status\nexec /usr/bin/dpkg-divert \"$@\"\n",
            seen.display(),
            groups.display()
        ),
    );

    let mut cmd = n.helper(&["install"]);
    cmd.env("PATH", &path);
    // the helper as `nohup` in a background job starts it: SIGHUP, SIGINT and SIGQUIT
    // ignored, and (for good measure) SIGUSR1 and SIGTERM blocked
    // SAFETY: only sigaction/sigprocmask between fork and exec
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
            for sig in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGQUIT] {
                signal::signal(sig, SigHandler::SigIgn)?;
            }
            let mut set = SigSet::empty();
            set.add(Signal::SIGUSR1);
            set.add(Signal::SIGTERM);
            signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
            Ok(())
        });
    }
    let out = common::run(&mut cmd);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "install failed:\n{log}");
    assert_eq!(n.read("usr/bin/kubelet"), node::PAYLOAD_KUBELET, "{log}");

    let seen = std::fs::read_to_string(&seen).expect("the dpkg-divert wrapper never ran");
    let masks = masks(&seen);
    assert!(
        masks.len() >= 4,
        "expected SigBlk/SigIgn of at least two dpkg-divert runs:\n{seen}"
    );
    for (key, mask) in &masks {
        assert_eq!(
            *mask, 0,
            "dpkg-divert started with {key} {mask:#x} (signals blocked or ignored by the helper's state):\n{seen}"
        );
    }

    // each child leads a process group of its own: a terminal's SIGINT/SIGHUP for the
    // foreground group (the helper's) does not reach it halfway through its work
    let groups = std::fs::read_to_string(&groups).unwrap();
    let ids: Vec<&str> = groups
        .lines()
        .filter_map(|l| l.split_once(':').map(|(_, v)| v.trim()))
        .collect();
    assert!(ids.len() >= 4, "expected NSpid/NSpgid lines:\n{groups}");
    for pair in ids.chunks(2) {
        assert_eq!(
            pair[0], pair[1],
            "dpkg-divert runs in the helper's process group (pid != pgid):\n{groups}"
        );
    }
}

/// Every program the helper starts goes through `command::Cmd`, where the clean signal
/// state is set: no `Command::new` anywhere else in the shipped code (test-only files and
/// the `#[cfg(test)]` tail of a file aside).
#[test]
fn every_program_is_started_through_cmd() {
    /// Compiled only for the unit tests.
    const TEST_ONLY: &[&str] = &["src/systemd/fake.rs"];
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let top = common::repo();
    let mut files = Vec::new();
    walk(&top.join("src"), &mut files);
    let mut found = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&top)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "src/command.rs"
            || rel.ends_with("/tests.rs")
            || TEST_ONLY.contains(&rel.as_str())
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let shipped = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        for (n, line) in shipped.lines().enumerate() {
            // std's Command (clap's `Command` builds a parser, not a process)
            if line.contains("Command::new(") && !line.contains("clap::Command::new(") {
                found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "programs started without command::Cmd (their children inherit the helper's blocked and ignored signals):\n{}",
        found.join("\n")
    );
}

/// A SIGHUP that arrives during `install` (an ssh session dropped under `apt upgrade`) is
/// held back and reported when the transaction is over, also where /proc is not mounted (a
/// chroot or an image build): the helper asks the kernel (`sigpending(2)`), not
/// /proc/thread-self/status. The `dpkg-divert` first on `$PATH` sends the signal to its
/// parent, the helper, then runs the real one; the helper runs in a mount namespace of its
/// own with an empty tmpfs on /proc. Needs root (`unshare -m`).
#[test]
fn a_signal_held_back_is_reported_without_proc() {
    if !common::root_or_skip("a_signal_held_back_is_reported_without_proc (unshare -m)") {
        return;
    }
    let n = NodeRoot::new();
    let bin = tempfile::tempdir().unwrap();
    let path = dpkg_divert_first_on_path(
        bin.path(),
        "#!/bin/sh\nkill -HUP \"$PPID\"\nexec /usr/bin/dpkg-divert \"$@\"\n",
    );
    // the helper's command line and environment, run by `sh` after the mounts
    let helper = n.helper(&["install"]);
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "sh", "-ec"])
        .arg("mount --make-rprivate /; mount -t tmpfs k8s-nokmem-test /proc; exec \"$@\"")
        .arg("sh")
        .arg(helper.get_program())
        .args(helper.get_args());
    for (key, value) in helper.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd.env("PATH", &path);
    let out = common::run(&mut cmd);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(n.read("usr/bin/kubelet"), node::PAYLOAD_KUBELET, "{log}");
    assert!(
        log.contains("SIGHUP arrived during `k8s-nokmem install`: held back until the transaction was over; exiting now"),
        "the held-back SIGHUP is not reported:\n{log}"
    );
}
