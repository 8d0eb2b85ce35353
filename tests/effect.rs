//! Is the fix in effect, and what will put it in effect? The rule (src/verify/verdict.rs) on
//! recorded node trees (tests/fixtures/cgroup) with a node root where `k8s-nokmem install`
//! swapped the payload in (real `dpkg-divert --root`), as `verify --json`, the summary, the
//! textfile and the node-problem-detector line show it; and Debian's reboot-required
//! convention written by `verify --state`; `install --root` (an image build) judges nothing
//! from the build host.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::node::NodeRoot;

/// The fixtures' boot time (`btime` in their proc/stat): 2001-09-09T01:46:40Z.
const BTIME: i64 = 1_000_000_000;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cgroup")
        .join(name)
}

/// A node root with the payload swapped in.
fn installed() -> NodeRoot {
    let n = NodeRoot::new();
    n.ok(&["install"]);
    n
}

/// Move the swap to `at` (seconds since the epoch): the time install's record step stamped
/// on each target in the state file, as an install at `at` would have left it.
fn swapped_at(n: &NodeRoot, at: i64) {
    let rel = "var/lib/k8s-nokmem/state.json";
    let mut state: Value = serde_json::from_slice(&n.read(rel)).unwrap();
    let targets = state["targets"].as_object_mut().unwrap();
    assert!(!targets.is_empty(), "install recorded no target: {rel}");
    for target in targets.values_mut() {
        assert!(
            target["swapped_at"].is_u64(),
            "install stamped no swap time: {target}"
        );
        target["swapped_at"] = at.into();
    }
    n.write(rel, state.to_string().as_bytes(), 0o644);
}

/// A grub node whose next boot carries the parameter (the drop-in and a regenerated grub.cfg).
fn grub_carrying_the_parameter(n: &NodeRoot) {
    n.write("etc/default/grub", b"GRUB_CMDLINE_LINUX=\"\"\n", 0o644);
    n.write(
        "etc/default/grub.d/99-k8s-nokmem.cfg",
        k8s_nokmem::cmdline::DROPIN_TEXT.as_bytes(),
        0o644,
    );
    n.write(
        "boot/grub/grub.cfg",
        b"menuentry 'Ubuntu' {\n\tlinux\t/boot/vmlinuz-5.4.0-150-generic root=UUID=6a2f ro  quiet cgroup.memory=nokmem\n}\n",
        0o644,
    );
}

struct Verified {
    code: i32,
    json: Value,
    human: String,
    npd: String,
    textfile: String,
    stderr: String,
}

