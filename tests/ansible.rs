//! contrib/ansible/rollout.yml run for real by Debian's `ansible-playbook` against three
//! inventory nodes on this machine (local connection), with `kubectl` replaced by a script
//! that logs its arguments and reports the node Ready. The node-side tasks (apt, reboot) are
//! skipped with `--skip-tags node` for the success path; the failure path runs them: the
//! real `apt` module fails to install a package this machine's repositories do not have,
//! which is a failed install on the first node.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Play {
    dir: tempfile::TempDir,
}

impl Play {
    fn new() -> Play {
        let dir = tempfile::tempdir().unwrap();
        let kubectl = dir.path().join("kubectl");
        fs::write(
            &kubectl,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$1\" in get) printf True;; esac\n",
                dir.path().join("kubectl.log").display()
            ),
        )
        .unwrap();
        fs::set_permissions(&kubectl, fs::Permissions::from_mode(0o755)).unwrap();
        let local = "ansible_connection=local ansible_python_interpreter=/usr/bin/python3";
        fs::write(
            dir.path().join("inventory"),
            format!(
                "[kube_control_plane]\ncp-1 {local}\n\n[kube_node]\nnode-1 {local}\nnode-2 {local}\nnode-3 {local}\n"
            ),
        )
        .unwrap();
        Play { dir }
    }

    fn run(&self, extra: &[&str]) -> (bool, String) {
        let playbook: PathBuf =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ansible/rollout.yml");
        let out = common::run(
            Command::new("ansible-playbook")
                .arg("-i")
                .arg(self.dir.path().join("inventory"))
                .arg(&playbook)
                .arg("-e")
                .arg(format!(
                    "nokmem_kubectl={}",
                    self.dir.path().join("kubectl").display()
                ))
                .args([
                    "-e",
                    "nokmem_update_cache=false",
                    "-e",
                    "nokmem_ready_retries=1",
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

    fn kubectl_log(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("kubectl.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn ansible_or_fail() {
    assert!(
        Path::new("/usr/bin/ansible-playbook").exists(),
        "ansible-playbook is missing: run scripts/install-deps.sh (Debian's ansible)"
    );
}

#[test]
fn rollout_syntax_is_valid() {
    ansible_or_fail();
    let play = Play::new();
    let (ok, text) = play.run(&["--syntax-check"]);
    assert!(ok, "{text}");
}

#[test]
fn rollout_goes_node_by_node_cordon_drain_ready_uncordon() {
    ansible_or_fail();
    let play = Play::new();
    let (ok, text) = play.run(&["--skip-tags", "node"]);
    assert!(ok, "{text}");
    let mut want = Vec::new();
    for node in ["node-1", "node-2", "node-3"] {
        want.push(format!("cordon {node}"));
        want.push(format!(
            "drain {node} --ignore-daemonsets --delete-emptydir-data --force --grace-period 300 --timeout 360s"
        ));
        want.push(format!(
            "get node {node} -o jsonpath={{.status.conditions[?(@.type==\"Ready\")].status}}"
        ));
        want.push(format!("uncordon {node}"));
    }
    assert_eq!(play.kubectl_log(), want, "{text}");
}

#[test]
fn a_failed_install_uncordons_the_node_and_stops_the_rollout() {
    ansible_or_fail();
    if !common::root_or_skip("the apt module (run: sudo cargo test --test ansible)") {
        return;
    }
    let play = Play::new();
    let (ok, text) = play.run(&[]);
    assert!(!ok, "the play must fail: {text}");
    assert!(
        text.contains(
            "k8s-nokmem rollout stopped at node-1: Install k8s-nokmem from the repository failed"
        ),
        "{text}"
    );
    assert_eq!(
        play.kubectl_log(),
        vec![
            "cordon node-1".to_string(),
            "drain node-1 --ignore-daemonsets --delete-emptydir-data --force --grace-period 300 --timeout 360s".to_string(),
            "uncordon node-1".to_string(),
        ],
        "node-1 uncordoned, node-2 and node-3 untouched: {text}"
    );
}
