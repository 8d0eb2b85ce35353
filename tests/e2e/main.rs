//! End to end on a booted node (issue 6). Driven by `tests/e2e/run.sh`, which builds the
//! artifacts into a directory named by `E2E_ARTIFACTS` and runs
//! `cargo test --test e2e -- --ignored --nocapture --test-threads=1`.
//!
//! One Debian bookworm root (scripts/testbed-root.sh) booted with systemd-nspawn
//! (tests/common/nspawn.rs): systemd as PID 1, dockerd, and a real kubelet 1.20 standalone
//! (static pods, cgroupfs driver, dockershim) installed from a local `kubelet` .deb, the
//! kmem-enabled "original". Packages come from a local apt repository built with reprepro
//! as README's recipe builds the fleet's (tests/e2e/repo.sh: contrib/reprepro/distributions,
//! one component per kubelet minor; the node's line names kubelet-1.20), signed with a
//! throwaway key (`signed-by`) and allowed to unattended-upgrades by
//! contrib/unattended-upgrades/51k8s-nokmem as shipped. The scenarios run in order on that
//! one node, each printing `e2e: PASS|FAIL <name> (<s> s)`; a failure does not stop the
//! later ones, and the test fails at the end when any failed.
//! `E2E_SCENARIOS=node-ready,apt-install,...` runs only the named ones (in the order below;
//! each builds on the node the earlier ones left).
//!
//! Testbed adaptations (this machine kind, see TESTBED.md), all inside the container:
//! - no CAP_SYS_RESOURCE anywhere here, so no process may set a negative `oom_score_adj`,
//!   and runc refuses kubelet's pod sandboxes (-998). docker's default runtime is a wrapper,
//!   /usr/local/sbin/e2e-runc, that raises negative `oomScoreAdj` in the bundle's
//!   config.json to 0 and then executes the real `/usr/sbin/runc` (original or payload);
//! - `/dev/kmsg` does not exist in the container; kubelet's OOM watcher needs it: a
//!   tmpfiles.d line links it to `/dev/console` (as kind's entrypoint does);
//! - the host kernel accounts kmem everywhere (no `cgroup.memory=nokmem` here), so
//!   `verify`'s overall status is a kernel-wide problem; the scenarios check the payload,
//!   diversion, running-kubelet and version-skew checks by name.

#[path = "../common/nspawn.rs"]
mod nspawn;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nspawn::{show, Testbed};
use serde_json::Value;

const ARTIFACTS_ENV: &str = "E2E_ARTIFACTS";
const KEYRING_IN: &str = "/etc/apt/keyrings/k8s-nokmem-e2e.gpg";
/// The node's line for the repository: README's `deb ... stable kubelet-1.X`.
const SOURCES_LIST: &str = "/etc/apt/sources.list.d/k8s-nokmem-e2e.list";
/// The component of the node's (and the payload's) kubelet minor.
const NODE_COMPONENT: &str = "kubelet-1.20";
const STRACE_OUT: &str = "/run/e2e/kubelet.strace";
const STRACE_DROPIN: &str = "/etc/systemd/system/kubelet.service.d/e2e-strace.conf";
const UNITS: [&str; 2] = ["kubelet.service", "docker.service"];
const KUBELET_DIVERSION: &str =
    "diversion of /usr/bin/kubelet to /usr/bin/kubelet.distrib by k8s-nokmem";
const RUNC_DIVERSION: &str = "diversion of /usr/sbin/runc to /usr/sbin/runc.distrib by k8s-nokmem";
const APT: &str = "DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 -y";
/// The shipped conffile; operators set keys in drop-ins next to it, never in it.
const CONFFILE: &str = "/etc/k8s-nokmem/k8s-nokmem.conf";
/// Where the scenarios set `[services] apply` (a drop-in read after the conffile).
const APPLY_DROPIN: &str = "/etc/k8s-nokmem/conf.d/90-e2e-apply.conf";
/// The scenarios' baseline, `apply = restart`: they test the restart and its rollback, and
/// the default (`auto`) restarts nothing on this node's >= 4.6 kernel. Sorted before every
/// other drop-in, so contrib's and the scenarios' win; taken away around a purge check.
const RESTART_DROPIN: &str = "/etc/k8s-nokmem/conf.d/10-e2e-restart.conf";
const RESTART_DROPIN_TEXT: &str = "# k8s-nokmem e2e baseline\n[services]\napply = restart\n";
/// contrib's drop-in for nodes upgraded by unattended-upgrades, where README puts it.
const UU_DROPIN: &str = "/etc/k8s-nokmem/conf.d/50-unattended-upgrades.conf";
const UU_DROPIN_TEXT: &str =
    include_str!("../../contrib/unattended-upgrades/50-unattended-upgrades.conf");
/// README's way to let unattended-upgrades upgrade past an edited conffile (keeping it).
const CONFOLD: &str = "/etc/apt/apt.conf.d/52k8s-nokmem-e2e-confold";
const CONFOLD_TEXT: &str = "Dpkg::Options {\"--force-confdef\"; \"--force-confold\";};\n";
/// unattended-upgrade's words for a package it holds back (run() after conffile_prompt()).
const UU_HELD_BACK: &str =
    "Package k8s-nokmem has conffile prompt and needs to be upgraded manually";

/// The static pod every scenario keeps running (Guaranteed QoS: a memory limit on its pod
/// cgroup, which is what makes runc's libcontainer enable kmem there).
fn pod_manifest(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  \
         hostNetwork: true\n  containers:\n  - name: sleeper\n    image: busybox:e2e\n    \
         imagePullPolicy: Never\n    command: [\"/bin/sleep\", \"1000000\"]\n    resources:\n      \
         limits: {{cpu: 100m, memory: 64Mi}}\n      requests: {{cpu: 100m, memory: 64Mi}}\n"
    )
}

