//! contrib/ansible/rollout.yml run for real by Debian's `ansible-playbook` against a control
//! host and three nodes on this machine (local connection), with kubectl replaced by a script
//! per kubectl release whose `drain` rejects every flag that release does not define, and
//! `k8s-nokmem verify` the real binary over recorded node trees (tests/fixtures/cgroup).
//!
//! The drain flags per release come from kubectl's source, `NewCmdDrain`: kubernetes/kubectl
//! pkg/cmd/drain/drain.go at tags kubernetes-1.16.0 ... kubernetes-1.20.0 (1.18.0 adds
//! --disable-eviction and --skip-wait-for-delete-timeout; 1.20.0 adds --delete-emptydir-data
//! and deprecates --delete-local-data). Before 1.16 drain lived in kubernetes/kubernetes
//! pkg/kubectl/cmd/drain/drain.go, not stored here at v1.14.0 itself: the two stored revisions
//! of that file (0bbdced, `DrainOptions`, older than v1.14.0; 1871f75, `drain.Helper`, newer)
//! define the same flags as kubernetes-1.16.0, so v1.14.0 and v1.15.0 do too. Plus `--dry-run`
//! (`cmdutil.AddDryRunFlag`) and the global `--kubeconfig`. `version --client` prints
//! `Client Version: version.Info{...}` as pkg/cmd/version/version.go does at those tags.
//!
//! Each host's Python interpreter is a wrapper that exports its host name, so the script
//! logs where kubectl ran: kubespray runs it on the first control-plane host.
//!
//! The node-side tasks (apt, reboot) are skipped with `--skip-tags node` except in the
//! failed-install case: there the real `apt` module fails to install a package this
//! machine's repositories do not have.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Drain flags (besides the global ones) of kubectl 1.14-1.17.
const DRAIN_1_14: &[&str] = &[
    "force",
    "ignore-daemonsets",
    "delete-local-data",
    "grace-period",
    "timeout",
    "selector",
    "pod-selector",
    "dry-run",
];
/// kubectl 1.18 and 1.19: `--disable-eviction` and `--skip-wait-for-delete-timeout` added.
const DRAIN_1_18: &[&str] = &[
    "force",
    "ignore-daemonsets",
    "delete-local-data",
    "grace-period",
    "timeout",
    "selector",
    "pod-selector",
    "disable-eviction",
    "skip-wait-for-delete-timeout",
    "dry-run",
];
/// kubectl 1.20: `--delete-emptydir-data`, `--delete-local-data` deprecated.
const DRAIN_1_20: &[&str] = &[
    "force",
    "ignore-daemonsets",
    "delete-local-data",
    "delete-emptydir-data",
    "grace-period",
    "timeout",
    "selector",
    "pod-selector",
    "disable-eviction",
    "skip-wait-for-delete-timeout",
    "dry-run",
];

fn drain_flags(minor: u32) -> &'static [&'static str] {
    match minor {
        ..=17 => DRAIN_1_14,
        18 | 19 => DRAIN_1_18,
        _ => DRAIN_1_20,
    }
}

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

/// kubespray's group names: before 2.16 and from 2.16.
#[derive(Clone, Copy)]
enum Groups {
    Old,
    New,
}

struct Play {
    dir: tempfile::TempDir,
}

