//! `k8s-nokmem verify` as a user runs it: recorded node trees (tests/fixtures/cgroup), bad
//! input, the output formats, and this machine's real cgroup v1 memory hierarchy.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::node::{self, NodeRoot};
use common::{assert_contains, assert_starts_with};

const BIN: &str = env!("CARGO_BIN_EXE_k8s-nokmem");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cgroup")
        .join(name)
}

/// A temp dir kept (and printed) when K8S_NOKMEM_KEEP_TMP=1.
struct Tmp(Option<tempfile::TempDir>, PathBuf);

impl Tmp {
    fn new() -> Tmp {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Tmp(Some(dir), path)
    }
    fn path(&self) -> &Path {
        &self.1
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        if std::env::var_os("K8S_NOKMEM_KEEP_TMP").is_some_and(|v| v == "1") {
            if let Some(d) = self.0.take() {
                eprintln!("kept {}", d.keep().display());
            }
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(BIN).arg("verify").args(args).output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "verify panicked: {}",
        run.stderr
    );
    run
}

/// verify a node tree (fixture or copy) with an empty --root (package not installed).
fn verify_node(node: &Path, root: &Path, extra: &[&str]) -> Run {
    let proc_root = node.join("proc");
    let cgroup_root = node.join("sys/fs/cgroup");
    let mut args = vec![
        "--root",
        root.to_str().unwrap(),
        "--proc-root",
        proc_root.to_str().unwrap(),
        "--cgroup-root",
        cgroup_root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// verify with this machine's /proc (processes, mountinfo) over a fixture's cgroups, as a
/// 4.4 kernel: the running-kubelet check needs real processes.
fn verify_host_proc(node: &Path, root: &Path, extra: &[&str]) -> Run {
    let cgroup_root = node.join("sys/fs/cgroup");
    let mut args = vec![
        "--root",
        root.to_str().unwrap(),
        "--cgroup-root",
        cgroup_root.to_str().unwrap(),
        "--kernel-release",
        "4.4.0-131-generic",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn copy_fixture(name: &str, to: &Path) -> PathBuf {
    fs::create_dir_all(to).unwrap();
    let dst = to.join(name);
    let ok = Command::new("cp")
        .arg("-a")
        .arg(fixture(name))
        .arg(&dst)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {name}");
    dst
}

#[test]
fn a_4_4_node_with_nokmem_pods_is_ok() {
    let root = Tmp::new();
    let r = verify_node(&fixture("4.4-nokmem"), root.path(), &["--json"]);
    let report = r.json();
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(report["status"], "ok");
    let kmem = check(&report, "cgroup-kmem");
    assert_eq!(kmem["status"], "ok");
    // kubepods, 2 QoS, 3 pods, 4 containers, 1 docker container
    assert_eq!(kmem["evidence"]["checked"], 11, "{kmem:#}");
    assert_eq!(check(&report, "kernel-kmem")["status"], "ok");
    let payload = check(&report, "payload");
    assert_eq!(payload["status"], "skipped");
    assert!(payload["summary"]
        .as_str()
        .unwrap()
        .starts_with("k8s-nokmem not installed: payload checks skipped"));

    let human = verify_node(&fixture("4.4-nokmem"), root.path(), &[]);
    assert_eq!(human.code, 0);
    assert_starts_with(
        &human.stdout,
        "k8s-nokmem verify: OK (Linux 4.4.0-131-generic",
        "verify's output",
    );
    assert!(
        human.stdout.ends_with("to do: nothing\n"),
        "{}",
        human.stdout
    );
}

#[test]
fn a_4_4_node_with_a_kmem_pod_names_the_pod_and_container() {
    let root = Tmp::new();
    let node = fixture("4.4-kmem");
    let kmsg = node.join("kmsg");
    let r = verify_node(
        &node,
        root.path(),
        &["--json", "--kernel-log", kmsg.to_str().unwrap()],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    let report = r.json();
    assert_eq!(report["status"], "problem");
    let kmem = check(&report, "cgroup-kmem");
    assert_eq!(kmem["status"], "problem");
    let cgroups = kmem["evidence"]["cgroups"].as_array().unwrap();
    assert_eq!(cgroups.len(), 2, "the pod and its container: {kmem:#}");
    let container = cgroups
        .iter()
        .find(|c| !c["container_id"].is_null())
        .unwrap();
    assert_eq!(container["pod_uid"], "0d5c3c1a-6ec5-4e8c-9b9e-2f0b1e2f3a4b");
    assert_eq!(
        container["container_id"],
        "4b2de9c5ccf65404e5a1796c9746e56fd0c799d935df66b9bfe0697dd7933112"
    );
    assert_eq!(container["kmem_usage_bytes"], 5861376);
    assert_eq!(
        container["slabinfo_entries"], 0,
        "usage > 0 needs no slabinfo"
    );
    let log = check(&report, "kernel-log");
    assert_eq!(log["status"], "problem");
    assert_eq!(log["evidence"]["slub"], 1);

    // with the package installed and swapped after these pods were made
    let state = root.path().join("var/lib/k8s-nokmem");
    fs::create_dir_all(&state).unwrap();
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    fs::write(state.join("state.json"), state_swapped_at(later)).unwrap();
    let human = verify_node(&node, root.path(), &[]);
    assert_eq!(human.code, 1);
    assert_contains(
        &human.stdout,
        &[
            "pod 0d5c3c1a-6ec5-4e8c-9b9e-2f0b1e2f3a4b container ",
            "pods from before the swap: recreate them or reboot",
        ],
        "verify's output",
    );

    // swapped long before these cgroups were made: the binaries that made them enable kmem
    fs::write(state.join("state.json"), state_swapped_at(1_000_000_000)).unwrap();
    let r = verify_node(&node, root.path(), &["--json"]);
    let kmem = check(&r.json(), "cgroup-kmem").clone();
    assert_eq!(kmem["evidence"]["swap_time"], 1000000000);
    // the pod cgroup (made by kubelet) and its container, which inherits from it
    assert_eq!(
        kmem["evidence"]["cgroups"][0]["cause"], "after-swap",
        "{kmem:#}"
    );
    assert_eq!(
        kmem["evidence"]["cgroups"][1]["cause"], "inherited-from-pod",
        "{kmem:#}"
    );
    assert_contains(
        kmem["fix"].as_str().unwrap(),
        &["k8s-nokmem status"],
        format!("{kmem:#}"),
    );
}

#[test]
fn a_3_10_node_whose_slabinfo_answers_eio_is_ok() {
    let root = Tmp::new();
    let r = verify_node(&fixture("3.10-eio"), root.path(), &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let report = r.json();
    assert_eq!(check(&report, "cgroup-kmem")["status"], "ok");
    assert_eq!(check(&report, "cgroup-kmem")["evidence"]["checked"], 7);
    assert_eq!(report["node"]["kernel_release"], "3.10.0-862.el7.x86_64");
}

#[test]
fn zombie_cgroups_warn_then_fail() {
    let root = Tmp::new();
    let r = verify_node(&fixture("zombies-60000"), root.path(), &["--json"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let report = r.json();
    let z = check(&report, "zombie-cgroups");
    assert_eq!(z["status"], "problem");
    assert_eq!(z["evidence"]["zombies"], 60000);
    assert!(z["fix"].as_str().unwrap().contains("reboot"));

    // 40,000 zombies: past the default warning (50%), short of the problem (90%)
    let tmp = Tmp::new();
    let node = copy_fixture("zombies-60000", tmp.path());
    let cgroups = node.join("proc/cgroups");
    let text = fs::read_to_string(&cgroups)
        .unwrap()
        .replace("\t60006\t", "\t40006\t");
    fs::write(&cgroups, text).unwrap();
    let r = verify_node(&node, root.path(), &["--json"]);
    assert_eq!(r.code, 0, "a warning keeps exit 0: {}", r.stdout);
    assert_eq!(check(&r.json(), "zombie-cgroups")["status"], "warning");
    // ... and ok when the warning threshold is raised
    let conf = tmp.path().join("k.conf");
    fs::write(&conf, "[verify]\nzombie-warn-percent = 70\n").unwrap();
    let r = verify_node(
        &node,
        root.path(),
        &["--json", "--config", conf.to_str().unwrap()],
    );
    assert_eq!(check(&r.json(), "zombie-cgroups")["status"], "ok");
}

#[test]
fn cgroup_v2_only_is_not_this_leak() {
    let root = Tmp::new();
    let r = verify_node(&fixture("v2-only"), root.path(), &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let report = r.json();
    assert_eq!(report["node"]["cgroup_setup"], "unified");
    assert!(check(&report, "cgroup-mode")["summary"]
        .as_str()
        .unwrap()
        .contains("not affected"));
    assert_eq!(check(&report, "cgroup-kmem")["status"], "skipped");
}

#[test]
fn booted_with_nokmem_is_ok() {
    let root = Tmp::new();
    let r = verify_node(&fixture("nokmem-cmdline"), root.path(), &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let report = r.json();
    assert_eq!(report["node"]["cmdline_nokmem"], true);
    assert!(check(&report, "kernel-kmem")["summary"]
        .as_str()
        .unwrap()
        .contains("cgroup.memory=nokmem"));
}

/// Linux < 4.6 ignores `cgroup.memory=nokmem` (a 4.6 switch; some vendor kernels backport
/// it): booted with it, the kernel check never says kmem is off kernel-wide; when cgroups
/// account kmem all the same, it says this kernel ignores the parameter.
#[test]
fn before_4_6_the_nokmem_parameter_may_be_ignored() {
    let tmp = Tmp::new();
    let root = Tmp::new();
    let with_param = |name: &str| {
        let node = copy_fixture(name, &tmp.path().join("with-param"));
        let cmdline = node.join("proc/cmdline");
        let text = fs::read_to_string(&cmdline).unwrap();
        fs::write(&cmdline, format!("{} cgroup.memory=nokmem\n", text.trim())).unwrap();
        node
    };

    // kmem off in every cgroup: the parameter may work (a backport) or runc/kubelet are nokmem
    for name in ["4.4-nokmem", "3.10-eio"] {
        let node = with_param(name);
        let r = verify_node(&node, root.path(), &["--json"]);
        assert_eq!(r.code, 0, "{name}: {}", r.stdout);
        let report = r.json();
        assert_eq!(report["node"]["cmdline_nokmem"], true, "{name}");
        let kernel = check(&report, "kernel-kmem");
        let summary = kernel["summary"].as_str().unwrap();
        assert_eq!(kernel["status"], "ok", "{name}: {kernel:#}");
        assert!(
            summary.contains("may be ignored here") && !summary.contains("off kernel-wide"),
            "{name}: {kernel:#}"
        );
        fs::remove_dir_all(tmp.path().join("with-param")).unwrap();
    }

    // a pod and its container account kmem: this kernel ignores the parameter
    let node = with_param("4.4-kmem");
    let r = verify_node(&node, root.path(), &["--json"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let report = r.json();
    let kernel = check(&report, "kernel-kmem");
    assert_eq!(kernel["status"], "problem", "{kernel:#}");
    assert_contains(
        kernel["summary"].as_str().unwrap(),
        &["Linux 4.4.0-131-generic ignores cgroup.memory=nokmem"],
        format!("{kernel:#}"),
    );
    assert_contains(
        kernel["fix"].as_str().unwrap(),
        &["nokmem runc and kubelet"],
        format!("{kernel:#}"),
    );
    // the cgroups' causes are those of a kernel without the parameter, not "despite nokmem"
    let kmem = check(&report, "cgroup-kmem");
    assert_eq!(kmem["status"], "problem");
    assert_eq!(
        kmem["evidence"]["cgroups"][0]["cause"], "not-swapped",
        "{kmem:#}"
    );
    let human = verify_node(&node, root.path(), &[]);
    assert_contains(
        &human.stdout,
        &["ignores cgroup.memory=nokmem"],
        "verify's output",
    );
}

#[test]
fn kernel_wide_kmem_severity_follows_the_config() {
    let root = Tmp::new();
    let node = fixture("4.4-nokmem");
    let conf = root.path().join("k.conf");
    let cases = [
        ("problem", 1, "problem"),
        ("warning", 0, "warning"),
        ("ignore", 0, "ok"),
    ];
    for (severity, code, status) in cases {
        fs::write(&conf, format!("[verify]\nkernel-wide-kmem = {severity}\n")).unwrap();
        let r = verify_node(
            &node,
            root.path(),
            &[
                "--json",
                "--kernel-release",
                "5.4.0-150-generic",
                "--config",
                conf.to_str().unwrap(),
            ],
        );
        assert_eq!(r.code, code, "case {severity}: {}", r.stdout);
        let k = check(&r.json(), "kernel-kmem").clone();
        assert_eq!(k["status"], status, "case {severity}");
        if severity != "ignore" {
            assert!(
                k["fix"].as_str().unwrap().contains("cgroup.memory=nokmem"),
                "case {severity}"
            );
        }
    }
}

#[test]
fn unreadable_cgroup_files_are_unknown_with_the_reason() {
    let root = Tmp::new();
    let tmp = Tmp::new();
    let node = copy_fixture("4.4-nokmem", tmp.path());
    // root reads any file: a directory where the file should be cannot be read
    let usage = node
        .join("sys/fs/cgroup/memory/kubepods/burstable")
        .join("memory.kmem.usage_in_bytes");
    fs::remove_file(&usage).unwrap();
    fs::create_dir(&usage).unwrap();
    let r = verify_node(&node, root.path(), &["--json"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    let report = r.json();
    assert_eq!(report["status"], "unknown");
    let kmem = check(&report, "cgroup-kmem");
    assert_eq!(kmem["status"], "unknown");
    assert_contains(
        kmem["summary"].as_str().unwrap(),
        &["kubepods/burstable/memory.kmem.usage_in_bytes"],
        format!("{kmem:#}"),
    );

    // a problem outranks the unknown
    fs::write(
        node.join("sys/fs/cgroup/memory/kubepods/besteffort/memory.kmem.usage_in_bytes"),
        "4096\n",
    )
    .unwrap();
    let r = verify_node(&node, root.path(), &["--npd"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.starts_with("problem: ") && r.stdout.contains("; cgroup-kmem: "),
        "{}",
        r.stdout
    );
}

/// `verify` with these arguments, killed (and the test failed) if it runs longer than
/// `limit`: a read that blocks or never ends shows as a timeout, not a hung test.
fn run_within(args: &[&str], limit: Duration) -> Run {
    let out = Tmp::new();
    let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
    let started = Instant::now();
    let mut child = Killed(
        Command::new(BIN)
            .arg("verify")
            .args(args)
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < limit,
            "verify {} still runs after {limit:?}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: fs::read_to_string(&stdout).unwrap(),
        stderr: fs::read_to_string(&stderr).unwrap(),
    };
    assert!(
        status.code().is_some() && !run.stderr.contains("panicked"),
        "verify died ({status}): {}",
        run.stderr
    );
    run
}

/// verify a copy of 4.4-nokmem after `spoil` changed its kubepods tree: exit 2 within 20 s,
/// cgroup-kmem unknown, and one of its errors names `file` and says `why`.
#[track_caller]
fn assert_spoiled_file_is_named(spoil: impl FnOnce(&Path), file: &str, why: &str) {
    let root = Tmp::new();
    let tmp = Tmp::new();
    let node = copy_fixture("4.4-nokmem", tmp.path());
    spoil(&node.join("sys/fs/cgroup/memory/kubepods"));
    let (proc_root, cgroup_root) = (node.join("proc"), node.join("sys/fs/cgroup"));
    let r = run_within(
        &[
            "--root",
            root.path().to_str().unwrap(),
            "--proc-root",
            proc_root.to_str().unwrap(),
            "--cgroup-root",
            cgroup_root.to_str().unwrap(),
            "--json",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let report = r.json();
    let kmem = check(&report, "cgroup-kmem");
    assert_eq!(kmem["status"], "unknown", "{kmem:#}");
    let named = kmem["evidence"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .any(|e| e.contains(file) && e.contains(why));
    assert!(named, "no error names {file}: {why}\n{kmem:#}");
}

/// A FIFO where a kmem file should be (nothing ever writes it: a plain open waits forever)
/// is an unreadable file named in the report, and verify ends at once.
#[test]
fn a_fifo_in_place_of_a_cgroup_file_is_refused_not_opened() {
    assert_spoiled_file_is_named(
        |kubepods| {
            let fifo = kubepods.join("burstable/memory.kmem.usage_in_bytes");
            fs::remove_file(&fifo).unwrap();
            common::ok(Command::new("mkfifo").arg(&fifo));
        },
        "burstable/memory.kmem.usage_in_bytes",
        "it is a FIFO, not a regular file",
    );
}

/// A 4 GiB sparse file in place of a cgroup's slabinfo (read whole: 4 GiB of memory, or an
/// abort) is refused at the bound, named in the report, and verify ends at once.
#[test]
fn a_huge_cgroup_file_is_refused_at_the_bound() {
    assert_spoiled_file_is_named(
        |kubepods| {
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(kubepods.join("besteffort/memory.kmem.slabinfo"))
                .unwrap()
                .set_len(4 << 30)
                .unwrap();
        },
        "besteffort/memory.kmem.slabinfo",
        "more than 1048576 bytes",
    );
}

#[test]
fn a_garbled_proc_cgroups_is_unknown_with_the_reason() {
    let root = Tmp::new();
    let tmp = Tmp::new();
    let node = copy_fixture("4.4-nokmem", tmp.path());
    fs::write(
        node.join("proc/cgroups"),
        "#subsys_name\thierarchy\nmemory\t5\tlots\n\u{1}\n",
    )
    .unwrap();
    let r = verify_node(&node, root.path(), &["--json"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    let z = check(&r.json(), "zombie-cgroups").clone();
    assert_eq!(z["status"], "unknown");
    let summary = z["summary"].as_str().unwrap();
    assert!(
        summary.contains("proc/cgroups") && summary.contains("line 2"),
        "{summary}"
    );

    // no mountinfo at all
    fs::remove_file(node.join("proc/self/mountinfo")).unwrap();
    let r = verify_node(&node, root.path(), &[]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_contains(
        &r.stdout,
        &["failed to read the mount table: failed to read '"],
        "verify's output",
    );
}

#[test]
fn a_missing_manifest_of_an_installed_package_is_unknown() {
    let root = Tmp::new();
    // dpkg says the package is installed (its status database, read with dpkg-query)
    let admin = root.path().join("var/lib/dpkg");
    fs::create_dir_all(admin.join("updates")).unwrap();
    fs::write(
        admin.join("status"),
        "Package: k8s-nokmem\nStatus: install ok installed\nPriority: optional\n\
         Section: admin\nMaintainer: t <t@example.org>\nArchitecture: amd64\n\
         Version: 1.20.2+nokmem0.1.0-1\nDescription: t\n",
    )
    .unwrap();
    let r = verify_node(&fixture("4.4-nokmem"), root.path(), &["--json"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    let p = check(&r.json(), "payload").clone();
    assert_eq!(p["status"], "unknown");
    assert_contains(
        p["summary"].as_str().unwrap(),
        &["/usr/lib/k8s-nokmem/MANIFEST"],
        format!("{p:#}"),
    );
}

#[test]
fn textfile_passes_promtool_and_state_is_written() {
    let root = Tmp::new();
    let dir = Tmp::new();
    let r = verify_node(
        &fixture("4.4-kmem"),
        root.path(),
        &[
            "--npd",
            "--state",
            "--textfile",
            dir.path().to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.lines().count(),
        1,
        "npd prints one line: {}",
        r.stdout
    );
    let prom = dir.path().join("k8s_nokmem.prom");
    let text = fs::read_to_string(&prom).unwrap();
    assert_contains(
        &text,
        &[
            "k8s_nokmem_verify_checked_cgroups 8\n",
            "k8s_nokmem_verify_kmem_active_cgroups 2\n",
            "k8s_nokmem_verify_zombie_cgroups 4000\n",
            "k8s_nokmem_verify_status{status=\"problem\"} 1\n",
            "k8s_nokmem_verify_last_run_timestamp_seconds ",
        ],
        "the textfile",
    );
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left"
    );
    let state: Value = serde_json::from_str(
        &fs::read_to_string(root.path().join("run/k8s-nokmem/verify.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["status"], "problem");

    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(fs::File::open(&prom).unwrap())
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => common::cannot_run(&format!(
            "promtool not found ({e}); install it with `apt-get install prometheus`"
        )),
    }

    // --textfile without DIR uses [verify] textfile-dir, and only when it exists
    let conf = root.path().join("k.conf");
    fs::write(
        &conf,
        "[verify]\ntextfile-dir = /var/lib/node_exporter/textfile_collector\n",
    )
    .unwrap();
    let r = verify_node(
        &fixture("4.4-nokmem"),
        root.path(),
        &["--textfile", "--config", conf.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        !root.path().join("var/lib/node_exporter").exists(),
        "no directory created"
    );
    let collector = root.path().join("var/lib/node_exporter/textfile_collector");
    fs::create_dir_all(&collector).unwrap();
    let r = verify_node(
        &fixture("4.4-nokmem"),
        root.path(),
        &["--config", conf.to_str().unwrap(), "--textfile"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(collector.join("k8s_nokmem.prom").is_file());
}

/// node_exporter's textfile directory is often group-writable by a non-root group: someone
/// who can write it plants links at the file's final name and at the temp name verify used
/// to use. Root's hourly verify must write neither link's target nor change its mode.
#[test]
fn a_link_planted_in_the_textfile_dir_is_never_followed() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = Tmp::new();
    let outside = Tmp::new();
    let dir = Tmp::new();
    let victims = [
        outside.path().join("shadow"),
        outside.path().join("sudoers"),
    ];
    for v in &victims {
        fs::write(v, b"secret\n").unwrap();
        fs::set_permissions(v, fs::Permissions::from_mode(0o600)).unwrap();
    }
    // owned by nobody, writable by its group, as node_exporter's directory is
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o775)).unwrap();
    symlink(
        &victims[0],
        dir.path().join(".k8s_nokmem.prom.k8s-nokmem-new"),
    )
    .unwrap();
    symlink(&victims[1], dir.path().join("k8s_nokmem.prom")).unwrap();

    let r = verify_node(
        &fixture("4.4-nokmem"),
        root.path(),
        &["--textfile", dir.path().to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for v in &victims {
        let meta = fs::metadata(v).unwrap();
        assert_eq!(
            fs::read(v).unwrap(),
            b"secret\n",
            "{} was written",
            v.display()
        );
        assert_eq!(meta.mode() & 0o7777, 0o600, "{} was chmod-ed", v.display());
    }
    let prom = dir.path().join("k8s_nokmem.prom");
    assert!(
        fs::symlink_metadata(&prom).unwrap().is_file(),
        "the planted link is replaced by the metrics file"
    );
    assert!(fs::read_to_string(&prom)
        .unwrap()
        .contains("k8s_nokmem_verify_status{status=\"ok\"} 1\n"));

    // a textfile directory that is itself a link is refused
    let link = outside.path().join("collector");
    symlink(dir.path(), &link).unwrap();
    let r = verify_node(
        &fixture("4.4-nokmem"),
        root.path(),
        &["--textfile", link.to_str().unwrap()],
    );
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("it is a symlink"), "{}", r.stderr);
}

/// A directory named k8s_nokmem.prom in the textfile dir (left by a bad hand or another
/// tool) is not ours to remove and no rename replaces it: a warning, not exit 2 on every run.
#[test]
fn a_directory_named_like_the_textfile_is_a_warning() {
    let root = Tmp::new();
    let textfile = Tmp::new();
    let blocker = textfile.path().join("k8s_nokmem.prom");
    fs::create_dir(&blocker).unwrap();
    fs::write(blocker.join("keep"), "theirs").unwrap();
    for _ in 0..2 {
        let r = verify_node(
            &fixture("4.4-nokmem"),
            root.path(),
            &[
                "--json",
                "--state",
                "--textfile",
                textfile.path().to_str().unwrap(),
            ],
        );
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        let report = r.json();
        assert_eq!(report["status"], "ok");
        let warning = check(&report, "textfile");
        assert_eq!(warning["status"], "warning", "{warning:#}");
        assert_contains(
            warning["summary"].as_str().unwrap(),
            &["k8s_nokmem.prom' is a directory"],
            format!("{warning:#}"),
        );
        assert!(
            r.stderr.contains("warn: ") && r.stderr.contains("is a directory"),
            "{}",
            r.stderr
        );
        // the state file says so too
        let state: Value = serde_json::from_slice(
            &fs::read(root.path().join("run/k8s-nokmem/verify.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(check(&state, "textfile")["status"], "warning");
    }
    // their directory is untouched, and nothing of ours is left beside it
    assert_eq!(fs::read_to_string(blocker.join("keep")).unwrap(), "theirs");
    let names: Vec<_> = fs::read_dir(textfile.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["k8s_nokmem.prom"]);
}

#[test]
fn an_unwritable_textfile_dir_is_unknown() {
    let root = Tmp::new();
    let r = verify_node(
        &fixture("4.4-nokmem"),
        root.path(),
        &["--textfile", "/nonexistent/dir"],
    );
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("failed to open directory '/nonexistent/dir'"),
        "{}",
        r.stderr
    );
}

/// A kubepods-like tree in this machine's real cgroup v1 memory hierarchy with a real
/// process charging kernel memory in its container cgroup. Dropping it kills the process
/// and removes the cgroups (deepest first), also when the test fails.
struct RealTree {
    base: PathBuf,
    dirs: Vec<PathBuf>,
    child: Option<Child>,
    files: Tmp,
}

impl Drop for RealTree {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(self.files.path().join("f"));
        for dir in self.dirs.iter().rev() {
            for _ in 0..50 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            if dir.exists() {
                eprintln!("could not remove test cgroup '{}'", dir.display());
            }
        }
    }
}

/// Remove test trees left by runs that were killed before their guard ran (their PID is gone).
fn reap_stale_test_cgroups(memory: &Path) {
    fn rmdir_tree(dir: &Path) {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path());
                }
            }
        }
        let _ = fs::remove_dir(dir);
    }
    let Ok(entries) = fs::read_dir(memory) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("k8s-nokmem-test-") else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            eprintln!("removing stale test cgroup tree '{}'", e.path().display());
            rmdir_tree(&e.path());
        }
    }
}

#[test]
fn real_cgroup_v1_tree_reports_the_kernel_wide_rule_and_the_cgroup() {
    let memory = Path::new("/sys/fs/cgroup/memory");
    let usable =
        memory.join("memory.kmem.usage_in_bytes").exists() && nix::unistd::geteuid().is_root();
    if !usable {
        common::cannot_run(
            "needs root and a cgroup v1 memory hierarchy with kmem files at /sys/fs/cgroup/memory; \
             run it as root (`sudo -E cargo test --test verify`) on a cgroup v1 host, e.g. booted \
             with systemd.unified_cgroup_hierarchy=0",
        );
        return;
    }
    reap_stale_test_cgroups(memory);
    let uid = "5b0c6d4e-3f2a-4b1c-9d8e-7f6a5b4c3d2e";
    let cid = "1f3e5d7c9b2a4f6e8d0c1b3a5f7e9d2c4b6a8f0e1d3c5b7a9f2e4d6c8b0a1f3e";
    let base = memory.join(format!("k8s-nokmem-test-{}", std::process::id()));
    let container = base.join(format!("kubepods/burstable/pod{uid}/{cid}"));
    let mut tree = RealTree {
        dirs: vec![],
        base: base.clone(),
        child: None,
        files: Tmp::new(),
    };
    let mut dir = base.clone();
    tree.dirs.push(dir.clone());
    fs::create_dir(&dir).unwrap();
    for part in ["kubepods", "burstable", &format!("pod{uid}"), cid] {
        dir = dir.join(part);
        fs::create_dir(&dir).unwrap();
        tree.dirs.push(dir.clone());
    }
    // the child joins the container cgroup, then creates files (dentries and inodes are
    // kernel memory charged to its cgroup) and waits
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && mkdir '{f}' && i=0 && while [ $i -lt 500 ]; do echo x > '{f}'/$i; i=$((i+1)); done && echo ready && exec sleep 300",
        container.display(),
        f = tree.files.path().join("f").display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    tree.child = Some(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let usage_file = container.join("memory.kmem.usage_in_bytes");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(&usage_file).unwrap().trim() == "0" {
        assert!(Instant::now() < deadline, "kmem usage stayed 0");
        std::thread::sleep(Duration::from_millis(100));
    }

    // a cgroup root whose memory hierarchy is the test parent
    let croot = Tmp::new();
    symlink(&tree.base, croot.path().join("memory")).unwrap();
    let root = Tmp::new();
    let r = run(&[
        "--json",
        "--root",
        root.path().to_str().unwrap(),
        "--cgroup-root",
        croot.path().to_str().unwrap(),
    ]);
    let report = r.json();
    assert_eq!(r.code, 1, "{}", r.stdout);
    let kernel = check(&report, "kernel-kmem");
    assert_eq!(kernel["status"], "problem", "{kernel:#}");
    assert!(kernel["summary"]
        .as_str()
        .unwrap()
        .contains("accounts kmem in every cgroup v1 memory cgroup"));
    let kmem = check(&report, "cgroup-kmem");
    let listed = kmem["evidence"]["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["container_id"] == cid)
        .unwrap_or_else(|| panic!("container not listed: {kmem:#}"));
    assert_eq!(listed["pod_uid"], uid);
    assert_eq!(listed["cause"], "kernel-wide");
    assert!(listed["kmem_usage_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        listed["path"],
        format!("/kubepods/burstable/pod{uid}/{cid}")
    );
}

/// Ubuntu 16.04 runs systemd 229: the units use only directives it knows (a newer one would
/// be ignored there with a warning, silently changing what the unit does).
#[test]
fn units_use_only_directives_systemd_229_knows() {
    const KNOWN_229: [&str; 28] = [
        "Description",
        "Documentation",
        "After",
        "Before",
        "Wants",
        "ConditionPathExists",
        "Type",
        "ExecStart",
        "TimeoutStartSec",
        "StandardOutput",
        "StandardError",
        "Nice",
        "IOSchedulingClass",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "OnBootSec",
        "OnUnitActiveSec",
        "RandomizedDelaySec",
        "DefaultDependencies",
        "RequiresMountsFor",
        "Conflicts",
        "CapabilityBoundingSet",
        "ReadOnlyDirectories",
        "ReadWriteDirectories",
        "PrivateNetwork",
        "Environment",
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for unit in [
        "k8s-nokmem-verify.service",
        "k8s-nokmem-verify.timer",
        "k8s-nokmem-recover.service",
    ] {
        let text = fs::read_to_string(dir.join(unit)).unwrap();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let key = line.split('=').next().unwrap();
            assert!(
                KNOWN_229.contains(&key) || key == "WantedBy",
                "{unit}: '{key}' is not in the list checked against systemd 229"
            );
        }
        if unit == "k8s-nokmem-verify.service" {
            assert!(text.contains(
                "ExecStart=/usr/sbin/k8s-nokmem verify --wait-for-pods --state --textfile\n"
            ));
            assert!(
                !text.contains("RemainAfterExit=yes"),
                "the timer must be able to start it again"
            );
        }
    }
}

/// Held by the tests that run a process named kubelet as root, or compare the
/// running-kubelet check before and after one: every such process is a candidate for every
/// node root's check, so they take turns.
static KUBELET_PROCESSES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn kubelet_processes() -> std::sync::MutexGuard<'static, ()> {
    KUBELET_PROCESSES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Kills the process on drop (also when the test fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node root where `k8s-nokmem install` swapped in a payload whose kubelet can run (a
/// copy of /bin/sleep), with kubelet 1.20.2-00 from a package.
fn installed_node() -> NodeRoot {
    let n = NodeRoot::bare();
    let sleep = fs::read("/bin/sleep").unwrap();
    n.set_payload(node::PAYLOAD_RUNC, &sleep, "1.20.2");
    n.write("usr/bin/kubelet", node::ORIG_KUBELET, 0o755);
    n.write("usr/sbin/runc", node::ORIG_RUNC, 0o755);
    n.dpkg_package(
        "kubelet",
        "1.20.2-00",
        &["/usr", "/usr/bin", "/usr/bin/kubelet"],
    );
    n.ok(&["install"]);
    n
}

#[test]
fn an_installed_node_checks_payload_diversions_and_the_running_kubelet() {
    let _turn = kubelet_processes();
    let n = installed_node();
    let textfile = Tmp::new();
    let r = verify_node(
        &fixture("4.4-nokmem"),
        &n.path,
        &["--json", "--textfile", textfile.path().to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let report = r.json();
    for name in ["payload", "diversions", "version-skew"] {
        assert_eq!(check(&report, name)["status"], "ok", "{name}: {report:#}");
    }
    assert_eq!(check(&report, "running-kubelet")["status"], "skipped");
    let prom = fs::read_to_string(textfile.path().join("k8s_nokmem.prom")).unwrap();
    assert!(
        prom.contains("k8s_nokmem_verify_binary_match{binary=\"kubelet\"} 1\n"),
        "{prom}"
    );
    assert!(
        prom.contains("k8s_nokmem_verify_binary_match{binary=\"runc\"} 1\n"),
        "{prom}"
    );

    // the payload kubelet runs
    let kubelet = Killed(
        Command::new(n.abs("usr/bin/kubelet"))
            .arg("300")
            .spawn()
            .unwrap(),
    );
    let pid = kubelet.0.id();
    let r = verify_host_proc(&fixture("4.4-nokmem"), &n.path, &["--json"]);
    let running = check(&r.json(), "running-kubelet").clone();
    assert_eq!(running["status"], "ok", "{running:#}");
    assert!(running["summary"]
        .as_str()
        .unwrap()
        .contains(&format!("pid {pid}")));

    // the file is replaced underneath it (a hand-copied binary, no restart)
    fs::remove_file(n.abs("usr/bin/kubelet")).unwrap();
    n.write("usr/bin/kubelet", b"#!/bin/sh\necho hotfix\n", 0o755);
    let r = verify_host_proc(
        &fixture("4.4-nokmem"),
        &n.path,
        &["--json", "--textfile", textfile.path().to_str().unwrap()],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    let report = r.json();
    let running = check(&report, "running-kubelet");
    assert_eq!(running["status"], "problem");
    assert_contains(
        running["summary"].as_str().unwrap(),
        &["deleted or replaced"],
        format!("{running:#}"),
    );
    assert!(running["fix"]
        .as_str()
        .unwrap()
        .contains("systemctl restart kubelet.service"));
    let payload = check(&report, "payload");
    assert_eq!(payload["status"], "problem");
    assert_contains(
        payload["summary"].as_str().unwrap(),
        &["'/usr/bin/kubelet' under root"],
        format!("{payload:#}"),
    );
    let prom = fs::read_to_string(textfile.path().join("k8s_nokmem.prom")).unwrap();
    assert!(
        prom.contains("k8s_nokmem_verify_binary_match{binary=\"kubelet\"} 0\n"),
        "{prom}"
    );
    drop(kubelet);

    // a diversion that no longer holds
    common::ok(
        Command::new("dpkg-divert")
            .arg("--root")
            .arg(&n.path)
            .args([
                "--package",
                "k8s-nokmem",
                "--remove",
                "--no-rename",
                "--divert",
                "/usr/sbin/runc.distrib",
                "/usr/sbin/runc",
            ]),
    );
    let r = verify_node(&fixture("4.4-nokmem"), &n.path, &["--json"]);
    let d = check(&r.json(), "diversions").clone();
    assert_eq!(d["status"], "problem");
    assert_contains(
        d["summary"].as_str().unwrap(),
        &["'/usr/sbin/runc' under root"],
        format!("{d:#}"),
    );
}

/// A state file verify cannot read (a newer k8s-nokmem wrote it, or it is damaged) is
/// reported, naming the file and what to do, never read as "nothing swapped here".
#[test]
fn a_state_file_verify_cannot_read_is_unknown_naming_it_and_the_fix() {
    let n = installed_node();
    let state = n.abs("var/lib/k8s-nokmem/state.json");
    let good = fs::read_to_string(&state).unwrap();
    for (text, says, fix) in [
        (
            good.replacen("\"version\": 1", "\"version\": 7", 1),
            "has version 7",
            "upgrade k8s-nokmem",
        ),
        (
            "{ not json".to_string(),
            "is not valid",
            "move the state file away",
        ),
    ] {
        assert_ne!(text, good);
        fs::write(&state, &text).unwrap();
        let r = verify_node(&fixture("4.4-nokmem"), &n.path, &["--json"]);
        assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
        let report = r.json();
        let c = check(&report, "state");
        assert_eq!(c["status"], "unknown", "{c:#}");
        assert_contains(
            c["summary"].as_str().unwrap(),
            &[&state.display().to_string(), says],
            format!("{c:#}"),
        );
        assert_contains(c["fix"].as_str().unwrap(), &[fix], format!("{c:#}"));
        // the rest is still checked, at the configured paths
        assert_eq!(check(&report, "payload")["status"], "ok", "{report:#}");
    }
}

/// A copy of /bin/sleep named kubelet, grown to 20 GiB with a hole (a sparse file: reading
/// it all takes minutes), world-readable and executable, under the node root (where the
/// running-kubelet check looks when --root is not /).
fn sparse_kubelet(n: &NodeRoot, rel: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    n.write(rel, &fs::read("/bin/sleep").unwrap(), 0o755);
    let path = n.abs(rel);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(20 << 30)
        .unwrap();
    // others must reach it: the node root is a private temp dir
    let mut dir = path.parent();
    while let Some(d) = dir {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        if d == n.path {
            break;
        }
        dir = d.parent();
    }
    path
}

/// `verify --state --json` (this machine's /proc, a 4.4 kernel), killed after `limit`: the
/// report, how long it took, and the reboot-required files it left (removed before the run).
fn timed_verify(n: &NodeRoot, limit: Duration) -> (Value, Duration, Vec<Option<Vec<u8>>>) {
    let flags = ["run/reboot-required", "run/reboot-required.pkgs"];
    for f in flags {
        let _ = fs::remove_file(n.abs(f));
    }
    let cgroup_root = fixture("4.4-nokmem").join("sys/fs/cgroup");
    let started = Instant::now();
    let r = run_within(
        &[
            "--root",
            n.path.to_str().unwrap(),
            "--cgroup-root",
            cgroup_root.to_str().unwrap(),
            "--kernel-release",
            "4.4.0-131-generic",
            "--json",
            "--state",
        ],
        limit,
    );
    let took = started.elapsed();
    let files = flags.iter().map(|f| fs::read(n.abs(f)).ok()).collect();
    (r.json(), took, files)
}

/// The quicker of two runs (the machine is shared: one slow run is noise, not the cost).
fn baseline(n: &NodeRoot) -> (Value, Duration, Vec<Option<Vec<u8>>>) {
    let limit = Duration::from_secs(60);
    let first = timed_verify(n, limit);
    let second = timed_verify(n, limit);
    if second.1 < first.1 {
        second
    } else {
        first
    }
}

#[track_caller]
fn assert_under_a_second_more(took: Duration, base: Duration, running: &str) {
    assert!(
        took < base + Duration::from_secs(1),
        "verify took {took:?} with {running} running, {base:?} without"
    );
}

/// Anyone can name a process kubelet: a user's copy of an executable named kubelet (20 GiB,
/// sparse) neither counts as the running kubelet (no `action: reboot`, no reboot-required)
/// nor gets hashed (the run takes no longer than without it).
#[test]
fn a_process_named_kubelet_that_nobody_runs_is_not_the_running_kubelet() {
    use std::os::unix::process::CommandExt;
    let _turn = kubelet_processes();
    let n = installed_node();
    let (before, base, files_before) = baseline(&n);
    let fake = sparse_kubelet(&n, "home/mallory/kubelet");
    let _mallory = Killed(
        Command::new(&fake)
            .arg("300")
            .uid(65534)
            .gid(65534)
            .spawn()
            .unwrap(),
    );
    let (after, took, files_after) = timed_verify(&n, base + Duration::from_secs(5));
    assert_eq!(
        check(&after, "running-kubelet")["status"],
        check(&before, "running-kubelet")["status"],
        "{:#}",
        check(&after, "running-kubelet")
    );
    assert_eq!(after["action"], before["action"], "{after:#}");
    assert_eq!(after["reboot_required"], before["reboot_required"]);
    assert_eq!(
        files_after, files_before,
        "the reboot-required files under the root"
    );
    assert_under_a_second_more(took, base, "the fake kubelet");
}

/// A kubelet that root runs from a file of another size than the payload is not the payload,
/// told by its size: nothing is hashed.
#[test]
fn a_kubelet_of_another_size_is_not_the_payload_without_hashing_it() {
    let _turn = kubelet_processes();
    let n = installed_node();
    let (_, base, _) = baseline(&n);
    let exe = sparse_kubelet(&n, "opt/bin/kubelet");
    let kubelet = Killed(Command::new(&exe).arg("300").spawn().unwrap());
    let (report, took, _) = timed_verify(&n, base + Duration::from_secs(5));
    let running = check(&report, "running-kubelet");
    assert_eq!(running["status"], "problem", "{running:#}");
    let summary = running["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("pid {}", kubelet.0.id()))
            && summary.contains(&format!("{} bytes, the payload has", 20u64 << 30))
            && summary.contains("a process named kubelet that root runs"),
        "{running:#}"
    );
    assert_under_a_second_more(took, base, "a 20 GiB kubelet");
}

#[test]
fn an_upgraded_kubelet_package_underneath_is_version_skew() {
    let n = installed_node();
    let status = n.abs("var/lib/dpkg/status");
    let text = fs::read_to_string(&status)
        .unwrap()
        .replace("Version: 1.20.2-00", "Version: 1.21.14-00");
    fs::write(&status, text).unwrap();
    let r = verify_node(&fixture("4.4-nokmem"), &n.path, &["--json"]);
    assert_eq!(r.code, 1, "a problem by default (refuse): {}", r.stdout);
    let skew = check(&r.json(), "version-skew").clone();
    assert_eq!(skew["status"], "problem");
    assert_contains(
        skew["summary"].as_str().unwrap(),
        &["upgraded to 1.21.14-00"],
        format!("{skew:#}"),
    );
    n.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        b"[kubelet]\nversion-skew = warn\n",
        0o644,
    );
    let r = verify_node(&fixture("4.4-nokmem"), &n.path, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(check(&r.json(), "version-skew")["status"], "warning");
}

#[test]
fn wait_for_pods_is_bounded_by_boot_wait_after_boot() {
    let root = Tmp::new();
    let tmp = Tmp::new();
    let node = copy_fixture("4.4-nokmem", tmp.path());
    let conf = tmp.path().join("k.conf");
    fs::write(&conf, "[verify]\nboot-wait = 2s\n").unwrap();
    let conf = conf.to_str().unwrap();
    // 0.5 s after boot, no pods yet: waits until 2 s after boot, then checks
    fs::write(node.join("proc/uptime"), "0.50 0.90\n").unwrap();
    let memory = node.join("sys/fs/cgroup/memory/kubepods");
    for qos in ["burstable", "besteffort"] {
        for entry in fs::read_dir(memory.join(qos)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                fs::remove_dir_all(path).unwrap();
            }
        }
    }
    fs::remove_dir_all(memory.join("podf47ac10b-58cc-4372-a567-0e02b2c3d479")).unwrap();
    let start = Instant::now();
    let r = verify_node(
        &node,
        root.path(),
        &["--wait-for-pods", "-v", "--config", conf],
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(10),
        "waited {waited:?}"
    );
    assert!(
        r.stderr
            .contains("verify wait-for-pods: no pod cgroup under '/sys/fs/cgroup/memory' after "),
        "{}",
        r.stderr
    );
    assert_eq!(r.code, 0, "{}", r.stdout);

    // long after boot: no wait at all
    fs::write(node.join("proc/uptime"), "86400.00 1.00\n").unwrap();
    let start = Instant::now();
    verify_node(&node, root.path(), &["--wait-for-pods", "--config", conf]);
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );

    // pods present: no wait either
    let with_pods = copy_fixture("4.4-nokmem", &tmp.path().join("b"));
    fs::write(with_pods.join("proc/uptime"), "0.50 0.90\n").unwrap();
    let start = Instant::now();
    let r = verify_node(
        &with_pods,
        root.path(),
        &["--wait-for-pods", "-v", "--config", conf],
    );
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
    assert!(
        r.stderr.contains("verify wait-for-pods: ok ("),
        "{}",
        r.stderr
    );
}

/// A tiny .deb in `dir`: package `name` at `version`, shipping `file` (absolute) with `bytes`.
fn build_deb(dir: &Path, name: &str, version: &str, file: &str, bytes: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let tree = dir.join(format!("{name}_{version}"));
    fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\n\
             Maintainer: t <t@example.org>\nDescription: test {name}\n"
        ),
    )
    .unwrap();
    let at = tree.join(file.trim_start_matches('/'));
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    fs::write(&at, bytes).unwrap();
    fs::set_permissions(&at, fs::Permissions::from_mode(0o755)).unwrap();
    let deb = dir.join(format!("{name}_{version}_all.deb"));
    common::ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "-b"])
            .arg(&tree)
            .arg(&deb),
    );
    deb
}

/// `dpkg --root R -i DEB`: the real unpack, which honours the diversions under R.
fn dpkg_install(root: &Path, deb: &Path) {
    common::ok(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg("-i")
            .arg(deb),
    );
}

/// A security update of runc (then kubelet) installed by the real dpkg after the swap
/// lands in `.distrib` and never runs: verify warns with a metric, status warns, and
/// re-running install with the same payload does not hide it.
#[test]
fn an_update_of_an_original_package_underneath_is_a_warning_and_a_metric() {
    if !common::root_or_skip("dpkg --root -i") {
        return;
    }
    let n = NodeRoot::bare();
    fs::create_dir_all(n.abs("var/lib/dpkg/updates")).unwrap();
    let debs = Tmp::new();
    let runc_fix: &[u8] = b"#!/bin/sh\necho runc 1.1.5 with a security fix\n";
    let kubelet_fix: &[u8] = b"#!/bin/sh\necho kubelet v1.20.15\n";
    let deb = |name, version, file, bytes| build_deb(debs.path(), name, version, file, bytes);
    dpkg_install(
        &n.path,
        &deb("runc", "1.1.5-1", "/usr/sbin/runc", node::ORIG_RUNC),
    );
    dpkg_install(
        &n.path,
        &deb(
            "kubelet",
            "1.20.2-00",
            "/usr/bin/kubelet",
            node::ORIG_KUBELET,
        ),
    );
    n.ok(&["install"]);
    let state = String::from_utf8(n.read("var/lib/k8s-nokmem/state.json")).unwrap();
    assert!(state.contains("\"version\": \"1.1.5-1\""), "{state}");
    let textfile = Tmp::new();
    let verify = || {
        verify_node(
            &fixture("4.4-nokmem"),
            &n.path,
            &["--json", "--textfile", textfile.path().to_str().unwrap()],
        )
    };
    let prom = || fs::read_to_string(textfile.path().join("k8s_nokmem.prom")).unwrap();
    let r = verify();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let under = check(&r.json(), "updates-underneath").clone();
    assert_eq!(under["status"], "ok", "{under:#}");
    assert!(
        prom().contains("k8s_nokmem_verify_original_upgraded{binary=\"runc\"} 0\n"),
        "{}",
        prom()
    );

    // the security update: dpkg puts it aside, the payload stays
    dpkg_install(
        &n.path,
        &deb("runc", "1.1.5-1+deb12u1", "/usr/sbin/runc", runc_fix),
    );
    assert_eq!(n.read("usr/sbin/runc"), node::PAYLOAD_RUNC);
    assert_eq!(n.read("usr/sbin/runc.distrib"), runc_fix);
    let want = "runc package 'runc' upgraded to 1.1.5-1+deb12u1 underneath";
    let r = verify();
    assert_eq!(r.code, 0, "a warning: {}{}", r.stdout, r.stderr);
    let under = check(&r.json(), "updates-underneath").clone();
    assert_eq!(under["status"], "warning", "{under:#}");
    assert!(
        under["summary"].as_str().unwrap().contains(want)
            && under["summary"]
                .as_str()
                .unwrap()
                .contains("build the payload from it"),
        "{under:#}"
    );
    assert_contains(
        under["fix"].as_str().unwrap(),
        &["build-payload.sh"],
        format!("{under:#}"),
    );
    let text = prom();
    assert!(
        text.contains("k8s_nokmem_verify_original_upgraded{binary=\"runc\"} 1\n")
            && text.contains("k8s_nokmem_verify_original_upgraded{binary=\"kubelet\"} 0\n"),
        "{text}"
    );
    let human = verify_node(&fixture("4.4-nokmem"), &n.path, &[]);
    assert_eq!(human.code, 0, "{}{}", human.stdout, human.stderr);
    assert!(human.stdout.contains(want), "{}", human.stdout);

    let status = n.run(&["status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{out}");
    assert!(out.contains(&format!("warning: {want}")), "{out}");

    // installing the same payload again does not forget what it was built for
    n.ok(&["install"]);
    let r = verify();
    assert_eq!(check(&r.json(), "updates-underneath")["status"], "warning");

    // kubelet too
    dpkg_install(
        &n.path,
        &deb("kubelet", "1.20.15-00", "/usr/bin/kubelet", kubelet_fix),
    );
    assert_eq!(n.read("usr/bin/kubelet.distrib"), kubelet_fix);
    let status = n.run(&["status", "--json"]);
    assert_eq!(status.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&status.stdout).unwrap();
    let warnings = json["warnings"].to_string();
    assert!(
        warnings.contains("kubelet package 'kubelet' upgraded to 1.20.15-00 underneath")
            && warnings.contains(want),
        "{json:#}"
    );
    assert!(
        prom().contains("k8s_nokmem_verify_original_upgraded{binary=\"runc\"} 1\n"),
        "textfile from the last verify run"
    );
    let r = verify();
    assert!(
        prom().contains("k8s_nokmem_verify_original_upgraded{binary=\"kubelet\"} 1\n"),
        "{}{}",
        r.stdout,
        prom()
    );
}

/// A state.json as the install's record step writes it, with kubelet swapped in at `at`
/// (seconds since the epoch).
fn state_swapped_at(at: u64) -> String {
    serde_json::json!({
        "version": 1,
        "targets": {
            "kubelet": {
                "path": "/usr/bin/kubelet",
                "divert_to": "/usr/bin/kubelet.distrib",
                "original": {"kind": "missing"},
                "payload_sha256": "0".repeat(64),
                "payload_version": "v1.20.2",
                "swapped_at": at,
            }
        }
    })
    .to_string()
}

/// Issue 17 item 13: `[services] apply = auto` leaves the old kubelet running where the
/// binaries make no difference to kmem. On a 4.4 kernel that kubelet (the diverted original)
/// is a problem: it switches kmem on for the pods it creates. On Linux >= 4.6 it is no
/// problem, and verify says why, as a warning that does not fail the run.
#[test]
fn an_old_kubelet_left_running_matters_only_where_binaries_switch_kmem_on() {
    let _turn = kubelet_processes();
    let n = installed_node();
    // the original kubelet, started before the swap and renamed by dpkg-divert while it
    // ran (/proc/PID/exe follows the rename); the payload in place
    let payload = fs::read(n.abs("usr/bin/kubelet")).unwrap();
    fs::remove_file(n.abs("usr/bin/kubelet")).unwrap();
    n.write("usr/bin/kubelet", &fs::read("/bin/sleep").unwrap(), 0o755);
    let kubelet = Killed(
        Command::new(n.abs("usr/bin/kubelet"))
            .arg("300")
            .spawn()
            .unwrap(),
    );
    fs::rename(n.abs("usr/bin/kubelet"), n.abs("usr/bin/kubelet.distrib")).unwrap();
    n.write("usr/bin/kubelet", &payload, 0o755);
    let pid = kubelet.0.id();
    let on = |release: &str| {
        let node = fixture("4.4-nokmem");
        let cgroup_root = node.join("sys/fs/cgroup");
        let r = run(&[
            "--root",
            n.path.to_str().unwrap(),
            "--cgroup-root",
            cgroup_root.to_str().unwrap(),
            "--kernel-release",
            release,
            "--json",
        ]);
        check(&r.json(), "running-kubelet").clone()
    };
    let old = on("4.4.0-131-generic");
    assert_eq!(old["status"], "problem", "{old:#}");
    assert!(
        old["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("kubelet (pid {pid}, ")),
        "{old:#}"
    );
    assert!(
        old["summary"]
            .as_str()
            .unwrap()
            .contains("runs the diverted original"),
        "{old:#}"
    );
    let wide = on("5.4.0-150-generic");
    assert_eq!(wide["status"], "warning", "{wide:#}");
    let summary = wide["summary"].as_str().unwrap();
    assert!(
        summary.contains("runs the diverted original")
            && summary.contains("this does not matter for kmem here: Linux 5.4 accounts kmem in every cgroup v1 memory cgroup until booted with cgroup.memory=nokmem, whatever runc and kubelet write"),
        "{wide:#}"
    );
    assert!(
        wide["fix"]
            .as_str()
            .unwrap()
            .starts_with("nothing for kmem"),
        "{wide:#}"
    );
    drop(kubelet);
}