/// `verify` of a fixture node on root `n`, in every output format.
fn verify(n: &NodeRoot, node: &str, extra: &[&str]) -> Verified {
    let node = fixture(node);
    let proc_root = node.join("proc");
    let cgroup_root = node.join("sys/fs/cgroup");
    let textdir = tempfile::tempdir().unwrap();
    let mut base = vec![
        "verify",
        "--proc-root",
        proc_root.to_str().unwrap(),
        "--cgroup-root",
        cgroup_root.to_str().unwrap(),
    ];
    base.extend_from_slice(extra);
    let out = |more: &[&str]| {
        let mut args = base.clone();
        args.extend_from_slice(more);
        let out = n.run(&args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, json, stderr) = out(&["--json", "--textfile", textdir.path().to_str().unwrap()]);
    let json: Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {json}\nstderr: {stderr}"));
    Verified {
        code,
        json,
        human: out(&[]).1,
        npd: out(&["--npd"]).1,
        textfile: fs::read_to_string(textdir.path().join("k8s_nokmem.prom")).unwrap(),
        stderr,
    }
}

/// The action and the reboot flag agree in every output.
fn assert_action(v: &Verified, action: &str, reason_has: &str, case: &str) {
    let j = &v.json;
    assert_eq!(j["action"], action, "{case}: {j:#}\n{}", v.stderr);
    let required = action == "reboot";
    assert_eq!(j["reboot_required"]["required"], required, "{case}");
    let reason = j["reboot_required"]["reason"].as_str().unwrap();
    assert!(reason.contains(reason_has), "{case}: reason '{reason}'");
    let want = match action {
        "none" => "in effect",
        "recreate-pods" => "recreate pods",
        "reboot" => "reboot required",
        _ => "operator action needed",
    };
    assert!(
        v.human.contains(&format!("\neffect: {want}: {reason}\n")),
        "{case}: {}",
        v.human
    );
    assert!(
        v.textfile.contains(&format!(
            "\nk8s_nokmem_reboot_required {}\n",
            u8::from(required)
        )),
        "{case}: {}",
        v.textfile
    );
    assert!(
        v.textfile
            .contains(&format!("\nk8s_nokmem_action{{action=\"{action}\"}} 1\n")),
        "{case}: {}",
        v.textfile
    );
    if action == "none" {
        assert!(!v.npd.contains(" ["), "{case}: {}", v.npd);
    } else {
        assert!(
            v.npd
                .split_once(": ")
                .is_some_and(|(_, rest)| rest.starts_with(&format!("{action}: {reason}; "))),
            "{case}: {}",
            v.npd
        );
    }
}

#[test]
fn linux_4_4_kubepods_accounting_kmem_after_the_swap_needs_a_reboot() {
    let n = installed();
    // swapped after this boot began: the original kubelet made kubepods with kmem
    swapped_at(&n, BTIME + 3600);
    let v = verify(&n, "4.4-kubepods", &[]);
    assert_eq!(v.code, 1, "{}", v.human);
    assert_action(&v, "reboot", "kubelet never recreates them", "4.4 kubepods");
}

#[test]
fn a_kubepods_still_accounting_kmem_after_a_reboot_is_for_the_operator_not_another_reboot() {
    let n = installed();
    // swapped before this boot began: the node rebooted with the payload kubelet in place
    swapped_at(&n, BTIME - 3600);
    let v = verify(&n, "4.4-kubepods", &["--state"]);
    assert_action(
        &v,
        "operator",
        "no reboot requested, it would not help",
        "after a reboot",
    );
    assert!(!n.exists("run/reboot-required"), "no flag: no reboot loop");
    assert!(!n.exists("run/reboot-required.pkgs"));
}

#[test]
fn linux_4_4_with_only_pre_swap_pods_accounting_kmem_needs_them_recreated() {
    let n = installed();
    // the pods' cgroups (made when the fixture was checked out) are older than the swap
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3600;
    swapped_at(&n, later);
    let v = verify(&n, "4.4-kmem", &["--state"]);
    assert_action(
        &v,
        "recreate-pods",
        "only 1 pod from before the swap accounts kmem, and kubepods is clean",
        "4.4 pre-swap",
    );
    assert!(!n.exists("run/reboot-required"));
}

#[test]
fn linux_5_4_without_the_parameter_reboots_when_managed_and_is_for_the_operator_when_left() {
    let n = installed();
    grub_carrying_the_parameter(&n);
    let v = verify(&n, "5.4-kmem", &[]);
    assert_action(
        &v,
        "reboot",
        "the next boot carries it (/boot/grub/grub.cfg)",
        "5.4 manage",
    );

    n.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        b"[kernel]\ncmdline = leave\n",
        0o644,
    );
    let v = verify(&n, "5.4-kmem", &[]);
    assert_action(
        &v,
        "operator",
        "[kernel] cmdline leaves the command line to you: add cgroup.memory=nokmem",
        "5.4 leave",
    );

    // managed, but the node booted after grub.cfg carried it and still lacks it
    n.write("etc/k8s-nokmem/k8s-nokmem.conf", b"", 0o644);
    let cfg = n.abs("boot/grub/grub.cfg");
    let old = std::process::Command::new("touch")
        .args(["-d", "2001-01-01T00:00:00Z"])
        .arg(&cfg)
        .status()
        .unwrap();
    assert!(old.success());
    let v = verify(&n, "5.4-kmem", &[]);
    assert_action(
        &v,
        "operator",
        "does not boot from that file",
        "5.4 not from grub.cfg",
    );
}

#[test]
fn cgroup_v2_and_nokmem_boots_need_nothing() {
    let n = installed();
    let v = verify(&n, "v2-only", &[]);
    assert_action(&v, "none", "no cgroup v1 memory controller", "v2");
    let v = verify(&n, "nokmem-cmdline", &[]);
    assert_action(&v, "none", "booted with cgroup.memory=nokmem", "5.4 nokmem");
    let v = verify(&n, "4.4-nokmem", &[]);
    assert_action(&v, "none", "no pod cgroup accounts kmem", "4.4 clean");
}

/// Point the node's config at a recorded tree, as install and the verify unit read it.
fn config_for(n: &NodeRoot, node: &str, extra: &str) {
    let node = fixture(node);
    n.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        format!(
            "[verify]\nproc-root = {}\ncgroup-root = {}\n{extra}",
            node.join("proc").display(),
            node.join("sys/fs/cgroup").display()
        )
        .as_bytes(),
        0o644,
    );
}

fn pkgs(n: &NodeRoot) -> String {
    String::from_utf8(n.read("run/reboot-required.pkgs")).unwrap()
}

