//! `verify --textfile` with `[verify] textfile-dir = auto` (the default) writes where the
//! node's node_exporter reads, on fixture trees: a node root (`--root`) and a copy of a
//! recorded 4.4 node's /proc (`--proc-root`) with node_exporter processes added.
//!
//! The directories and flags, from the tools themselves: upstream node_exporter's flag
//! `--collector.textfile.directory` (kingpin; Go's `flag` in 0.11-0.14, hence also
//! `-collector.textfile.directory`, as Ubuntu 16.04's 0.11 takes it), its documented
//! `/var/lib/node_exporter/textfile_collector`; Debian's and Ubuntu's
//! prometheus-node-exporter: binary `/usr/bin/prometheus-node-exporter`, unit
//! `ExecStart=/usr/bin/prometheus-node-exporter $ARGS` with
//! `EnvironmentFile=/etc/default/prometheus-node-exporter`, packaged textfile directory
//! `/var/lib/prometheus/node-exporter`.

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::{ok, repo};

const BIN: &str = env!("CARGO_BIN_EXE_k8s-nokmem");
const PROM: &str = "k8s_nokmem.prom";
const DEBIAN: &str = "var/lib/prometheus/node-exporter";
const UPSTREAM: &str = "var/lib/node_exporter/textfile_collector";
const MARKER: &str = "run/k8s-nokmem/textfile-dir-missing";

/// A node: an empty root and a copy of the 4.4-nokmem fixture (its /proc and cgroups).
struct Node {
    _dir: tempfile::TempDir,
    root: PathBuf,
    node: PathBuf,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let node = dir.path().join("node");
        fs::create_dir_all(&root).unwrap();
        ok(Command::new("cp")
            .arg("-a")
            .arg(repo().join("tests/fixtures/cgroup/4.4-nokmem"))
            .arg(&node));
        Node {
            _dir: dir,
            root,
            node,
        }
    }

    fn mkdir(&self, dir: &str) -> PathBuf {
        let p = self.root.join(dir);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// A process in the recorded /proc: argv, real uid, its cgroup v1 `name=systemd` path.
    fn process(&self, pid: u32, argv: &[&str], uid: u32, cgroup: &str) {
        let d = self.node.join("proc").join(pid.to_string());
        fs::create_dir_all(&d).unwrap();
        let mut cmdline = argv.join("\0");
        cmdline.push('\0');
        fs::write(d.join("cmdline"), cmdline).unwrap();
        fs::write(
            d.join("status"),
            format!("Name:\tnode_exporter\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
        )
        .unwrap();
        fs::write(
            d.join("cgroup"),
            format!("4:memory:{cgroup}\n1:name=systemd:{cgroup}\n"),
        )
        .unwrap();
    }

    /// The arguments of `verify --textfile` (no DIR) over this node.
    fn verify_args(&self) -> Vec<OsString> {
        vec![
            "verify".into(),
            "--textfile".into(),
            "--root".into(),
            self.root.clone().into(),
            "--proc-root".into(),
            self.node.join("proc").into(),
            "--cgroup-root".into(),
            self.node.join("sys/fs/cgroup").into(),
        ]
    }

    /// `verify --textfile` (no DIR): exit code and stderr.
    fn verify(&self) -> (i32, String) {
        self.verify_with(&[])
    }

    fn verify_with(&self, extra: &[&str]) -> (i32, String) {
        let out = Command::new(BIN)
            .args(extra)
            .args(self.verify_args())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.code().unwrap_or(-1), stderr)
    }

    fn written(&self, dir: &str) -> bool {
        self.root.join(dir).join(PROM).is_file()
    }
}

fn assert_ok(node: &Node) -> String {
    let (code, stderr) = node.verify();
    assert_eq!(code, 0, "{stderr}");
    stderr
}