impl Play {
    /// A play against kubectl 1.`minor`, installed where kubespray puts it
    /// (`{{ bin_dir }}/kubectl`), with its kubeconfig at `{{ kube_config_dir }}/admin.conf`;
    /// `verify_fails` names the node whose verify sees a kmem-active node.
    fn new(minor: u32, groups: Groups, verify_fails: Option<&str>) -> Play {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bin = d.join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(d.join("etc")).unwrap();
        fs::create_dir_all(d.join("state")).unwrap();
        fs::write(d.join("etc/admin.conf"), "apiVersion: v1\nkind: Config\n").unwrap();
        let flags = drain_flags(minor).join(" ");
        executable(
            &bin.join("kubectl"),
            &format!(
                r#"#!/bin/sh
# kubectl v1.{minor}.0 as the rollout sees it; drain defines: {flags}
state='{state}'
echo "on=$NOKMEM_ON $*" >> "$state/kubectl.log"
if [ "$1" != --kubeconfig ] || [ "$2" != '{kubeconfig}' ]; then
  echo 'error: the server rejected our request: no --kubeconfig {kubeconfig}' >&2; exit 1
fi
shift 2
case "$1" in
version)
  [ "$2" = --client ] || {{ echo 'error: no server' >&2; exit 1; }}
  echo 'Client Version: version.Info{{Major:"1", Minor:"{minor}", GitVersion:"v1.{minor}.0", GitCommit:"0", GitTreeState:"clean", BuildDate:"2020-01-01T00:00:00Z", GoVersion:"go1.15", Compiler:"gc", Platform:"linux/amd64"}}' ;;
cordon) touch "$state/cordoned.$2"; echo "node/$2 cordoned" ;;
uncordon) rm -f "$state/cordoned.$2"; echo "node/$2 uncordoned" ;;
get)
  case "$5" in
  *unschedulable*) if [ -e "$state/cordoned.$3" ]; then printf true; fi ;;
  *Ready*) printf True ;;
  esac ;;
drain)
  node=$2; shift 2
  for a; do
    case "$a" in
    --*) name=${{a#--}}; name=${{name%%=*}}
      case " {flags} " in *" $name "*) ;; *) echo "Error: unknown flag: --$name" >&2; exit 1 ;; esac ;;
    esac
  done
  touch "$state/cordoned.$node"
  if [ -e "$state/flaky.$node" ]; then
    rm "$state/flaky.$node"
    echo "error: Cannot evict pod as it would violate the pod's disruption budget." >&2; exit 1
  fi
  echo "node/$node drained" ;;
*) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#,
                state = d.join("state").display(),
                kubeconfig = d.join("etc/admin.conf").display(),
            ),
        );
        let mut hosts = vec!["cp-1"];
        hosts.extend(NODES);
        for host in &hosts {
            executable(
                &bin.join(format!("python-{host}")),
                &format!("#!/bin/sh\nNOKMEM_ON={host} exec /usr/bin/python3 \"$@\"\n"),
            );
        }
        let verify = |fixture: &str| {
            let node = common::repo().join("tests/fixtures/cgroup").join(fixture);
            let root = d.join("root");
            fs::create_dir_all(&root).unwrap();
            format!(
                "\"{} verify --root {} --proc-root {} --cgroup-root {}\"",
                env!("CARGO_BIN_EXE_k8s-nokmem"),
                root.display(),
                node.join("proc").display(),
                node.join("sys/fs/cgroup").display()
            )
        };
        let (cp_group, node_group) = match groups {
            Groups::Old => ("kube-master", "kube-node"),
            Groups::New => ("kube_control_plane", "kube_node"),
        };
        let host_line = |host: &str, extra: String| {
            format!(
                "{host} ansible_connection=local ansible_python_interpreter={} {extra}\n",
                bin.join(format!("python-{host}")).display()
            )
        };
        let mut inventory = format!(
            "[{cp_group}]\n{}\n[{node_group}]\n",
            host_line("cp-1", String::new())
        );
        for node in NODES {
            let fixture = if verify_fails == Some(node) {
                "4.4-kmem"
            } else {
                "4.4-nokmem"
            };
            inventory.push_str(&host_line(
                node,
                format!("nokmem_verify={}", verify(fixture)),
            ));
        }
        inventory.push_str(&format!(
            "\n[all:vars]\nbin_dir={}\nkube_config_dir={}\nansible_become_method=su\n",
            bin.display(),
            d.join("etc").display()
        ));
        fs::write(d.join("inventory"), inventory).unwrap();
        Play { dir }
    }

    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join("state").join(name)
    }

    fn run(&self, extra: &[&str]) -> (bool, String) {
        let playbook: PathBuf = common::repo().join("contrib/ansible/rollout.yml");
        let out = common::run(
            Command::new("ansible-playbook")
                .arg("-i")
                .arg(self.dir.path().join("inventory"))
                .arg(&playbook)
                .args([
                    "-e",
                    "nokmem_update_cache=false",
                    "-e",
                    "nokmem_ready_retries=1",
                    "-e",
                    "nokmem_drain_delay=0",
                ])
                .args(extra)
                .env("ANSIBLE_NOCOLOR", "1")
                .env("ANSIBLE_HOST_KEY_CHECKING", "False")
                .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("tmp"))
                .env("ANSIBLE_REMOTE_TEMP", self.dir.path().join("tmp"))
                .env("ANSIBLE_RETRY_FILES_ENABLED", "False"),
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Every kubectl call as `on=HOST ARGS` with the kubeconfig argument left out.
    fn kubectl_log(&self) -> Vec<String> {
        let kubeconfig = format!(
            " --kubeconfig {}",
            self.dir.path().join("etc/admin.conf").display()
        );
        fs::read_to_string(self.state("kubectl.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.replacen(&kubeconfig, "", 1))
            .collect()
    }
}

fn executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn ansible_or_fail() -> bool {
    if Path::new("/usr/bin/ansible-playbook").exists() {
        return true;
    }
    common::cannot_run(
        "ansible-playbook is missing: run scripts/install-deps.sh (Debian's ansible)",
    );
    false
}

/// What the play does to one node that was schedulable, on kubectl 1.`minor`.
fn one_node(node: &str, minor: u32, cordoned_before: bool) -> Vec<String> {
    let emptydir = if minor >= 20 {
        "--delete-emptydir-data"
    } else {
        "--delete-local-data"
    };
    // once per batch (`run_once`), and a batch is one node here
    let mut calls = vec![
        "on=cp-1 version --client".to_string(),
        format!("on=cp-1 get node {node} -o jsonpath={{.spec.unschedulable}}"),
    ];
    if !cordoned_before {
        calls.push(format!("on=cp-1 cordon {node}"));
    }
    calls.push(format!(
        "on=cp-1 drain {node} --ignore-daemonsets {emptydir} --force --grace-period 300 --timeout 360s"
    ));
    calls.push(format!(
        "on=cp-1 get node {node} -o jsonpath={{.status.conditions[?(@.type==\"Ready\")].status}}"
    ));
    if !cordoned_before {
        calls.push(format!("on=cp-1 uncordon {node}"));
    }
    calls
}

#[test]
fn rollout_syntax_is_valid() {
    if !ansible_or_fail() {
        return;
    }
    let play = Play::new(20, Groups::New, None);
    let (ok, text) = play.run(&["--syntax-check"]);
    assert!(ok, "{text}");
}

#[test]
fn the_kubectl_stand_in_rejects_the_drain_flags_its_release_lacks() {
    // the negative control: kubectl 1.19 refuses 1.20's flag, as the real one does
    let play = Play::new(19, Groups::New, None);
    let kubectl = play.dir.path().join("bin/kubectl");
    let out = common::run(
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(play.dir.path().join("etc/admin.conf"))
            .args(["drain", "node-1", "--delete-emptydir-data"]),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown flag: --delete-emptydir-data"),
        "{out:?}"
    );
}

#[test]
fn rollout_drains_with_the_flags_of_kubectl_1_14_1_19_and_1_20_on_the_first_control_plane_host() {
    if !ansible_or_fail() {
        return;
    }
    for minor in [14, 19, 20] {
        let play = Play::new(minor, Groups::New, None);
        let (ok, text) = play.run(&["--skip-tags", "node"]);
        assert!(ok, "kubectl 1.{minor}: {text}");
        let mut want = Vec::new();
        for node in NODES {
            want.extend(one_node(node, minor, false));
        }
        assert_eq!(play.kubectl_log(), want, "kubectl 1.{minor}: {text}");
        for node in NODES {
            assert!(!play.state(&format!("cordoned.{node}")).exists(), "{node}");
        }
    }
}

#[test]
fn rollout_finds_kubesprays_old_group_names() {
    if !ansible_or_fail() {
        return;
    }
    let play = Play::new(16, Groups::Old, None);
    let (ok, text) = play.run(&["--skip-tags", "node"]);
    assert!(ok, "{text}");
    let mut want = Vec::new();
    for node in NODES {
        want.extend(one_node(node, 16, false));
    }
    assert_eq!(play.kubectl_log(), want, "{text}");
}

#[test]
fn a_node_cordoned_before_the_rollout_stays_cordoned_and_a_failed_drain_is_retried() {
    if !ansible_or_fail() {
        return;
    }
    let play = Play::new(20, Groups::New, None);
    fs::write(play.state("cordoned.node-2"), "").unwrap();
    fs::write(play.state("flaky.node-3"), "").unwrap();
    let (ok, text) = play.run(&["--skip-tags", "node"]);
    assert!(ok, "{text}");
    let mut want = Vec::new();
    want.extend(one_node("node-1", 20, false));
    want.extend(one_node("node-2", 20, true));
    let node3 = one_node("node-3", 20, false);
    // node-3's first drain fails (a PodDisruptionBudget), the retry succeeds
    want.extend(node3[..4].iter().cloned());
    want.extend(node3[3..].iter().cloned());
    assert_eq!(play.kubectl_log(), want, "{text}");
    assert!(
        play.state("cordoned.node-2").exists(),
        "node-2 was cordoned by its admin: {text}"
    );
    assert!(!play.state("cordoned.node-3").exists(), "{text}");
}

#[test]
fn a_problem_in_verify_after_the_reboot_stops_the_rollout_with_the_node_cordoned() {
    if !ansible_or_fail() {
        return;
    }
    let play = Play::new(20, Groups::New, Some("node-2"));
    let (ok, text) = play.run(&["--skip-tags", "node"]);
    assert!(!ok, "the play must fail: {text}");
    assert!(
        text.contains(
            "k8s-nokmem rollout stopped at node-2: k8s-nokmem verify says problem (exit 1): k8s-nokmem verify: PROBLEM"
        ),
        "{text}"
    );
    assert!(
        text.contains("the node stays cordoned (`kubectl uncordon node-2` once it is fixed)"),
        "{text}"
    );
    let mut want = Vec::new();
    want.extend(one_node("node-1", 20, false));
    let mut node2 = one_node("node-2", 20, false);
    node2.pop(); // no uncordon
    want.extend(node2);
    assert_eq!(
        play.kubectl_log(),
        want,
        "node-2 left cordoned, node-3 untouched: {text}"
    );
    assert!(play.state("cordoned.node-2").exists(), "{text}");
}

#[test]
fn a_failed_install_uncordons_the_node_and_stops_the_rollout() {
    if !ansible_or_fail() {
        return;
    }
    if !common::root_or_skip("the apt module (run: sudo cargo test --test ansible)") {
        return;
    }
    let play = Play::new(20, Groups::New, None);
    let (ok, text) = play.run(&[]);
    assert!(!ok, "the play must fail: {text}");
    assert!(
        text.contains(
            "k8s-nokmem rollout stopped at node-1: Install k8s-nokmem from the repository failed"
        ),
        "{text}"
    );
    let mut want = Vec::new();
    let node1 = one_node("node-1", 20, false);
    want.extend(node1[..4].iter().cloned());
    want.push("on=cp-1 uncordon node-1".to_string());
    assert_eq!(
        play.kubectl_log(),
        want,
        "node-1 uncordoned, node-2 and node-3 untouched: {text}"
    );
}