/// The verify unit's runs (`verify --state`) flag a reboot that will help, once. (install
/// under `--root` is an image build and judges nothing: src/swap/tests.rs tests install's
/// flag on the node itself, tests/nspawn_swap.rs on a booted one.)
#[test]
fn verify_runs_flag_reboot_required_once() {
    let n = NodeRoot::new();
    // another package asked first; ours is added after it, once
    n.write(
        "run/reboot-required.pkgs",
        b"linux-image-4.4.0-210-generic\n",
        0o644,
    );
    config_for(&n, "4.4-kubepods", "");
    let log = n.ok(&["install"]);
    assert!(
        log.contains("so this is an image build: nothing is judged from this machine's kernel"),
        "{log}"
    );
    assert!(!n.exists("run/reboot-required"), "{log}");
    let out = n.run(&["verify", "--state"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "kubepods accounts kmem: a problem"
    );
    assert_eq!(
        String::from_utf8(n.read("run/reboot-required")).unwrap(),
        "*** System restart required ***\n"
    );
    let want = "linux-image-4.4.0-210-generic\nk8s-nokmem\n";
    assert_eq!(pkgs(&n), want);

    // a reinstall (nothing to swap) and hourly verify runs: still one line
    n.ok(&["install"]);
    assert_eq!(pkgs(&n), want);
    for _ in 0..3 {
        let out = n.run(&["verify", "--state"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "kubepods accounts kmem: a problem"
        );
    }
    assert_eq!(pkgs(&n), want);
    let names: Vec<String> = fs::read_dir(n.abs("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|f| !f.contains("k8s-nokmem-new")),
        "no temp file left: {names:?}"
    );

    // status shows the flag and the last verdict
    let out = n.run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  reboot   required: /run/reboot-required.pkgs lists linux-image-4.4.0-210-generic, k8s-nokmem\n"),
        "{text}"
    );
    assert!(
        text.contains("  effect   reboot (last verify): kubepods and its QoS cgroups account kmem"),
        "{text}"
    );
    let out = n.run(&["status", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["reboot_flag"]["by_us"], true, "{json:#}");
    assert_eq!(json["effect"]["action"], "reboot", "{json:#}");
}

#[test]
fn nothing_is_flagged_when_a_reboot_cannot_help() {
    let n = NodeRoot::new();
    config_for(&n, "5.4-kmem", "[kernel]\ncmdline = leave\n");
    let log = n.ok(&["install"]);
    assert!(!n.exists("run/reboot-required"), "{log}");
    let out = n.run(&["verify", "--state"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Linux 5.4 accounts kmem"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!n.exists("run/reboot-required"));
    let out = n.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("  reboot   not required (/run/reboot-required absent)\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `apply = reboot` in an image build: the payload is in place, and nothing is flagged (the
/// image's first boot starts the new binaries; its /run starts empty). On the node itself
/// it flags the reboot: src/swap/tests.rs, tests/nspawn_swap.rs.
#[test]
fn apply_reboot_in_an_image_swaps_and_flags_nothing() {
    let n = NodeRoot::new();
    config_for(&n, "v2-only", "[services]\napply = reboot\n");
    let log = n.ok(&["install"]);
    assert_eq!(n.read("usr/bin/kubelet"), common::node::PAYLOAD_KUBELET);
    assert!(!n.exists("run/reboot-required"), "{log}");
    assert!(
        !log.contains("reboot-required") && !log.contains("install: the fix is"),
        "{log}"
    );
}

/// `install --root IMG` (an image build) on build hosts with and without a cgroup v1 memory
/// controller, each faked through `[verify] proc-root`/`cgroup-root` in a config outside
/// the image: the image comes out the same, its kernel command line managed from its own
/// grub files and no reboot flagged; the log says what the image's kernel needs and leaves
/// the verdict to its first boot.
#[test]
fn an_image_built_with_root_is_the_same_whatever_the_build_host_runs() {
    let mut built = Vec::new();
    for host in ["4.4-kubepods", "5.4-kmem", "v2-only"] {
        let image = NodeRoot::new();
        image.write("etc/default/grub", b"GRUB_CMDLINE_LINUX=\"\"\n", 0o644);
        fs::create_dir_all(image.abs("lib/modules/5.4.0-150-generic/kernel")).unwrap();
        let host_dir = tempfile::tempdir().unwrap();
        let host_config = host_dir.path().join("k8s-nokmem.conf");
        let node = fixture(host);
        fs::write(
            &host_config,
            format!(
                "[verify]\nproc-root = {}\ncgroup-root = {}\n",
                node.join("proc").display(),
                node.join("sys/fs/cgroup").display()
            ),
        )
        .unwrap();
        let out = image.run(&["install", "--config", host_config.to_str().unwrap()]);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{host}: {log}");
        assert!(
            log.contains(&format!(
                "install: root is '{}', not /, so this is an image build: nothing is judged from this machine's kernel or cgroups; \
                 its kernel 5.4.0-150-generic accounts kmem in every memory cgroup unless booted with cgroup.memory=nokmem: \
                 /etc/default/grub.d/99-k8s-nokmem.cfg adds it",
                image.path.display()
            )) && log.contains("judged at the image's first boot by k8s-nokmem-verify.service"),
            "{host}: {log}"
        );
        assert!(
            !log.contains("reboot-required") && !log.contains("install: the fix is"),
            "{host}: {log}"
        );
        assert!(
            image.exists("etc/default/grub.d/99-k8s-nokmem.cfg"),
            "{host}"
        );
        assert!(!image.exists("run/reboot-required"), "{host}");
        built.push((host, image.snapshot(), image));
    }
    let (first, want, _) = &built[0];
    for (host, got, _) in &built[1..] {
        assert!(
            want == got,
            "the image built on a {first} host differs from the one built on a {host} host:\n{}",
            common::node::diff(want, got)
        );
    }
}