#[test]
fn auto_takes_debians_directory_before_upstreams() {
    let node = Node::new();
    node.mkdir(DEBIAN);
    node.mkdir(UPSTREAM);
    assert_ok(&node);
    assert!(
        node.written(DEBIAN),
        "Debian's and Ubuntu's prometheus-node-exporter read {DEBIAN}"
    );
    assert!(!node.written(UPSTREAM));

    let node = Node::new();
    node.mkdir(UPSTREAM);
    assert_ok(&node);
    assert!(node.written(UPSTREAM));
}

#[test]
fn auto_follows_the_running_node_exporters_flag() {
    let node = Node::new();
    node.mkdir(DEBIAN);
    node.mkdir("srv/metrics");
    node.mkdir("tmp/evil");
    // A user's own node_exporter must not steer root's writes.
    node.process(
        4000,
        &[
            "/home/u/node_exporter",
            "--collector.textfile.directory=/tmp/evil",
        ],
        1000,
        "/user.slice/user-1000.slice/session-1.scope",
    );
    node.process(
        4100,
        &[
            "/usr/bin/prometheus-node-exporter",
            "--web.listen-address=:9100",
            "--collector.textfile.directory",
            "/srv/metrics",
        ],
        0,
        "/system.slice/prometheus-node-exporter.service",
    );
    assert_ok(&node);
    assert!(node.written("srv/metrics"));
    assert!(
        !node.written("tmp/evil"),
        "an untrusted process was followed"
    );
    assert!(!node.written(DEBIAN));
}

#[test]
fn a_system_service_running_as_its_own_user_is_followed() {
    let node = Node::new();
    node.mkdir(DEBIAN);
    node.mkdir("srv/ne");
    // Debian's unit runs it as User=prometheus; Ubuntu 16.04's 0.11 takes one dash.
    node.process(
        77,
        &[
            "/usr/bin/prometheus-node-exporter",
            "-collector.textfile.directory=/srv/ne",
        ],
        112,
        "/system.slice/prometheus-node-exporter.service",
    );
    assert_ok(&node);
    assert!(node.written("srv/ne"));
}

#[test]
fn auto_reads_args_of_the_packaged_defaults_file() {
    let node = Node::new();
    node.mkdir(DEBIAN);
    node.mkdir("srv/from-defaults");
    node.mkdir("etc/default");
    fs::write(
        node.root.join("etc/default/prometheus-node-exporter"),
        "# Set the command-line arguments to pass to the server.\n\
         ARGS=\"\"\n\
         ARGS=\"--collector.diskstats.ignored-devices=^(ram|loop)\\\\d+$ \
         --collector.textfile.directory=/srv/from-defaults\"\n",
    )
    .unwrap();
    assert_ok(&node);
    assert!(node.written("srv/from-defaults"));
    assert!(!node.written(DEBIAN));
}

#[test]
fn no_directory_is_a_warning_once_per_boot() {
    let node = Node::new();
    let stderr = assert_ok(&node);
    assert!(
        stderr.contains("warn")
            && stderr.contains("verify textfile: skipped")
            && stderr.contains("/var/lib/prometheus/node-exporter")
            && stderr.contains("/var/lib/node_exporter/textfile_collector"),
        "a visible warning naming where it looked: {stderr}"
    );
    assert!(node.root.join(MARKER).is_file());
    // The hourly run after it stays quiet until the next boot (/run is emptied).
    let stderr = assert_ok(&node);
    assert!(!stderr.contains("verify textfile"), "{stderr}");

    // Found later: written, and a later loss warns again.
    node.mkdir(UPSTREAM);
    assert_ok(&node);
    assert!(node.written(UPSTREAM));
    assert!(!node.root.join(MARKER).exists());
}

#[test]
fn a_directory_node_exporter_names_but_lacks_is_a_warning() {
    let node = Node::new();
    node.mkdir(DEBIAN);
    node.process(
        4100,
        &[
            "/usr/local/bin/node_exporter",
            "--collector.textfile.directory=/srv/missing",
        ],
        0,
        "/system.slice/node_exporter.service",
    );
    let stderr = assert_ok(&node);
    assert!(
        stderr.contains("/srv/missing") && stderr.contains("node_exporter (pid 4100)"),
        "{stderr}"
    );
    assert!(
        !node.written(DEBIAN),
        "node_exporter reads /srv/missing only"
    );
}