const E2E_RUNC: &str = r#"#!/bin/sh
# k8s-nokmem e2e testbed: this machine lacks CAP_SYS_RESOURCE, so no process may lower
# oom_score_adj below 0 and runc fails on kubelet's pod sandboxes (-998). Raise negative
# oomScoreAdj in the bundle's config.json to 0, then run the real /usr/sbin/runc (the
# original or the nokmem payload, whichever is in place).
bundle=
prev=
for a in "$@"; do
    case "$prev" in --bundle | -b) bundle=$a ;; esac
    case "$a" in --bundle=*) bundle=${a#--bundle=} ;; esac
    prev=$a
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
    sed -i 's/"oomScoreAdj":-[0-9]*/"oomScoreAdj":0/' "$bundle/config.json"
fi
exec /usr/sbin/runc "$@"
"#;

/// contrib's Origins-Pattern for README's repository, where its header puts it.
const UU_ORIGINS: &str = "/etc/apt/apt.conf.d/51k8s-nokmem";
const UU_ORIGINS_TEXT: &str = include_str!("../../contrib/unattended-upgrades/51k8s-nokmem");
const UNATTENDED_CONF: &str = r#"// k8s-nokmem e2e: what the scenarios read from unattended-upgrade
Unattended-Upgrade::MinimalSteps "true";
Unattended-Upgrade::Verbose "true";
"#;

/// The component of README's repository for a kubelet or k8s-nokmem .deb of `version`:
/// `kubelet-MAJOR.MINOR` of the kubelet it is or carries (k8s-nokmem's version starts with
/// its payload kubelet's, scripts/build-deb.sh).
fn component_of(version: &str) -> String {
    let minor: Vec<&str> = version.splitn(3, ['.', '+', '-']).take(2).collect();
    assert!(
        minor.len() == 2 && minor.iter().all(|n| n.parse::<u32>().is_ok()),
        "version '{version}' does not start with a kubelet MAJOR.MINOR"
    );
    format!("kubelet-{}", minor.join("."))
}

/// What run.sh built.
struct Artifacts {
    dir: PathBuf,
}

impl Artifacts {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn deb_version(&self, name: &str) -> String {
        let out = host_ok(
            Command::new("dpkg-deb")
                .arg("-f")
                .arg(self.path(name))
                .arg("Version"),
        );
        out.trim().to_string()
    }
}

fn host_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to start {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The node and what the scenarios learn along the way.
struct Ctx {
    tb: Testbed,
    art: Artifacts,
    repo: PathBuf,
    repo_sh: PathBuf,
    /// sha256 of the packaged originals, recorded before the install.
    orig_runc: String,
    orig_kubelet: String,
    payload_runc: String,
    payload_kubelet: String,
    v1: String,
    v2: String,
    v3: String,
    v4: String,
    v5: String,
    /// Version of the last k8s-nokmem .deb published: what `apt-get install` takes.
    newest: String,
}

impl Ctx {
    fn sh(&self, script: &str) -> String {
        self.tb.sh_ok(script)
    }

    /// Put `deb` into the repository's component of its kubelet minor (replacing the
    /// version there: reprepro keeps one per component); `apt-get install` then takes it.
    fn publish(&mut self, deb: &str) {
        let version = self.art.deb_version(deb);
        host_ok(
            Command::new(&self.repo_sh)
                .arg("publish")
                .arg(&self.repo)
                .arg(component_of(&version))
                .arg(self.art.path(deb)),
        );
        if deb.starts_with("k8s-nokmem-") {
            self.newest = version;
        }
    }

    /// Point the node's apt at one component of the repository (README: a node's line names
    /// its kubelet minor's component) and update.
    fn point_node_at(&self, component: &str) {
        self.sh(&format!(
            "echo 'deb [signed-by={KEYRING_IN}] file:/mnt/share/repo stable {component}' >{SOURCES_LIST}
            apt-get update -qq"
        ));
    }

    fn sha(&self, inside: &str) -> String {
        self.sh(&format!("sha256sum '{inside}' | cut -d' ' -f1"))
            .trim()
            .to_string()
    }

    fn pkg_version(&self, pkg: &str) -> String {
        let out = self.tb.sh(&format!(
            "dpkg-query -W -f='${{Status}} ${{Version}}' {pkg} 2>/dev/null"
        ));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn diversions(&self) -> String {
        self.sh("dpkg-divert --list | sort")
    }

    /// (ActiveEnterTimestampMonotonic, MainPID, ActiveState) of a unit.
    fn unit_state(&self, unit: &str) -> (String, String, String) {
        let mut p = self.tb.unit_props(
            unit,
            &["ActiveEnterTimestampMonotonic", "MainPID", "ActiveState"],
        );
        (
            p.remove("ActiveEnterTimestampMonotonic")
                .unwrap_or_default(),
            p.remove("MainPID").unwrap_or_default(),
            p.remove("ActiveState").unwrap_or_default(),
        )
    }

    /// [`Ctx::unit_state`] of each of [`UNITS`].
    fn unit_states(&self) -> Vec<(String, String, String)> {
        UNITS.iter().map(|u| self.unit_state(u)).collect()
    }

    /// Each of [`UNITS`] is active and neither stopped nor started since `before`
    /// ([`Ctx::unit_states`]); the message names the unit, then `why`.
    fn assert_units_untouched(&self, before: &[(String, String, String)], why: &str) {
        for (unit, b) in UNITS.iter().zip(before) {
            let a = self.unit_state(unit);
            assert_eq!(
                (&a.0, &a.1, a.2.as_str()),
                (&b.0, &b.1, "active"),
                "{unit}: {why}"
            );
        }
    }

    /// Poll `script` inside until it exits 0; panics with its last output after `secs`.
    fn wait_for(&self, what: &str, secs: u64, script: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self.tb.sh(script);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {secs} s waiting for {what}: `{script}`\n{}",
                    show(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The running container of static pod `name`, once kubelet has it running.
    fn pod_container(&self, name: &str, secs: u64) -> String {
        let out = self.wait_for(
            &format!("static pod '{name}' running"),
            secs,
            &format!(
                "id=$(docker ps -q --filter status=running --filter name=k8s_sleeper_{name}-testbed_) \
                 && [ -n \"$id\" ] && echo $id"
            ),
        );
        out.trim().to_string()
    }

    fn apt(&self, args: &str) -> String {
        let out = self.tb.sh(&format!("{APT} {args} </dev/null 2>&1"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "`apt-get {args}` failed ({}):\n{text}",
            out.status
        );
        text
    }

    /// `k8s-nokmem verify --json`: the report (exit 0 or 1; 2 = could not run).
    fn verify_json(&self) -> Value {
        let out = self.tb.sh("k8s-nokmem verify --json");
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(1)),
            "k8s-nokmem verify --json: expected exit 0 or 1, saw {code:?}\n{}",
            show(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "k8s-nokmem verify --json printed no JSON ({e}):\n{}",
                show(&out)
            )
        })
    }
}

/// The status of check `name` in a verify report ("" when there is no such check).
fn check_status(report: &Value, name: &str) -> String {
    report["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

#[track_caller]
fn expect_check(report: &Value, name: &str, want: &[&str]) {
    let seen = check_status(report, name);
    assert!(
        want.contains(&seen.as_str()),
        "verify check '{name}': expected status {want:?}, saw '{seen}'; report:\n{}",
        serde_json::to_string_pretty(report).unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// The node before k8s-nokmem: local repo, images, the original kubelet package, a pod.
fn node_ready(c: &mut Ctx) {
    c.sh(&format!(
        "set -e
        install -d /etc/apt/keyrings /run/e2e
        cp /mnt/share/repo/e2e-archive-keyring.gpg {KEYRING_IN}
        # the container has no network: only the local repository
        mv /etc/apt/sources.list /etc/apt/sources.list.bookworm
        # /dev/kmsg for kubelet's OOM watcher, now and at every boot
        echo 'L /dev/kmsg - - - - /dev/console' >/etc/tmpfiles.d/e2e-kmsg.conf
        systemd-tmpfiles --create /etc/tmpfiles.d/e2e-kmsg.conf
        # images without a registry
        rm -rf /tmp/img && mkdir -p /tmp/img/pause /tmp/img/bb/bin
        cp /mnt/share/pause /tmp/img/pause/pause
        cp /bin/busybox /tmp/img/bb/bin/busybox
        for a in sh sleep cat echo ls; do ln -s busybox /tmp/img/bb/bin/$a; done
        tar -C /tmp/img/pause -c . | docker import --change 'ENTRYPOINT [\"/pause\"]' - k8s.gcr.io/pause:3.2
        tar -C /tmp/img/bb -c . | docker import --change 'CMD [\"/bin/sh\"]' - busybox:e2e
        rm -rf /tmp/img
        "
    ));
    c.point_node_at(NODE_COMPONENT);
    c.tb.write("/usr/local/sbin/e2e-runc", E2E_RUNC, 0o755);
    c.tb.write(
        "/etc/docker/daemon.json",
        "{\"runtimes\": {\"e2e-runc\": {\"path\": \"/usr/local/sbin/e2e-runc\"}}, \"default-runtime\": \"e2e-runc\"}\n",
        0o644,
    );
    c.tb.write(UU_ORIGINS, UU_ORIGINS_TEXT, 0o644);
    c.tb.write(
        "/etc/apt/apt.conf.d/51k8s-nokmem-e2e-unattended",
        UNATTENDED_CONF,
        0o644,
    );
    c.sh("systemctl restart docker.service && docker info --format '{{.DefaultRuntime}}' | grep -qx e2e-runc");
    c.apt("install kubelet=1.20.2-e2e1");
    c.tb.write(
        "/etc/kubernetes/manifests/e2e-sleeper.yaml",
        pod_manifest("e2e-sleeper"),
        0o644,
    );
    c.pod_container("e2e-sleeper", 120);
    c.orig_kubelet = c.sha("/usr/bin/kubelet");
    c.orig_runc = c.sha("/usr/sbin/runc");
    let kubelet_ver = c.sh("/usr/bin/kubelet --version");
    assert_eq!(kubelet_ver.trim(), "Kubernetes v1.20.2", "original kubelet");
    for unit in UNITS {
        assert_eq!(c.unit_state(unit).2, "active", "{unit} before install");
    }
    println!(
        "e2e:   kubelet 1.20.2-e2e1 (sha256 {}), runc {} (sha256 {}), pod e2e-sleeper running",
        &c.orig_kubelet[..12],
        c.pkg_version("runc"),
        &c.orig_runc[..12]
    );
}

/// Run kubelet.service under strace while it creates a new pod's cgroups; returns
/// (mkdir lines of that pod's memory cgroup, writes to any memory.kmem.limit_in_bytes).
fn trace_new_pod(c: &Ctx, tag: &str) -> (Vec<String>, Vec<String>) {
    let pod = format!("e2e-trace-{tag}");
    c.tb.write(
        STRACE_DROPIN,
        format!(
            "[Service]\nExecStart=\nExecStart=/usr/bin/strace -f -qq --seccomp-bpf -y \
             -e trace=openat,openat2,write,mkdir,mkdirat -o {STRACE_OUT} \
             /usr/bin/kubelet $KUBELET_ARGS $KUBELET_EXTRA_ARGS\n"
        ),
        0o644,
    );
    c.sh(&format!(
        "mkdir -p /run/e2e && rm -f {STRACE_OUT} && systemctl daemon-reload && systemctl restart kubelet.service"
    ));
    c.wait_for(
        "kubelet under strace",
        60,
        "systemctl is-active -q kubelet.service && pgrep -x kubelet >/dev/null",
    );
    let manifest = format!("/etc/kubernetes/manifests/{pod}.yaml");
    c.tb.write(&manifest, pod_manifest(&pod), 0o644);
    let id = c.pod_container(&pod, 120);
    let uid = c.sh(&format!(
        "docker inspect -f '{{{{index .Config.Labels \"io.kubernetes.pod.uid\"}}}}' {id}"
    ));
    let uid = uid.trim().to_string();
    assert!(!uid.is_empty(), "no pod uid label on container {id}");
    // stop tracing: back to the plain unit, trace pod gone
    c.sh(&format!(
        "rm -f {manifest} {STRACE_DROPIN} && systemctl daemon-reload && systemctl restart kubelet.service"
    ));
    let mkdirs = c.sh(&format!(
        "grep -E 'mkdir(at)?\\(.*\"/sys/fs/cgroup/memory/kubepods/(.*/)?pod{uid}\"' {STRACE_OUT} || true"
    ));
    let writes = c.sh(&format!(
        "grep -E 'write\\([0-9]+</sys/fs/cgroup/memory/[^>]*memory\\.kmem\\.limit_in_bytes>' {STRACE_OUT} || true"
    ));
    let lines = c.sh(&format!("wc -l <{STRACE_OUT}"));
    println!(
        "e2e:   strace of kubelet ({}): {} lines, pod {pod} uid {uid}: {} mkdir of its memory cgroup, {} writes to memory.kmem.limit_in_bytes",
        c.sh("readlink -f /usr/bin/kubelet && /usr/bin/kubelet --version").replace('\n', " ").trim(),
        lines.trim(),
        mkdirs.lines().count(),
        writes.lines().count()
    );
    for l in writes.lines().take(4) {
        println!("e2e:     {l}");
    }
    c.wait_for(
        "kubelet back without strace",
        60,
        "systemctl is-active -q kubelet.service && pgrep -x kubelet >/dev/null && ! pgrep -x strace >/dev/null",
    );
    (
        mkdirs.lines().map(str::to_string).collect(),
        writes.lines().map(str::to_string).collect(),
    )
}

/// The original kubelet switches kmem on for the pod cgroups it creates.
fn original_kubelet_writes_kmem(c: &mut Ctx) {
    let (mkdirs, writes) = trace_new_pod(c, "orig");
    assert!(
        !mkdirs.is_empty(),
        "expected the traced original kubelet to mkdir the new pod's memory cgroup, saw none"
    );
    assert!(
        writes.iter().any(|w| w.contains("\"1\"")),
        "expected the original kubelet to write \"1\" to memory.kmem.limit_in_bytes, saw {} writes: {writes:?}",
        writes.len()
    );
}

/// `apt-get install k8s-nokmem` from the signed repository.
fn apt_install(c: &mut Ctx) {
    c.publish("k8s-nokmem-v1.deb");
    let before = c.unit_states();
    let pod_before = c.pod_container("e2e-sleeper", 30);
    c.apt("update -qq");
    let log = c.apt("install k8s-nokmem");
    println!("e2e:   apt-get install k8s-nokmem:");
    for l in log.lines().filter(|l| l.contains("k8s-nokmem:")) {
        println!("e2e:     {l}");
    }
    assert_eq!(
        c.pkg_version("k8s-nokmem"),
        format!("install ok installed {}", c.v1),
        "k8s-nokmem after apt-get install"
    );
    let div = c.diversions();
    for want in [KUBELET_DIVERSION, RUNC_DIVERSION] {
        assert!(
            div.contains(want),
            "expected diversion '{want}', dpkg-divert --list says:\n{div}"
        );
    }
    assert_eq!(
        c.sha("/usr/bin/kubelet"),
        c.payload_kubelet,
        "/usr/bin/kubelet should be the payload"
    );
    assert_eq!(
        c.sha("/usr/sbin/runc"),
        c.payload_runc,
        "/usr/sbin/runc should be the payload"
    );
    assert_eq!(
        c.sha("/usr/bin/kubelet.distrib"),
        c.orig_kubelet,
        "the diverted original kubelet"
    );
    assert_eq!(
        c.sha("/usr/sbin/runc.distrib"),
        c.orig_runc,
        "the diverted original runc"
    );
    for (unit, b) in UNITS.iter().zip(&before) {
        let a = c.unit_state(unit);
        assert_eq!(a.2, "active", "{unit} after install");
        assert_ne!(
            a.0, b.0,
            "{unit} should have been restarted (ActiveEnterTimestampMonotonic unchanged)"
        );
        assert_ne!(a.1, b.1, "{unit} should run a new main process");
    }
    let exe = c.sh("readlink /proc/$(systemctl show -p MainPID --value kubelet.service)/exe");
    assert_eq!(
        exe.trim(),
        "/usr/bin/kubelet",
        "kubelet.service's main process"
    );
    let pod_after = c.pod_container("e2e-sleeper", 180);
    assert_ne!(
        pod_after, pod_before,
        "expected kubelet to recreate the pod's container after docker's restart"
    );
    let report = c.verify_json();
    for check in ["payload", "diversions", "running-kubelet"] {
        expect_check(&report, check, &["ok"]);
    }
    println!(
        "e2e:   verify: payload, diversions, running-kubelet ok; overall '{}' (kernel-kmem: {})",
        report["status"].as_str().unwrap_or("?"),
        check_status(&report, "kernel-kmem")
    );
}

/// The nokmem kubelet creates pod cgroups without touching memory.kmem.limit_in_bytes.
fn nokmem_kubelet_never_writes_kmem(c: &mut Ctx) {
    assert_eq!(
        c.sha("/usr/bin/kubelet"),
        c.payload_kubelet,
        "the payload kubelet must be in place"
    );
    let (mkdirs, writes) = trace_new_pod(c, "nokmem");
    assert!(
        !mkdirs.is_empty(),
        "expected the traced nokmem kubelet to mkdir the new pod's memory cgroup, saw none (the trace proves nothing)"
    );
    assert!(
        writes.is_empty(),
        "expected no write to memory.kmem.limit_in_bytes by the nokmem kubelet, saw {}:\n{}",
        writes.len(),
        writes.join("\n")
    );
}

/// Run unattended-upgrade; returns its output.
fn unattended_upgrade(c: &Ctx) -> String {
    c.apt("update -qq");
    let out =
        c.tb.sh("unattended-upgrade -v </dev/null 2>&1; echo \"exit=$?\"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.trim_end().ends_with("exit=0"),
        "unattended-upgrade failed:\n{text}"
    );
    text
}

/// unattended-upgrade to a version with the same payload: nothing restarted.
fn unattended_same_payload(c: &mut Ctx) {
    c.publish("k8s-nokmem-v2.deb");
    let before = c.unit_states();
    let log = unattended_upgrade(c);
    assert_eq!(
        c.pkg_version("k8s-nokmem"),
        format!("install ok installed {}", c.v2),
        "k8s-nokmem after unattended-upgrade; its output:\n{log}"
    );
    c.assert_units_untouched(
        &before,
        "an upgrade with the same payload must not restart it (ActiveEnterTimestampMonotonic, MainPID, state)",
    );
    assert_eq!(
        c.sha("/usr/bin/kubelet"),
        c.payload_kubelet,
        "kubelet after upgrade"
    );
    assert_eq!(
        c.sha("/usr/sbin/runc"),
        c.payload_runc,
        "runc after upgrade"
    );
}

/// unattended-upgrade to a version whose runc changed: docker restarted, kubelet not.
fn unattended_changed_runc(c: &mut Ctx) {
    c.publish("k8s-nokmem-v3.deb");
    let kubelet_before = c.unit_state("kubelet.service");
    let docker_before = c.unit_state("docker.service");
    let log = unattended_upgrade(c);
    assert_eq!(
        c.pkg_version("k8s-nokmem"),
        format!("install ok installed {}", c.v3),
        "k8s-nokmem after unattended-upgrade; its output:\n{log}"
    );
    let new_runc = c.sha("/usr/lib/k8s-nokmem/runc");
    assert_ne!(new_runc, c.payload_runc, "v3 should ship a different runc");
    assert_eq!(
        c.sha("/usr/sbin/runc"),
        new_runc,
        "/usr/sbin/runc should be v3's runc"
    );
    c.payload_runc = new_runc;
    let docker_after = c.unit_state("docker.service");
    assert_eq!(docker_after.2, "active", "docker.service after upgrade");
    assert_ne!(
        docker_after.0, docker_before.0,
        "docker.service should have been restarted for the new runc"
    );
    let kubelet_after = c.unit_state("kubelet.service");
    assert_eq!(
        (&kubelet_after.0, &kubelet_after.1, kubelet_after.2.as_str()),
        (&kubelet_before.0, &kubelet_before.1, "active"),
        "kubelet.service must not be restarted when only runc changed"
    );
    c.pod_container("e2e-sleeper", 180);
}

/// Run unattended-upgrade as the daily job does; returns (exit status, its output).
fn unattended_upgrade_status(c: &Ctx) -> (Option<i32>, String) {
    c.apt("update -qq");
    let out = c.tb.sh("unattended-upgrade -v </dev/null 2>&1");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

impl Ctx {
    /// `k8s-nokmem config` must show `setting` (`[section] key = value`) from `from`
    /// (`FILE:LINE`, or `default`).
    #[track_caller]
    fn config_from(&self, setting: &str, from: &str) {
        let text = self.sh("k8s-nokmem config");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{setting} ")) && l.ends_with(&format!("# {from}"))),
            "`k8s-nokmem config` must show '{setting}' from {from}:\n{text}"
        );
    }

    /// (md5 of the conffile on the node, md5 dpkg recorded for it when it was installed).
    fn conffile_md5(&self) -> (String, String) {
        let on_disk = self.sh(&format!("md5sum {CONFFILE} | cut -d' ' -f1"));
        let recorded = self.sh(&format!(
            "dpkg-query -W -f='${{Conffiles}}\\n' k8s-nokmem | awk '$1 == \"{CONFFILE}\" {{ print $2 }}'"
        ));
        (on_disk.trim().to_string(), recorded.trim().to_string())
    }

    /// The conffile as a published .deb ships it.
    fn shipped_conffile(&self, deb: &str) -> String {
        host_ok(
            Command::new("sh")
                .arg("-c")
                .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -xO \".$2\"")
                .arg("sh")
                .arg(self.art.path(deb))
                .arg(CONFFILE),
        )
    }
}

/// Line number (1-based) of `line` in `text`.
fn line_of(text: &str, line: &str) -> usize {
    text.lines()
        .position(|l| l.trim() == line)
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no line '{line}' in:\n{text}"))
}

/// Issue 17: `[services] apply = reboot` set the way README says (contrib's drop-in in
/// conf.d/, the conffile left as shipped); v4 changes the shipped conffile (and runc). ONE
/// unattended-upgrade run upgrades with no prompt: dpkg replaces the unedited conffile
/// silently, unattended-upgrade's conffile_prompt() (2.9.1: the installed md5 equals the one
/// in dpkg's status) lets it through. The drop-in still decides: `k8s-nokmem config` names it,
/// docker is not restarted for the new runc, no container dies, the reboot is flagged.
fn unattended_conffile_changed_dropin_kept(c: &mut Ctx) {
    let (on_disk, recorded) = c.conffile_md5();
    assert_eq!(
        on_disk, recorded,
        "{CONFFILE} must be as shipped before this scenario (dpkg's recorded md5)"
    );
    c.tb.write(UU_DROPIN, UU_DROPIN_TEXT, 0o644);
    let from = format!("{UU_DROPIN}:{}", line_of(UU_DROPIN_TEXT, "apply = reboot"));
    c.config_from("[services] apply = reboot", &from);
    let old_conf = c.sh(&format!("cat {CONFFILE}"));
    let new_conf = c.shipped_conffile("k8s-nokmem-v4.deb");
    assert_ne!(old_conf, new_conf, "v4 must ship a changed {CONFFILE}");
    let new_runc = payload_sha(&c.art.path("k8s-nokmem-v4.deb"), "runc");
    assert_ne!(new_runc, c.payload_runc, "v4 must ship a different runc");
    c.pod_container("e2e-sleeper", 180);
    c.sh("rm -f /run/reboot-required /run/reboot-required.pkgs");
    let before = c.unit_states();
    let containers = c.running_containers();
    let from_version = c.pkg_version("k8s-nokmem");
    c.publish("k8s-nokmem-v4.deb");

    let (code, log) = unattended_upgrade_status(c);
    assert_eq!(code, Some(0), "unattended-upgrade exit status:\n{log}");
    assert!(!log.contains(UU_HELD_BACK), "unattended-upgrade:\n{log}");
    assert_eq!(
        c.pkg_version("k8s-nokmem"),
        format!("install ok installed {}", c.v4),
        "k8s-nokmem after ONE unattended-upgrade run; its output:\n{log}"
    );
    assert_eq!(
        c.sh(&format!("cat {CONFFILE}")),
        new_conf,
        "{CONFFILE}: dpkg must have replaced the unedited conffile with v4's"
    );
    c.sh(&format!(
        "for f in {CONFFILE}.dpkg-dist {CONFFILE}.dpkg-old {CONFFILE}.dpkg-new; do test ! -e $f; done"
    ));
    assert_eq!(
        c.sh(&format!("cat {UU_DROPIN}")),
        UU_DROPIN_TEXT,
        "{UU_DROPIN} is the operator's: untouched"
    );
    c.config_from("[services] apply = reboot", &from);
    // and it is in effect: the new runc swapped in with no service stopped or started
    assert_eq!(c.sha("/usr/sbin/runc"), new_runc, "/usr/sbin/runc is v4's");
    c.payload_runc = new_runc;
    c.assert_units_untouched(
        &before,
        &format!(
            "apply = reboot (from {from}) must not stop or start it; unattended-upgrade:\n{log}"
        ),
    );
    assert_eq!(
        c.running_containers(),
        containers,
        "docker ps: the same containers must still run"
    );
    assert_eq!(
        c.reboot_flag(),
        (true, vec!["k8s-nokmem".to_string()]),
        "/run/reboot-required after the upgrade with apply = reboot"
    );
    let dpkg_log = c.sh(&format!(
        "grep -F 'conffile {CONFFILE}' /var/log/dpkg.log || true"
    ));
    println!(
        "e2e:   unattended-upgrade from '{from_version}' to {}: conffile replaced silently{}, apply = reboot from {from}: docker and kubelet not restarted, {} containers kept, reboot flagged",
        c.v4,
        dpkg_log
            .lines()
            .last()
            .map(|l| format!(" (dpkg.log: {l})"))
            .unwrap_or_default(),
        containers.len()
    );
    c.remove_dropin(UU_DROPIN);
    c.sh("rm -f /run/reboot-required /run/reboot-required.pkgs");
}

/// Issue 17, the node whose operator edited the conffile (settle = 21s in it) before v5
/// changes it. Without Dpkg::Options unattended-upgrade holds k8s-nokmem back: its
/// dpkg_conffile_prompt() is true unless DPkg::Options holds --force-confold or
/// --force-confnew, then conffile_prompt() sees installed md5 != dpkg's != the new .deb's;
/// it says so, blacklists the package, and exits 0 ("No packages found that can be upgraded
/// unattended"): silent to anything that only reads its status. With README's
/// `Dpkg::Options {"--force-confdef"; "--force-confold";};` the same run upgrades and keeps
/// the operator's file (the new one as .dpkg-dist). README's way back to the shipped
/// conffile (`--reinstall` with --force-confask --force-confnew) then leaves .dpkg-old.
fn unattended_edited_conffile(c: &mut Ctx) {
    let (on_disk, recorded) = c.conffile_md5();
    assert_eq!(on_disk, recorded, "{CONFFILE} as shipped before the edit");
    c.sh(&format!(
        "sed -i -E 's/^#settle = .*/settle = 21s/' {CONFFILE} && grep -qx 'settle = 21s' {CONFFILE}"
    ));
    let edited = c.sh(&format!("cat {CONFFILE}"));
    let from = format!("{CONFFILE}:{}", line_of(&edited, "settle = 21s"));
    c.config_from("[services] settle = 21s", &from);
    let new_conf = c.shipped_conffile("k8s-nokmem-v5.deb");
    c.sh(&format!("rm -f {CONFOLD}"));
    let opts = c.sh("apt-config dump | grep -i '^dpkg::options' || true");
    assert!(
        !opts.contains("--force-conf"),
        "the node must have no --force-conf* in DPkg::Options for this case:\n{opts}"
    );
    c.publish("k8s-nokmem-v5.deb");

    let (code, log) = unattended_upgrade_status(c);
    assert!(
        log.contains(UU_HELD_BACK),
        "unattended-upgrade must hold k8s-nokmem back (edited conffile, no Dpkg::Options); exit {code:?}:\n{log}"
    );
    assert_eq!(
        code,
        Some(0),
        "unattended-upgrade exits 0 when the only upgrade is held back:\n{log}"
    );
    assert_eq!(
        c.pkg_version("k8s-nokmem"),
        format!("install ok installed {}", c.v4),
        "k8s-nokmem held back at v4"
    );
    assert_eq!(c.sh(&format!("cat {CONFFILE}")), edited, "edited conffile");

    c.tb.write(CONFOLD, CONFOLD_TEXT, 0o644);
    let (code, log) = unattended_upgrade_status(c);
    assert_eq!(
        code,
        Some(0),
        "unattended-upgrade with --force-confold:\n{log}"
    );
    assert!(!log.contains(UU_HELD_BACK), "unattended-upgrade:\n{log}");
    assert_eq!(
        c.pkg_version("k8s-nokmem"),
        format!("install ok installed {}", c.v5),
        "k8s-nokmem after unattended-upgrade with {CONFOLD}; its output:\n{log}"
    );
    assert_eq!(
        c.sh(&format!("cat {CONFFILE}")),
        edited,
        "--force-confold keeps the operator's {CONFFILE}"
    );
    assert_eq!(
        c.sh(&format!("cat {CONFFILE}.dpkg-dist")),
        new_conf,
        "v5's conffile set aside as {CONFFILE}.dpkg-dist"
    );
    c.config_from("[services] settle = 21s", &from);
    println!(
        "e2e:   edited conffile: unattended-upgrade left k8s-nokmem at {} (\"{UU_HELD_BACK}\", exit 0); with --force-confold it upgraded to {} keeping the edit, the new conffile as .dpkg-dist",
        c.v4, c.v5
    );

    // README's way back: keys into a drop-in, the shipped conffile reinstalled
    c.sh(&format!("rm -f {CONFOLD} {CONFFILE}.dpkg-dist"));
    c.apt("install --reinstall -o Dpkg::Options::=--force-confask -o Dpkg::Options::=--force-confnew k8s-nokmem");
    assert_eq!(
        c.sh(&format!("cat {CONFFILE}")),
        new_conf,
        "README's --reinstall puts v5's conffile back"
    );
    assert_eq!(
        c.sh(&format!("cat {CONFFILE}.dpkg-old")),
        edited,
        "and keeps the edited one as .dpkg-old"
    );
    let (on_disk, recorded) = c.conffile_md5();
    assert_eq!(on_disk, recorded, "{CONFFILE} as shipped again");
    c.sh(&format!("rm -f {CONFFILE}.dpkg-old"));
    c.config_from("[services] settle = 20s", "default");
}

/// The node's kubelet package moves to another minor (1.21 against the 1.20 payload): the
/// operator points the node at the repository's kubelet-1.21 component, which has kubelet
/// 1.21 and no k8s-nokmem build. The .deb's `Breaks:` on the kubelet packages outside its
/// minor (issue 17 item 9) keeps the upgrade back from `apt-get upgrade`; asked for by name,
/// apt removes k8s-nokmem first (its prerm puts the original kubelet back and drops the
/// diversions), so the 1.21 kubelet lands at /usr/bin/kubelet and runs, never underneath a diversion at .distrib where it would not.
fn kubelet_minor_upgrade_removes_k8s_nokmem(c: &mut Ctx) {
    c.publish("kubelet_1.21.0-e2e1_amd64.deb");
    c.point_node_at(&component_of("1.21.0-e2e1"));
    let upgrade = c.apt("upgrade -s");
    assert!(
        !upgrade.contains("Inst kubelet"),
        "`apt-get upgrade` should keep kubelet 1.21 back (k8s-nokmem breaks it):\n{upgrade}"
    );
    let log = c.apt("install kubelet=1.21.0-e2e1");
    assert!(
        log.contains("Removing k8s-nokmem"),
        "apt should remove k8s-nokmem before kubelet 1.21 (Breaks):\n{log}"
    );
    assert_eq!(
        c.pkg_version("kubelet"),
        "install ok installed 1.21.0-e2e1",
        "kubelet package"
    );
    assert!(
        c.pkg_version("k8s-nokmem")
            .starts_with("deinstall ok config-files"),
        "k8s-nokmem after the kubelet minor upgrade: {}",
        c.pkg_version("k8s-nokmem")
    );
    let div = c.diversions();
    assert!(
        !div.contains("k8s-nokmem"),
        "no diversion by k8s-nokmem may be left, dpkg-divert --list says:\n{div}"
    );
    let version = c.sh("/usr/bin/kubelet --version");
    assert_eq!(
        version.trim(),
        "Kubernetes v1.21.0",
        "the upgraded package's kubelet is /usr/bin/kubelet"
    );
    c.sh("test ! -e /usr/bin/kubelet.distrib");
    c.orig_kubelet = c.sha("/usr/bin/kubelet");
    c.wait_for(
        "kubelet active",
        60,
        "systemctl is-active -q kubelet.service",
    );
}

/// `apt-get remove`: originals back byte for byte, no diversion, services on originals.
fn apt_remove(c: &mut Ctx) {
    let log = c.apt("remove k8s-nokmem");
    for l in log.lines().filter(|l| l.contains("k8s-nokmem:")) {
        println!("e2e:     {l}");
    }
    assert!(
        c.pkg_version("k8s-nokmem")
            .starts_with("deinstall ok config-files"),
        "k8s-nokmem after remove: {}",
        c.pkg_version("k8s-nokmem")
    );
    assert_eq!(
        c.sha("/usr/bin/kubelet"),
        c.orig_kubelet,
        "original kubelet back"
    );
    assert_eq!(c.sha("/usr/sbin/runc"), c.orig_runc, "original runc back");
    let div = c.diversions();
    assert!(
        !div.contains("k8s-nokmem"),
        "expected no diversion by k8s-nokmem, dpkg-divert --list says:\n{div}"
    );
    c.sh("test ! -e /usr/bin/kubelet.distrib && test ! -e /usr/sbin/runc.distrib");
    for unit in UNITS {
        c.wait_for(
            &format!("{unit} active"),
            60,
            &format!("systemctl is-active -q {unit}"),
        );
    }
    let exe = c.sh("readlink /proc/$(systemctl show -p MainPID --value kubelet.service)/exe");
    assert_eq!(
        exe.trim(),
        "/usr/bin/kubelet",
        "kubelet.service main process"
    );
    let running = c.sh(
        "sha256sum /proc/$(systemctl show -p MainPID --value kubelet.service)/exe | cut -d' ' -f1",
    );
    assert_eq!(
        running.trim(),
        c.orig_kubelet,
        "the running kubelet should be the original"
    );
    c.pod_container("e2e-sleeper", 180);
}

/// `apt-get purge`: no file of ours left.
fn apt_purge(c: &mut Ctx) {
    let ours = c.sh("cat /var/lib/dpkg/info/k8s-nokmem.list 2>/dev/null || true");
    // the baseline drop-in is the scenarios', not the package's: away while /etc/k8s-nokmem
    // is checked, back for the next scenario
    c.remove_dropin(RESTART_DROPIN);
    c.apt("purge k8s-nokmem");
    assert_eq!(
        c.pkg_version("k8s-nokmem"),
        "",
        "dpkg still knows k8s-nokmem"
    );
    let left = c.sh(
        "for p in /etc/k8s-nokmem /var/lib/k8s-nokmem /run/k8s-nokmem /usr/lib/k8s-nokmem \
         /usr/sbin/k8s-nokmem /lib/systemd/system/k8s-nokmem-verify.service \
         /lib/systemd/system/k8s-nokmem-verify.timer /usr/bin/kubelet.distrib /usr/sbin/runc.distrib \
         /etc/systemd/system/timers.target.wants/k8s-nokmem-verify.timer \
         /etc/systemd/system/multi-user.target.wants/k8s-nokmem-verify.service \
         /var/lib/systemd/deb-systemd-helper-enabled/k8s-nokmem-verify.timer.dsh-also; do \
         [ -e \"$p\" ] || [ -L \"$p\" ] && echo \"$p\"; done; true",
    );
    assert_eq!(left.trim(), "", "files of k8s-nokmem left after purge");
    // every regular file the package listed is gone
    let mut still = Vec::new();
    for f in ours.lines().filter(|l| !l.is_empty()) {
        let out = c.tb.sh(&format!("test -f '{f}' && ! test -d '{f}'"));
        if out.status.success() {
            still.push(f.to_string());
        }
    }
    assert!(
        still.is_empty(),
        "files of k8s-nokmem left after purge: {still:?}"
    );
    assert!(!ours.is_empty(), "k8s-nokmem.list was empty before purge");
    c.tb.write(RESTART_DROPIN, RESTART_DROPIN_TEXT, 0o644);
}

/// A kubelet drop-in that points kubelet at a config file that does not exist yet, as on a
/// kubeadm node before `kubeadm join` writes /var/lib/kubelet/config.yaml: the real kubelet
/// exits 1 and systemd restarts it (`Restart=always`, `RestartSec=2`). Dropping the guard
/// (also on a failed assertion) takes the drop-in away and starts kubelet healthy again.
struct NotJoined<'a>(&'a Testbed);

const NOT_JOINED_DROPIN: &str = "/etc/systemd/system/kubelet.service.d/50-e2e-not-joined.conf";

impl<'a> NotJoined<'a> {
    fn crash_loop(tb: &'a Testbed) -> NotJoined<'a> {
        tb.sh_ok(&format!(
            "mkdir -p \"$(dirname {NOT_JOINED_DROPIN})\" && printf '%s\\n' '[Service]' 'ExecStart=' \
             'ExecStart=/usr/bin/kubelet $KUBELET_ARGS --config=/var/lib/kubelet/e2e-not-joined.yaml' \
             >{NOT_JOINED_DROPIN} && systemctl daemon-reload && systemctl restart kubelet.service"
        ));
        NotJoined(tb)
    }
}

impl Drop for NotJoined<'_> {
    fn drop(&mut self) {
        self.0.sh(&format!(
            "rm -f {NOT_JOINED_DROPIN}; systemctl daemon-reload; systemctl reset-failed kubelet.service; \
             systemctl restart kubelet.service"
        ));
    }
}

/// Issue 15 item 10: a node whose kubelet crash-loops before the install (kubeadm before
/// `kubeadm join`) can install the package. `apt-get install` configures it, the payload is
/// in place and diverted, the install says kubelet was failing before the swap, and
/// kubelet.service is back in its crash-loop, now running the payload (not worse, and not
/// judged against "must stay up"). Then the package is purged again for the next scenario.
fn apt_install_while_kubelet_crash_loops(c: &mut Ctx) {
    // the kubelet the payload was built for (1.21 is underneath since the upgrade scenario),
    // from the component of its minor, where k8s-nokmem is
    c.point_node_at(NODE_COMPONENT);
    c.apt("install --allow-downgrades kubelet=1.20.2-e2e1");
    c.orig_kubelet = c.sha("/usr/bin/kubelet");
    let _crashing = NotJoined::crash_loop(&c.tb);
    c.wait_for(
        "kubelet.service crash-looping (NRestarts >= 2)",
        120,
        "[ \"$(systemctl show -p NRestarts --value kubelet.service)\" -ge 2 ]",
    );
    let log = c.apt("install k8s-nokmem");
    println!("e2e:   apt-get install k8s-nokmem with kubelet crash-looping:");
    for l in log.lines().filter(|l| l.contains("k8s-nokmem:")) {
        println!("e2e:     {l}");
    }
    assert!(
        c.pkg_version("k8s-nokmem")
            .starts_with("install ok installed"),
        "k8s-nokmem after apt-get install: {}\n{log}",
        c.pkg_version("k8s-nokmem")
    );
    assert_eq!(
        c.sha("/usr/bin/kubelet"),
        c.payload_kubelet,
        "/usr/bin/kubelet should be the payload"
    );
    assert!(
        c.diversions().contains(KUBELET_DIVERSION),
        "kubelet not diverted:\n{}",
        c.diversions()
    );
    assert!(
        log.contains("failing before the swap"),
        "the install should say kubelet was failing before the swap:\n{log}"
    );
    // back in its crash-loop: systemd restarts it again, and each run is the payload
    c.wait_for(
        "kubelet.service back in its crash-loop (auto-restart)",
        120,
        "[ \"$(systemctl show -p SubState --value kubelet.service)\" = auto-restart ]",
    );
    let running = c.wait_for(
        "a kubelet.service main process to look at",
        120,
        "pid=$(systemctl show -p MainPID --value kubelet.service); [ \"$pid\" -gt 0 ] && \
         sha256sum /proc/$pid/exe | cut -c1-64 | grep .",
    );
    assert_eq!(
        running.trim(),
        c.payload_kubelet,
        "the crash-looping kubelet should now run the payload"
    );
    drop(_crashing);
    c.wait_for(
        "kubelet.service active without the not-joined drop-in",
        60,
        "systemctl is-active -q kubelet.service",
    );
    c.apt("purge k8s-nokmem");
    assert_eq!(
        c.sha("/usr/bin/kubelet"),
        c.orig_kubelet,
        "original kubelet back after purge"
    );
}

/// Reinstall, reboot: k8s-nokmem-verify.service ran at boot and left its result.
fn reinstall_and_reboot(c: &mut Ctx) {
    // kubelet 1.21 (from the upgrade underneath) against the 1.20 payload: version-skew
    // refuses by default, so the node goes back to the kubelet the payload was built for
    c.point_node_at(NODE_COMPONENT);
    c.apt("install --allow-downgrades kubelet=1.20.2-e2e1");
    c.orig_kubelet = c.sha("/usr/bin/kubelet");
    c.apt("install k8s-nokmem");
    assert_eq!(
        c.pkg_version("k8s-nokmem"),
        format!("install ok installed {}", c.newest),
        "reinstalled k8s-nokmem"
    );
    assert_eq!(
        c.sha("/usr/bin/kubelet"),
        c.payload_kubelet,
        "payload kubelet"
    );
    c.tb.reboot();
    c.wait_for(
        "k8s-nokmem-verify.service to run at boot",
        300,
        "[ \"$(systemctl show -p ExecMainExitTimestampMonotonic --value k8s-nokmem-verify.service)\" != 0 ]",
    );
    let props = c.tb.unit_props(
        "k8s-nokmem-verify.service",
        &["ExecMainStatus", "Result", "ActiveState", "InvocationID"],
    );
    println!("e2e:   k8s-nokmem-verify.service at boot: {props:?}");
    let diag = c.tb.sh(
        "systemd-analyze 2>&1 | head -1; \
         for u in docker.service kubelet.service k8s-nokmem-verify.service; do \
         echo \"$u: $(systemctl show -p NRestarts,ActiveEnterTimestampMonotonic,ExecMainStartTimestampMonotonic,ExecMainExitTimestampMonotonic --value $u | tr '\\n' ' ')\"; done; \
         journalctl -b --no-pager -o short-monotonic -u kubelet.service | grep -vE 'W[0-9]{4}|I[0-9]{4}' | head -8",
    );
    for l in String::from_utf8_lossy(&diag.stdout).lines() {
        println!("e2e:     boot: {l}");
    }
    let journal = c.tb.journal("k8s-nokmem-verify.service");
    assert!(
        journal.contains("k8s-nokmem"),
        "expected k8s-nokmem-verify.service's output in the journal, saw:\n{journal}"
    );
    let json = c.sh("cat /run/k8s-nokmem/verify.json");
    let report: Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("/run/k8s-nokmem/verify.json is not JSON ({e}):\n{json}"));
    expect_check(&report, "payload", &["ok"]);
    expect_check(&report, "diversions", &["ok"]);
    let code = props
        .get("ExecMainStatus")
        .map(String::as_str)
        .unwrap_or("");
    let want_code = match report["status"].as_str() {
        Some("ok") => "0",
        Some("problem") => "1",
        _ => "2",
    };
    assert_eq!(
        code, want_code,
        "verify.service exit status vs verify.json status '{}'",
        report["status"]
    );
    for l in journal
        .lines()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .iter()
        .rev()
    {
        println!("e2e:     {l}");
    }
    for unit in UNITS {
        c.wait_for(
            &format!("{unit} active after reboot"),
            120,
            &format!("systemctl is-active -q {unit}"),
        );
    }
    c.pod_container("e2e-sleeper", 240);
    // the running-kubelet check: at boot (above) kubelet may not run yet, so it is shown;
    // the unit run again now that kubelet surely runs must find it and see the payload
    // (the unit's own mount namespace must not hide the node's processes)
    let boot_rk = check_status(&report, "running-kubelet");
    c.sh("systemctl start k8s-nokmem-verify.service || true");
    let again: Value =
        serde_json::from_str(&c.sh("cat /run/k8s-nokmem/verify.json")).unwrap_or(Value::Null);
    let shell = c.verify_json();
    println!(
        "e2e:   running-kubelet: at boot '{boot_rk}', unit re-run '{}', shell '{}'",
        check_status(&again, "running-kubelet"),
        check_status(&shell, "running-kubelet")
    );
    expect_check(&again, "running-kubelet", &["ok"]);
    expect_check(&shell, "running-kubelet", &["ok"]);
}

/// Where to kill: a drop-in that slows one unit down (a window inside one helper step) and
/// the condition, checked inside, that says the helper is in that window.
struct KillPoint {
    what: &'static str,
    dropin: &'static str,
    content: &'static str,
    condition: &'static str,
}

/// While the helper stops docker.service (kubelet already stopped, nothing diverted yet).
const KILL_AT_STOP: KillPoint = KillPoint {
    what: "docker.service was stopping (step 'stop', nothing diverted yet)",
    dropin: "/etc/systemd/system/docker.service.d/e2e-slow-stop.conf",
    content: "[Service]\nExecStopPost=/bin/sleep 5\n",
    condition: "[ \"$(systemctl show -p ActiveState --value kubelet.service)\" = inactive ] \
                && [ \"$(systemctl show -p ActiveState --value docker.service)\" = deactivating ]",
};

/// While the helper starts kubelet.service (diverted, payload placed, docker started).
const KILL_AT_START: KillPoint = KillPoint {
    what: "kubelet.service was starting (step 'start', payload in place)",
    dropin: "/etc/systemd/system/kubelet.service.d/e2e-slow-start.conf",
    content: "[Service]\nExecStartPre=/bin/sleep 5\n",
    condition: "[ \"$(systemctl show -p ActiveState --value kubelet.service)\" = activating ] \
                && dpkg-divert --list /usr/bin/kubelet | grep -q k8s-nokmem",
};

/// kill -9 dpkg, the postinst and the helper at `at` during `apt-get install k8s-nokmem`,
/// then `dpkg --configure -a` must converge: installed, diverted, payload, services active.
fn kill9_during_install(c: &mut Ctx, at: &KillPoint) {
    if c.pkg_version("k8s-nokmem")
        .starts_with("install ok installed")
    {
        c.apt("remove k8s-nokmem");
    }
    assert_eq!(
        c.sha("/usr/bin/kubelet"),
        c.orig_kubelet,
        "original kubelet before the install"
    );
    c.tb.write(at.dropin, at.content, 0o644);
    c.sh("systemctl daemon-reload && mkdir -p /run/e2e && rm -f /run/e2e/apt.log");
    c.sh(
        "systemd-run --unit=e2e-apt --service-type=exec --collect -p StandardOutput=file:/run/e2e/apt.log \
         -p StandardError=file:/run/e2e/apt.log -E DEBIAN_FRONTEND=noninteractive \
         apt-get -o DPkg::Lock::Timeout=120 -y install k8s-nokmem",
    );
    let pids = c.wait_for(
        &format!("the helper inside apt's dpkg run while {}", at.what),
        120,
        &format!(
            "h=$(pgrep -x k8s-nokmem) && d=$(pgrep -x dpkg) && {} \
             && echo $d $(pgrep -f '^/bin/sh /var/lib/dpkg/info/k8s-nokmem[.]postinst') $h",
            at.condition
        ),
    );
    let pids = pids.trim().to_string();
    let killed = c.sh(&format!(
        "for p in {pids}; do kill -KILL $p 2>/dev/null && echo $p; done; true"
    ));
    println!(
        "e2e:   kill -9 dpkg, postinst, helper (pids {pids}; killed {}) while {}",
        killed.split_whitespace().collect::<Vec<_>>().join(" "),
        at.what
    );
    c.wait_for(
        "apt-get to end",
        60,
        "! systemctl is-active -q e2e-apt.service",
    );
    c.wait_for(
        "dpkg and the helper to be gone",
        30,
        "! pgrep -x dpkg >/dev/null && ! pgrep -x k8s-nokmem >/dev/null",
    );
    let status = c.pkg_version("k8s-nokmem");
    assert!(
        !status.starts_with("install ok installed"),
        "expected k8s-nokmem not configured after the kill, dpkg says '{status}'"
    );
    let left = c.sh(&format!(
        "echo \"kubelet $(systemctl show -p ActiveState --value kubelet.service), docker $(systemctl show -p ActiveState --value docker.service)\"; \
         dpkg-divert --list | grep k8s-nokmem || true; ls /var/lib/k8s-nokmem/ 2>&1 || true; rm -f {}; systemctl daemon-reload",
        at.dropin
    ));
    println!(
        "e2e:   after the kill: dpkg says '{status}'; {}",
        left.lines().collect::<Vec<_>>().join("; ")
    );
    let out =
        c.tb.sh("DEBIAN_FRONTEND=noninteractive dpkg --configure -a </dev/null 2>&1");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for l in text.lines().filter(|l| l.contains("k8s-nokmem:")) {
        println!("e2e:     {l}");
    }
    assert!(out.status.success(), "dpkg --configure -a failed:\n{text}");
    assert_eq!(
        c.pkg_version("k8s-nokmem"),
        format!("install ok installed {}", c.newest),
        "k8s-nokmem after dpkg --configure -a"
    );
    for unit in UNITS {
        c.wait_for(
            &format!("{unit} active"),
            60,
            &format!("systemctl is-active -q {unit}"),
        );
    }
    let div = c.diversions();
    for want in [KUBELET_DIVERSION, RUNC_DIVERSION] {
        assert!(
            div.contains(want),
            "expected '{want}', dpkg-divert --list says:\n{div}"
        );
    }
    assert_eq!(
        c.sha("/usr/bin/kubelet"),
        c.payload_kubelet,
        "payload kubelet"
    );
    assert_eq!(c.sha("/usr/sbin/runc"), c.payload_runc, "payload runc");
    assert_eq!(
        c.sha("/usr/bin/kubelet.distrib"),
        c.orig_kubelet,
        "original kubelet aside"
    );
    assert_eq!(
        c.sha("/usr/sbin/runc.distrib"),
        c.orig_runc,
        "original runc aside"
    );
    let report = c.verify_json();
    for check in ["payload", "diversions"] {
        expect_check(&report, check, &["ok"]);
    }
    c.pod_container("e2e-sleeper", 180);
}

fn kill9_at_stop(c: &mut Ctx) {
    kill9_during_install(c, &KILL_AT_STOP);
}

fn kill9_at_start(c: &mut Ctx) {
    kill9_during_install(c, &KILL_AT_START);
}

// ---------------------------------------------------------------------------------------
// Issue 11 on the node: the grub drop-in, Debian's reboot-required files, apply = reboot.

/// Debian's /etc/default/grub (grub2-common's template, trimmed).
const GRUB_DEFAULT: &str = "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\n\
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n\
GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n";

/// The testbed root has no grub (and scripts/testbed-root.sh's package list stays as it is:
/// changing it rebuilds the cache), so the node gets a stand-in `update-grub` that does what
/// grub-mkconfig's `00_header` and `10_linux` do for the kernel command line. Real
/// grub-mkconfig runs in tests/grub.rs and tests/e2e/qemu.sh.
const UPDATE_GRUB: &str = r#"#!/bin/sh
# k8s-nokmem e2e testbed: a stand-in for Debian's update-grub (grub-common is not in the
# testbed root). Like grub-mkconfig: source /etc/default/grub, then /etc/default/grub.d/*.cfg
# in order, and write the linux line with GRUB_CMDLINE_LINUX and GRUB_CMDLINE_LINUX_DEFAULT.
set -e
. /etc/default/grub
for f in /etc/default/grub.d/*.cfg; do
    if [ -e "$f" ]; then . "$f"; fi
done
mkdir -p /boot/grub /run/e2e
printf 'menuentry "Debian GNU/Linux" {\n\tlinux\t/boot/vmlinuz-e2e root=/dev/e2e ro %s %s\n}\n' \
    "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT" >/boot/grub/grub.cfg.new
mv /boot/grub/grub.cfg.new /boot/grub/grub.cfg
echo "update-grub $*" >>/run/e2e/update-grub.log
echo "Generating grub configuration file ... done" >&2
"#;

const DROPIN: &str = "/etc/default/grub.d/99-k8s-nokmem.cfg";
const PARAM: &str = "cgroup.memory=nokmem";

impl Ctx {
    /// How many times update-grub ran.
    fn update_grub_runs(&self) -> usize {
        self.sh("cat /run/e2e/update-grub.log 2>/dev/null || true")
            .lines()
            .count()
    }

    /// How often the parameter appears on each `linux` line of /boot/grub/grub.cfg.
    fn grub_cfg_params(&self) -> Vec<usize> {
        self.sh("grep -E '^[[:space:]]*linux' /boot/grub/grub.cfg")
            .lines()
            .map(|l| l.split_whitespace().filter(|a| *a == PARAM).count())
            .collect()
    }

    /// The lines of /run/reboot-required.pkgs, and whether /run/reboot-required exists.
    fn reboot_flag(&self) -> (bool, Vec<String>) {
        let out = self.sh(
            "if [ -e /run/reboot-required ]; then echo flag; else echo none; fi; \
             cat /run/reboot-required.pkgs 2>/dev/null || true",
        );
        let mut lines = out.lines().map(str::to_string);
        let flag = lines.next().as_deref() == Some("flag");
        (flag, lines.collect())
    }

    /// Container IDs docker runs now, sorted.
    fn running_containers(&self) -> Vec<String> {
        self.sh("docker ps -q --no-trunc --filter status=running | sort")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Set `[services] apply` in a drop-in, as README tells operators (an edited conffile
    /// would hold the package back on the next release that changes it).
    fn set_apply(&self, apply: &str) {
        self.tb.write(
            APPLY_DROPIN,
            format!("# k8s-nokmem e2e\n[services]\napply = {apply}\n"),
            0o644,
        );
    }

    /// Back to the shipped default of `[services] apply`.
    fn clear_apply(&self) {
        self.remove_dropin(APPLY_DROPIN);
    }

    /// Remove a drop-in the scenario wrote, and conf.d/ when it is then empty: the package
    /// does not own it (a purge leaves the operator's drop-ins, and so /etc/k8s-nokmem).
    fn remove_dropin(&self, path: &str) {
        self.sh(&format!(
            "rm -f {path} && rmdir --ignore-fail-on-non-empty /etc/k8s-nokmem/conf.d"
        ));
    }

    /// Point `[verify] proc-root`/`cgroup-root` at a recorded node of tests/fixtures/cgroup
    /// copied in under /var/lib/e2e-nodes (what `apply = auto` judges), or back at the
    /// node's own (None).
    fn set_kernel_case(&self, tree: Option<&str>) {
        let (proc_root, cgroup_root, hash) = match tree {
            Some(t) => (
                format!("/var/lib/e2e-nodes/{t}/proc"),
                format!("/var/lib/e2e-nodes/{t}/sys/fs/cgroup"),
                "",
            ),
            None => ("/proc".to_string(), "/sys/fs/cgroup".to_string(), "#"),
        };
        self.sh(&format!(
            "sed -i -E -e 's|^#?proc-root = .*|{hash}proc-root = {proc_root}|' \
             -e 's|^#?cgroup-root = .*|{hash}cgroup-root = {cgroup_root}|' /etc/k8s-nokmem/k8s-nokmem.conf && \
             grep -qx '{hash}proc-root = {proc_root}' /etc/k8s-nokmem/k8s-nokmem.conf"
        ));
    }
}

/// The node boots with grub (stand-in update-grub, see UPDATE_GRUB): grub.cfg without the
/// parameter before k8s-nokmem.
fn grub_stand_in(c: &mut Ctx) {
    c.tb.write("/etc/default/grub", GRUB_DEFAULT, 0o644);
    c.tb.write("/usr/sbin/update-grub", UPDATE_GRUB, 0o755);
    c.sh("rm -f /run/e2e/update-grub.log /run/reboot-required /run/reboot-required.pkgs && update-grub");
    assert_eq!(c.grub_cfg_params(), vec![0], "grub.cfg before k8s-nokmem");
}

/// After `apt-get install k8s-nokmem` on a Linux >= 4.6 node booted without the parameter:
/// the drop-in, grub.cfg regenerated with the parameter once, both reboot-required files,
/// and verify's rule says reboot.
fn install_flags_reboot(c: &mut Ctx) {
    let dropin = c.sh(&format!("cat {DROPIN}"));
    assert_eq!(
        dropin,
        k8s_nokmem::cmdline::DROPIN_TEXT,
        "{DROPIN} after apt-get install"
    );
    assert_eq!(
        c.update_grub_runs(),
        2,
        "update-grub runs: ours in grub_stand_in, then the install's"
    );
    assert_eq!(
        c.grub_cfg_params(),
        vec![1],
        "cgroup.memory=nokmem on grub.cfg's linux line, exactly once:\n{}",
        c.sh("cat /boot/grub/grub.cfg")
    );
    assert_eq!(
        c.reboot_flag(),
        (true, vec!["k8s-nokmem".to_string()]),
        "/run/reboot-required and /run/reboot-required.pkgs after apt-get install"
    );
    let report = c.verify_json();
    assert_eq!(
        (&report["action"], &report["reboot_required"]["required"]),
        (&Value::from("reboot"), &Value::from(true)),
        "verify's action on Linux >= 4.6 without the parameter, grub.cfg carrying it:\n{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    println!(
        "e2e:   {DROPIN} written, update-grub ran, reboot required: {}",
        report["reboot_required"]["reason"].as_str().unwrap_or("?")
    );
}

/// A reinstall and repeated verify runs (the hourly unit, by hand) leave one line in .pkgs,
/// and do not regenerate grub.cfg that already carries the parameter.
fn flag_once(c: &mut Ctx) {
    let grub_runs = c.update_grub_runs();
    c.apt("install --reinstall k8s-nokmem");
    for _ in 0..3 {
        c.sh("systemctl start k8s-nokmem-verify.service || true");
    }
    for _ in 0..2 {
        c.sh("k8s-nokmem verify --state >/dev/null || true");
    }
    // exit 1: the kernel-wide kmem of this host is a problem; 2 would be "could not run"
    let status =
        c.tb.unit_prop("k8s-nokmem-verify.service", "ExecMainStatus");
    assert!(
        status == "0" || status == "1",
        "k8s-nokmem-verify.service exit status {status}; journal:\n{}",
        c.tb.journal("k8s-nokmem-verify.service")
    );
    assert_eq!(
        c.reboot_flag(),
        (true, vec!["k8s-nokmem".to_string()]),
        "/run/reboot-required.pkgs after a reinstall, 3 verify unit runs and 2 `verify --state`"
    );
    assert_eq!(
        c.update_grub_runs(),
        grub_runs,
        "update-grub must not run again when grub.cfg already carries the parameter"
    );
}

/// `apt-get remove` takes the drop-in away and regenerates grub.cfg without the parameter.
fn remove_takes_dropin_away(c: &mut Ctx) {
    c.sh(&format!("test ! -e {DROPIN}"));
    c.sh("test ! -e /etc/default/grub.d");
    assert_eq!(
        c.sh("cat /etc/default/grub"),
        GRUB_DEFAULT,
        "/etc/default/grub is not ours: untouched"
    );
    assert_eq!(
        c.grub_cfg_params(),
        vec![0],
        "grub.cfg after apt-get remove:\n{}",
        c.sh("cat /boot/grub/grub.cfg; cat /run/e2e/update-grub.log")
    );
}

/// `[services] apply = reboot`: the install swaps with no service stopped or started (start
/// timestamps and main PIDs unchanged), every container keeps running, the running kubelet
/// keeps the old binary, new containers run the payload runc, and reboot-required is flagged.
fn apply_reboot(c: &mut Ctx) {
    if c.pkg_version("k8s-nokmem")
        .starts_with("install ok installed")
    {
        c.apt("remove k8s-nokmem");
    }
    c.set_apply("reboot");
    c.pod_container("e2e-sleeper", 180);
    c.sh("rm -f /run/reboot-required /run/reboot-required.pkgs");
    let before = c.unit_states();
    let containers = c.running_containers();
    assert!(
        !containers.is_empty(),
        "no running container before install"
    );
    let log = c.apt("install k8s-nokmem");
    for l in log.lines().filter(|l| l.contains("k8s-nokmem:")) {
        println!("e2e:     {l}");
    }
    assert_eq!(
        c.sha("/usr/bin/kubelet"),
        c.payload_kubelet,
        "payload kubelet"
    );
    assert_eq!(c.sha("/usr/sbin/runc"), c.payload_runc, "payload runc");
    c.assert_units_untouched(
        &before,
        "apply = reboot must not stop or start it (ActiveEnterTimestampMonotonic, MainPID, state)",
    );
    assert_eq!(
        c.running_containers(),
        containers,
        "docker ps: the same containers must still run"
    );
    let running = c.sh(
        "sha256sum /proc/$(systemctl show -p MainPID --value kubelet.service)/exe | cut -d' ' -f1",
    );
    assert_eq!(
        running.trim(),
        c.orig_kubelet,
        "the running kubelet keeps the old binary until the node reboots"
    );
    // docker runs runc anew for every container: a new one gets the payload
    c.sh("docker run --rm --network none busybox:e2e /bin/sh -c 'echo ok' | grep -qx ok");
    assert_eq!(
        c.reboot_flag(),
        (true, vec!["k8s-nokmem".to_string()]),
        "reboot-required after an install with apply = reboot"
    );
    let report = c.verify_json();
    println!(
        "e2e:   apply = reboot: {} containers kept, docker and kubelet not restarted; verify action '{}', running-kubelet '{}'",
        containers.len(),
        report["action"].as_str().unwrap_or("?"),
        check_status(&report, "running-kubelet")
    );
    c.config_from("[services] apply = reboot", &format!("{APPLY_DROPIN}:3"));
    c.clear_apply();
}

type Scenario = (&'static str, fn(&mut Ctx));

const SCENARIOS: &[Scenario] = &[
    ("node-ready", node_ready),
    ("original-kubelet-writes-kmem", original_kubelet_writes_kmem),
    ("grub-stand-in", grub_stand_in),
    ("apt-install", apt_install),
    (
        "apt-install-grub-dropin-and-reboot-flag",
        install_flags_reboot,
    ),
    ("reinstall-and-verify-runs-flag-once", flag_once),
    (
        "nokmem-kubelet-never-writes-kmem",
        nokmem_kubelet_never_writes_kmem,
    ),
    ("unattended-upgrade-same-payload", unattended_same_payload),
    ("unattended-upgrade-changed-runc", unattended_changed_runc),
    (
        "unattended-upgrade-conffile-changed-dropin-kept",
        unattended_conffile_changed_dropin_kept,
    ),
    (
        "unattended-upgrade-edited-conffile-held-back-then-confold",
        unattended_edited_conffile,
    ),
    (
        "kubelet-minor-upgrade-removes-k8s-nokmem",
        kubelet_minor_upgrade_removes_k8s_nokmem,
    ),
    ("apt-remove", apt_remove),
    (
        "apt-remove-takes-grub-dropin-away",
        remove_takes_dropin_away,
    ),
    ("apt-purge", apt_purge),
    (
        "apt-install-while-kubelet-crash-loops",
        apt_install_while_kubelet_crash_loops,
    ),
    ("reinstall-and-reboot", reinstall_and_reboot),
    ("kill9-dpkg-while-stopping-then-configure-a", kill9_at_stop),
    ("kill9-dpkg-while-starting-then-configure-a", kill9_at_start),
    ("apply-reboot-swaps-without-restart", apply_reboot),
];

fn artifacts() -> Option<Artifacts> {
    match std::env::var_os(ARTIFACTS_ENV) {
        Some(d) => Some(Artifacts { dir: d.into() }),
        None if nspawn::strict() => {
            panic!("{ARTIFACTS_ENV} is not set; run `sudo tests/e2e/run.sh`")
        }
        None => {
            eprintln!("skipped: e2e: {ARTIFACTS_ENV} is not set; run `sudo tests/e2e/run.sh`");
            None
        }
    }
}

fn payload_sha(deb: &Path, name: &str) -> String {
    let manifest = host_ok(
        Command::new("sh")
            .arg("-c")
            .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -xO ./usr/lib/k8s-nokmem/MANIFEST")
            .arg("sh")
            .arg(deb),
    );
    let mut section = "";
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line;
        } else if section == format!("[{name}]") {
            if let Some(v) = line.strip_prefix("sha256 = ") {
                return v.to_string();
            }
        }
    }
    panic!("no [{name}] sha256 in the MANIFEST of {}", deb.display())
}

/// The booted node: a testbed over `root`, the local repository with the original kubelet
/// .deb, the pause binary in the share.
fn boot_node(art: Artifacts, root: &Path) -> Ctx {
    let tb = Testbed::new(root);
    // run.sh tears the testbed down if this process dies before Drop runs
    fs::write(
        art.path("testbed.env"),
        format!("dir={}\npid={}\n", tb.dir().display(), std::process::id()),
    )
    .expect("write testbed.env");
    let repo = tb.share().join("repo");
    let repo_sh = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/repo.sh");
    host_ok(Command::new(&repo_sh).arg("init").arg(&repo));
    let kubelet_deb = "kubelet_1.20.2-e2e1_amd64.deb";
    host_ok(
        Command::new(&repo_sh)
            .arg("publish")
            .arg(&repo)
            .arg(component_of(&art.deb_version(kubelet_deb)))
            .arg(art.path(kubelet_deb)),
    );
    let v1 = art.deb_version("k8s-nokmem-v1.deb");
    assert_eq!(
        component_of(&v1),
        NODE_COMPONENT,
        "k8s-nokmem {v1} carries another kubelet minor than the node's kubelet 1.20.2"
    );
    fs::copy(art.path("pause"), tb.share().join("pause")).expect("copy pause");
    let v1deb = art.path("k8s-nokmem-v1.deb");
    let mut c = Ctx {
        payload_runc: payload_sha(&v1deb, "runc"),
        payload_kubelet: payload_sha(&v1deb, "kubelet"),
        v1,
        v2: art.deb_version("k8s-nokmem-v2.deb"),
        v3: art.deb_version("k8s-nokmem-v3.deb"),
        v4: art.deb_version("k8s-nokmem-v4.deb"),
        v5: art.deb_version("k8s-nokmem-v5.deb"),
        newest: String::new(),
        tb,
        art,
        repo,
        repo_sh,
        orig_runc: String::new(),
        orig_kubelet: String::new(),
    };
    c.tb.write(RESTART_DROPIN, RESTART_DROPIN_TEXT, 0o644);
    c.tb.boot();
    c
}

#[test]
#[ignore = "end to end on a booted node: run tests/e2e/run.sh"]
fn e2e() {
    let Some(art) = artifacts() else { return };
    let Some(root) = nspawn::root_or_skip("e2e") else {
        return;
    };
    let started = Instant::now();
    let mut c = boot_node(art, &root);
    // E2E_SCENARIOS=name,name runs only those (node-ready is what the others build on)
    let only = std::env::var("E2E_SCENARIOS").ok();
    let wanted = |name: &str| match only.as_deref() {
        Some(o) => o.split(',').any(|n| n.trim() == name),
        None => true,
    };

    let mut failed = Vec::new();
    let mut skipped = 0;
    for (name, scenario) in SCENARIOS {
        if !wanted(name) {
            println!("e2e: SKIP {name} (not in E2E_SCENARIOS)");
            skipped += 1;
            continue;
        }
        let t = Instant::now();
        println!("e2e: --- {name}");
        let result = catch_unwind(AssertUnwindSafe(|| scenario(&mut c)));
        let secs = t.elapsed().as_secs_f64();
        match result {
            Ok(()) => println!("e2e: PASS {name} ({secs:.1} s)"),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                println!(
                    "e2e: FAIL {name} ({secs:.1} s): {}",
                    msg.lines().next().unwrap_or("")
                );
                failed.push(*name);
            }
        }
    }
    println!(
        "e2e: {} of {} scenarios passed in {:.0} s{}",
        SCENARIOS.len() - skipped - failed.len(),
        SCENARIOS.len() - skipped,
        started.elapsed().as_secs_f64(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", failed.join(", "))
        }
    );
    drop(c);
    assert!(failed.is_empty(), "e2e scenarios failed: {failed:?}");
}

/// Containers that stopped running between two `docker ps` snapshots.
fn killed(before: &[String], after: &[String]) -> usize {
    before.iter().filter(|id| !after.contains(id)).count()
}

/// benches/upgrade-kills.sh: containers killed by an upgrade of the runc payload (v1 -> v3 of
/// make-variants.sh) with `[services] apply = restart`, `auto` and `reboot`, each on every
/// kernel case, on the e2e node with `E2E_BENCH_PODS` static pods (default 5). `auto`
/// decides from the kernel and cgroups: the cases are this node's own kernel and the
/// recorded nodes of tests/fixtures/cgroup that `[verify] proc-root`/`cgroup-root` point it
/// at (4.4 with a clean kubepods, 4.4 with a kmem-active kubepods, 5.4 without and with
/// `cgroup.memory=nokmem`, cgroup v2 only); `restart` and `reboot` do not look at them and
/// are each row's baselines. Also records whether reboot-required was flagged. Runs only
/// with `E2E_BENCH=upgrade-kills`.
#[test]
#[ignore = "benchmark on a booted node: run benches/upgrade-kills.sh"]
fn upgrade_kills() {
    if std::env::var("E2E_BENCH").as_deref() != Ok("upgrade-kills") {
        eprintln!("skipped: upgrade_kills: E2E_BENCH is not 'upgrade-kills'; run `sudo benches/upgrade-kills.sh`");
        return;
    }
    let Some(art) = artifacts() else { return };
    let Some(root) = nspawn::root_or_skip("upgrade-kills") else {
        return;
    };
    let pods: usize = std::env::var("E2E_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut c = boot_node(art, &root);
    node_ready(&mut c);
    for i in 1..pods {
        let name = format!("bench-{i}");
        c.tb.write(
            &format!("/etc/kubernetes/manifests/{name}.yaml"),
            pod_manifest(&name),
            0o644,
        );
    }
    let names: Vec<String> = std::iter::once("e2e-sleeper".to_string())
        .chain((1..pods).map(|i| format!("bench-{i}")))
        .collect();
    let all_running = |c: &Ctx| {
        for n in &names {
            c.pod_container(n, 300);
        }
    };
    all_running(&c);
    let (v1, v3) = (c.v1.clone(), c.v3.clone());
    let runc_v3 = payload_sha(&c.art.path("k8s-nokmem-v3.deb"), "runc");
    assert_ne!(runc_v3, c.payload_runc, "v3 must ship a different runc");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgroup");
    let nodes = c.tb.path("/var/lib/e2e-nodes");
    std::fs::create_dir_all(&nodes).unwrap();
    const TREES: [&str; 5] = [
        "4.4-nokmem",
        "4.4-kubepods",
        "5.4-kmem",
        "nokmem-cmdline",
        "v2-only",
    ];
    for tree in TREES {
        let out = std::process::Command::new("cp")
            .arg("-a")
            .arg(fixtures.join(tree))
            .arg(&nodes)
            .output()
            .unwrap();
        assert!(out.status.success(), "cp -a {tree}: {}", nspawn::show(&out));
    }
    // every mode on every kernel case (a recorded node, or None for this node's own kernel)
    let mut rows: Vec<Row> = Vec::new();
    for tree in std::iter::once(None).chain(TREES.iter().copied().map(Some)) {
        for apply in ["restart", "auto", "reboot"] {
            // back to v1 without a restart (a killed container comes back only after
            // kubelet's back-off, which doubles with each kill, up to 5 min), then the
            // measured upgrade to v3
            // (the repository's component holds one version: each is published in its turn)
            c.set_apply("reboot");
            c.publish("k8s-nokmem-v1.deb");
            c.apt("update -qq");
            c.apt(&format!("install --allow-downgrades k8s-nokmem={v1}"));
            assert_eq!(c.sha("/usr/sbin/runc"), c.payload_runc, "v1's runc");
            all_running(&c);
            c.set_apply(apply);
            c.set_kernel_case(tree);
            c.sh("rm -f /run/reboot-required /run/reboot-required.pkgs");
            c.publish("k8s-nokmem-v3.deb");
            c.apt("update -qq");
            let before = c.running_containers();
            let docker = c.unit_state("docker.service");
            let t = Instant::now();
            c.apt(&format!("install k8s-nokmem={v3}"));
            let upgrade = t.elapsed().as_secs_f64();
            assert_eq!(c.sha("/usr/sbin/runc"), runc_v3, "v3's runc in place");
            // kills show within seconds (docker stops its containers before it exits)
            std::thread::sleep(Duration::from_secs(10));
            let after = c.running_containers();
            let row = Row {
                case: tree.unwrap_or("this node's kernel"),
                apply,
                killed: killed(&before, &after),
                of: before.len(),
                restarted: c.unit_state("docker.service").0 != docker.0,
                flagged: c.reboot_flag().0,
            };
            all_running(&c);
            let back = t.elapsed().as_secs_f64();
            c.set_kernel_case(None);
            println!(
                "bench: upgrade-kills: kernel case {}: apply = {apply}: {} of {} containers killed ({pods} pods), docker {}, reboot-required {}; apt-get install {upgrade:.1} s, all pods running {back:.1} s after it began",
                row.case,
                row.killed,
                row.of,
                if row.restarted { "restarted" } else { "not restarted" },
                if row.flagged { "flagged" } else { "not flagged" },
            );
            rows.push(row);
        }
    }
    c.clear_apply();
    c.sh("rm -f /run/reboot-required /run/reboot-required.pkgs");
    println!("bench: upgrade-kills: | kernel case | restart | auto | reboot |");
    let mut cases: Vec<&str> = Vec::new();
    for r in &rows {
        if !cases.contains(&r.case) {
            cases.push(r.case);
        }
    }
    for case in cases {
        let cell = |apply: &str| {
            rows.iter()
                .find(|r| r.case == case && r.apply == apply)
                .map(|r| {
                    format!(
                        "{} of {}{}",
                        r.killed,
                        r.of,
                        if r.flagged { ", reboot flagged" } else { "" }
                    )
                })
                .unwrap_or_default()
        };
        println!(
            "bench: upgrade-kills: | {case} | {} | {} | {} |",
            cell("restart"),
            cell("auto"),
            cell("reboot")
        );
    }
    for r in &rows {
        let what = format!("apply = {} on {}", r.apply, r.case);
        match r.apply {
            "restart" => assert!(r.restarted, "{what}: docker restarted"),
            "reboot" => assert_eq!(r.killed, 0, "{what} must kill no container"),
            _ if r.case == "4.4-nokmem" => {
                assert!(
                    r.restarted,
                    "{what}: restarts (the restart puts the fix in effect)"
                )
            }
            _ => {
                assert_eq!(r.killed, 0, "{what} must kill no container");
                assert!(!r.restarted, "{what}: docker not restarted");
            }
        }
        if r.apply == "auto" && matches!(r.case, "nokmem-cmdline" | "v2-only") {
            assert!(
                !r.flagged,
                "{what}: no reboot flagged (nothing a reboot would add)"
            );
        }
    }
}

/// One upgrade of upgrade_kills.
struct Row {
    case: &'static str,
    apply: &'static str,
    killed: usize,
    of: usize,
    restarted: bool,
    flagged: bool,
}