#[test]
fn the_shipped_conffile_documents_auto() {
    let conf = fs::read_to_string(repo().join("debian/k8s-nokmem.conf")).unwrap();
    assert!(conf.contains("#textfile-dir = auto"), "{conf}");
    let man = fs::read_to_string(repo().join("debian/k8s-nokmem.8")).unwrap();
    assert!(man.contains(".B [verify] textfile-dir = auto"));
}

/// The verify unit sees /var read-only except the directories it names: a directory found
/// elsewhere fails with the drop-in that fixes it. A read-only bind mount in a private
/// mount namespace (unshare -m) stands in for the unit's sandbox.
#[test]
fn a_read_only_directory_names_the_unit_drop_in() {
    if !common::root_or_skip("a read-only bind mount needs root") {
        return;
    }
    let node = Node::new();
    let dir = node.mkdir("var/lib/node-exporter-elsewhere");
    node.process(
        4100,
        &[
            "/usr/bin/prometheus-node-exporter",
            "--collector.textfile.directory=/var/lib/node-exporter-elsewhere",
        ],
        0,
        "/system.slice/prometheus-node-exporter.service",
    );
    let script =
        "mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && shift && exec \"$@\"";
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&dir)
        .arg(BIN)
        .args(node.verify_args())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("systemctl edit k8s-nokmem-verify.service")
            && stderr.contains(&format!("ReadWriteDirectories={}", dir.display())),
        "{stderr}"
    );
}

#[test]
fn a_configured_directory_is_used_as_is() {
    let node = Node::new();
    node.mkdir(DEBIAN);
    node.mkdir("srv/chosen");
    let conf = node.root.join("k.conf");
    fs::write(&conf, "[verify]\ntextfile-dir = /srv/chosen\n").unwrap();
    let conf_arg = ["--config", conf.to_str().unwrap()];
    let (code, stderr) = node.verify_with(&conf_arg);
    assert_eq!(code, 0, "{stderr}");
    assert!(node.written("srv/chosen") && !node.written(DEBIAN));

    fs::write(&conf, "[verify]\ntextfile-dir = /srv/gone\n").unwrap();
    let (code, stderr) = node.verify_with(&conf_arg);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("/srv/gone'")
            && stderr.contains("does not exist (from [verify] textfile-dir)"),
        "{stderr}"
    );

    fs::write(&conf, "[verify]\ntextfile-dir = srv\n").unwrap();
    let (code, stderr) = node.verify_with(&conf_arg);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("'auto' or an absolute path"), "{stderr}");
}

/// node_exporter as a DaemonSet: root in the host's view, but its flag names a path in its
/// container's mount namespace, not the node's.
#[test]
fn a_containerized_node_exporter_is_not_followed() {
    use std::os::unix::fs::symlink;
    let node = Node::new();
    node.mkdir(DEBIAN);
    node.mkdir("host/textfile");
    node.process(
        5000,
        &[
            "/bin/node_exporter",
            "--collector.textfile.directory=/host/textfile",
        ],
        0,
        "/kubepods/besteffort/pod1234/0123456789ab",
    );
    let proc = node.node.join("proc");
    fs::create_dir_all(proc.join("5000/ns")).unwrap();
    symlink("mnt:[4026532999]", proc.join("5000/ns/mnt")).unwrap();
    // the node's mount namespace is init's (verify's own is private under its unit)
    fs::create_dir_all(proc.join("1/ns")).unwrap();
    symlink("mnt:[4026531840]", proc.join("1/ns/mnt")).unwrap();
    assert_ok(&node);
    assert!(!node.written("host/textfile"));
    assert!(node.written(DEBIAN));

    // The same process in the node's mount namespace is followed.
    fs::remove_file(proc.join("5000/ns/mnt")).unwrap();
    symlink("mnt:[4026531840]", proc.join("5000/ns/mnt")).unwrap();
    assert_ok(&node);
    assert!(node.written("host/textfile"));
}
