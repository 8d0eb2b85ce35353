//! Test harness: boot the cached Debian root (scripts/testbed-root.sh) with `systemd-nspawn -b`
//! (systemd as PID 1 with its own system bus, docker able to run), run commands inside, tear
//! everything down on drop, even when the test panics.
//!
//! Use from a test crate with `#[path = "common/nspawn.rs"] mod nspawn;`:
//!
//! ```ignore
//! let Some(root) = nspawn::root_or_skip("my_test") else { return };
//! let mut tb = nspawn::Testbed::new(&root);
//! tb.write("/etc/systemd/system/x.service", UNIT, 0o644); // before or after boot
//! tb.boot();
//! let out = tb.sh_ok("systemctl start x.service && systemctl is-active x.service");
//! ```
//!
//! How (TESTBED.md): the root is the lower layer of an overlay mounted here (so the cache is
//! never written, and files written on the host side appear inside at once); /var/lib/docker
//! is a fresh directory (overlay2 cannot sit on overlayfs); `/mnt/share` is a shared
//! directory; nspawn runs from a child cgroup of its own in every host hierarchy (removed on
//! drop) with `--register=no --keep-unit --private-network --system-call-filter=@keyring
//! --capability=all`; commands run through `nsenter -t <container PID 1> -a`. One container
//! at a time per test binary. `K8S_NOKMEM_KEEP_TMP=1` keeps the directory (upper layer, logs).
//!
//! Needs root, systemd-nspawn (systemd-container) and nsenter (util-linux).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The name of the test function it is called in (for [`root_or_skip`] and the testbed's
/// messages), so a test need not spell its own name.
#[allow(unused_macros)]
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").unwrap_or(path);
        path.rsplit("::").next().unwrap_or(path)
    }};
}

/// Overrides the root's location.
pub const ROOT_ENV: &str = "K8S_NOKMEM_TESTBED_ROOT";
/// The command that builds the root.
pub const BUILD_CMD: &str = "scripts/testbed-root.sh";
/// Inside the root: written last by scripts/testbed-root.sh.
const STAMP: &str = "etc/k8s-nokmem-testbed";
const SHARE_IN: &str = "/mnt/share";
const PATH_IN: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Where the helper is on a node, and where [`Testbed::install_helper`] puts this build's.
pub const HELPER: &str = "/usr/sbin/k8s-nokmem";
/// The stand-in services of [`write_stand_in_services`].
pub const STAND_IN_UNITS: [&str; 2] = ["kubelet.service", "docker.service"];
/// Where [`Testbed::start_detached`] keeps the command's output and exit status.
const DETACHED_DIR: &str = "/var/tmp/detached";
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Files in a testbed directory that let a later run clean up after a killed one.
const OWNER: &str = "owner";
const CGROUPS: &str = "cgroups";
const NSPAWN_PID: &str = "nspawn.pid";
const KEPT: &str = "kept";
const DIR_PREFIX: &str = "k8s-nokmem-testbed.";

/// Where the root is: `$K8S_NOKMEM_TESTBED_ROOT`, else
/// `${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}/testbed/bookworm-amd64`.
pub fn root_path() -> PathBuf {
    if let Some(p) = std::env::var_os(ROOT_ENV) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("K8S_NOKMEM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/k8s-nokmem"));
    cache.join("testbed/bookworm-amd64")
}

/// The opt-out for a quick local loop (`scripts/test.sh --quick` sets it).
pub const ALLOW_SKIP_ENV: &str = "K8S_NOKMEM_ALLOW_SKIP";

/// Whether a test that cannot run must fail: always, unless `K8S_NOKMEM_ALLOW_SKIP=1`.
pub fn strict() -> bool {
    !std::env::var(ALLOW_SKIP_ENV).is_ok_and(|v| v == "1")
}

/// The root when everything needed to boot it is here; otherwise panic naming the command
/// that fixes it, or under `K8S_NOKMEM_ALLOW_SKIP=1` print `skipped: ...` and return `None`.
pub fn root_or_skip(test: &str) -> Option<PathBuf> {
    let root = root_path();
    let why = if !nix_is_root() {
        Some(
            "needs root (systemd-nspawn, mounts, cgroups); run it with `sudo -E cargo test`"
                .to_string(),
        )
    } else if !root.join(STAMP).is_file() {
        Some(format!(
            "no testbed root at '{}'; build it with `sudo {BUILD_CMD}` (~2-4 min, cached) or set {ROOT_ENV}",
            root.display()
        ))
    } else if !have("systemd-nspawn") {
        Some("systemd-nspawn not found; apt-get install systemd-container".to_string())
    } else if !have("nsenter") {
        Some("nsenter not found; apt-get install util-linux".to_string())
    } else {
        None
    };
    match why {
        None => Some(root),
        Some(why) if strict() => panic!(
            "{test}: {why}\n(this test cannot run; {ALLOW_SKIP_ENV}=1 skips it in a quick local loop)"
        ),
        Some(why) => {
            println!("skipped: {test}: {why}");
            eprintln!("skipped: {test}: {why}");
            None
        }
    }
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(cmd).is_file())
}

/// A booted (or bootable) container over the cached root.
pub struct Testbed {
    name: String,
    lower: PathBuf,
    dir: PathBuf,
    keep: bool,
    mounted: bool,
    cgroups: Vec<PathBuf>,
    nspawn: Option<Child>,
    leader: Option<u32>,
    boots: u32,
    _one: MutexGuard<'static, ()>,
}

impl Testbed {
    /// Prepare (overlay, directories, cgroups) without booting: write files, then [`boot`].
    ///
    /// [`boot`]: Testbed::boot
    pub fn new(root: &Path) -> Testbed {
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        reap_stale();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .expect("create the testbed directory")
            .keep();
        let name = format!(
            "k8s-nokmem-tb-{}-{}",
            std::process::id(),
            dir.file_name()
                .unwrap()
                .to_string_lossy()
                .rsplit('.')
                .next()
                .unwrap()
        );
        let mut tb = Testbed {
            name,
            lower: root.to_path_buf(),
            dir,
            keep: std::env::var("K8S_NOKMEM_KEEP_TMP").is_ok_and(|v| v == "1"),
            mounted: false,
            cgroups: Vec::new(),
            nspawn: None,
            leader: None,
            boots: 0,
            _one: one,
        };
        for sub in ["upper", "work", "merged", "docker", "share"] {
            fs::create_dir_all(tb.dir.join(sub)).unwrap();
        }
        // for reap_stale(), should this process die without dropping us
        fs::write(
            tb.dir.join(OWNER),
            format!("{}\n{}\n", std::process::id(), tb.name),
        )
        .unwrap();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            tb.lower.display(),
            tb.dir.join("upper").display(),
            tb.dir.join("work").display()
        );
        run_host(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &opts])
                .arg(tb.merged()),
        );
        tb.mounted = true;
        tb.cgroups = make_cgroups(&tb.name);
        let list: Vec<String> = tb.cgroups.iter().map(|c| c.display().to_string()).collect();
        fs::write(tb.dir.join(CGROUPS), list.join("\n")).unwrap();
        tb
    }

    /// Prepare and boot.
    pub fn boot_new(root: &Path) -> Testbed {
        let mut tb = Testbed::new(root);
        tb.boot();
        tb
    }

    /// The container's `/` as seen from the host (writes show inside at once).
    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// The host path of an absolute path inside the container.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.merged().join(inside.trim_start_matches('/'))
    }

    /// The host side of `/mnt/share`.
    pub fn share(&self) -> PathBuf {
        self.dir.join("share")
    }

    /// `/mnt/share` inside.
    pub fn share_inside(&self) -> &'static str {
        SHARE_IN
    }

    /// The test's directory (logs: `nspawn.<n>.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The container's PID 1 as a host PID.
    pub fn leader(&self) -> u32 {
        self.leader.expect("the testbed is not booted")
    }

    /// Write a file inside (parents created), with `mode`.
    pub fn write(&self, inside: &str, content: impl AsRef<[u8]>, mode: u32) {
        let path = self.path(inside);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("k8s-nokmem-tmp");
        fs::write(&tmp, content).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).unwrap();
        fs::rename(&tmp, &path).unwrap();
    }

    /// Copy a host file inside, with `mode`.
    pub fn copy_in(&self, host: impl AsRef<Path>, inside: &str, mode: u32) {
        let host = host.as_ref();
        let bytes = fs::read(host).unwrap_or_else(|e| panic!("read {}: {e}", host.display()));
        self.write(inside, bytes, mode);
    }

    /// Create (or replace) a symlink inside.
    pub fn symlink(&self, inside: &str, target: &str) {
        let link = self.path(inside);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).unwrap();
    }

    /// Mask a unit (a /dev/null symlink in /etc/systemd/system; once booted, `systemctl
    /// daemon-reload` after).
    pub fn mask(&self, unit: &str) {
        self.symlink(&format!("/etc/systemd/system/{unit}"), "/dev/null");
    }

    /// This build's helper at [`HELPER`] and `config` as its config ([`Testbed::write_config`]).
    pub fn install_helper(&self, config: &str) {
        self.write_config(config);
        self.copy_in(env!("CARGO_BIN_EXE_k8s-nokmem"), HELPER, 0o755);
    }

    /// `config` as the helper's /etc/k8s-nokmem/k8s-nokmem.conf.
    pub fn write_config(&self, config: impl AsRef<[u8]>) {
        self.write("/etc/k8s-nokmem/k8s-nokmem.conf", config, 0o644);
    }

    /// The package's `unit` (from the repository's systemd/) in /lib/systemd/system.
    pub fn install_unit(&self, unit: &str) {
        self.copy_in(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("systemd")
                .join(unit),
            &format!("/lib/systemd/system/{unit}"),
            0o644,
        );
    }

    /// Read a file inside.
    pub fn read(&self, inside: &str) -> Vec<u8> {
        let path = self.path(inside);
        fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// Boot and wait until the boot finished (`systemctl is-system-running --wait`).
    pub fn boot(&mut self) {
        assert!(self.nspawn.is_none(), "already booted");
        self.boots += 1;
        let log_path = self.dir.join(format!("nspawn.{}.log", self.boots));
        let log = fs::File::create(&log_path).unwrap();
        let started = Instant::now();
        // a shell moves itself into our cgroups, then becomes systemd-nspawn
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"while [ "$1" != -- ]; do echo $$ >"$1" || exit 97; shift; done; shift; exec "$@""#)
            .arg("sh");
        for cg in &self.cgroups {
            cmd.arg(cg.join("cgroup.procs"));
        }
        cmd.arg("--")
            .arg("systemd-nspawn")
            .arg("-D")
            .arg(self.merged())
            .arg(format!("--machine={}", self.name))
            .args([
                "-b",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--system-call-filter=@keyring",
                "--capability=all",
                "--console=read-only",
            ])
            .arg(format!(
                "--bind={}:/var/lib/docker",
                self.dir.join("docker").display()
            ))
            .arg(format!("--bind={}:{SHARE_IN}", self.share().display()))
            .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("start systemd-nspawn");
        let nspawn_pid = child.id();
        self.nspawn = Some(child);
        fs::write(self.dir.join(NSPAWN_PID), nspawn_pid.to_string()).unwrap();
        let deadline = started + BOOT_TIMEOUT;
        let leader = loop {
            self.check_alive("finding the container's PID 1");
            if let Some(pid) = find_leader(nspawn_pid) {
                break pid;
            }
            if Instant::now() > deadline {
                self.fail("no container PID 1 appeared");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.leader = Some(leader);
        loop {
            self.check_alive("waiting for the boot");
            let out = self.run_timeout(
                &["systemctl", "is-system-running", "--wait"],
                Duration::from_secs(30),
            );
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match state.as_str() {
                "running" => break,
                "degraded" => {
                    let failed = self.sh("systemctl --failed --no-legend --plain");
                    eprintln!(
                        "testbed: boot finished degraded: {}",
                        String::from_utf8_lossy(&failed.stdout).trim()
                    );
                    break;
                }
                _ if Instant::now() > deadline => self.fail(&format!(
                    "boot did not finish: is-system-running says '{state}'"
                )),
                // the bus may not be up yet
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        eprintln!(
            "testbed: booted '{}' (PID 1 = host pid {leader}) in {} ms; dir {}",
            self.name,
            started.elapsed().as_millis(),
            self.dir.display()
        );
    }

    /// Shut the container down (poweroff, then kill after a timeout); the files stay.
    pub fn shutdown(&mut self) {
        let Some(mut child) = self.nspawn.take() else {
            return;
        };
        let leader = self.leader.take();
        // SIGTERM to nspawn = a clean poweroff of the container (its --kill-signal)
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
            eprintln!("testbed: container did not power off within {STOP_TIMEOUT:?}; killing it");
            if let Some(pid) = leader {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Power off and boot again on the same files (a "reboot": nspawn ends on reboot).
    pub fn reboot(&mut self) {
        self.shutdown();
        self.boot();
    }

    /// Run argv inside (all namespaces, clean environment); returns the output whatever
    /// the exit status.
    pub fn run(&self, argv: &[&str]) -> Output {
        self.run_timeout(argv, Duration::from_secs(600))
    }

    /// Run argv inside, killed after `timeout`.
    pub fn run_timeout(&self, argv: &[&str], timeout: Duration) -> Output {
        self.run_env(argv, &[], timeout)
    }

    /// Run argv inside with extra environment variables.
    pub fn run_env(&self, argv: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
        let leader = self.leader().to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &leader, "-a", "--"])
            .arg("env")
            .arg("-i")
            .arg(format!("PATH={PATH_IN}"))
            .arg("LC_ALL=C")
            .arg("SYSTEMD_PAGER=")
            .arg("SYSTEMD_COLORS=0");
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("start nsenter");
        output_timeout(child, timeout).unwrap_or_else(|| {
            panic!(
                "`{}` did not finish within {timeout:?} inside the testbed",
                argv.join(" ")
            )
        })
    }

    /// `sh -c script` inside; any exit status.
    pub fn sh(&self, script: &str) -> Output {
        self.run(&["sh", "-c", script])
    }

    /// `sh -c script` inside; panics with its output unless it exits 0; returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "inside the testbed `{script}` failed ({}):\n{}",
            out.status,
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show -p A,B unit` inside, as a map.
    pub fn unit_props(&self, unit: &str, props: &[&str]) -> BTreeMap<String, String> {
        let out = self.run(&["systemctl", "show", "-p", &props.join(","), unit]);
        assert!(
            out.status.success(),
            "systemctl show {unit}: {}",
            show(&out)
        );
        parse_props(&String::from_utf8_lossy(&out.stdout))
    }

    /// One property of a unit.
    pub fn unit_prop(&self, unit: &str, prop: &str) -> String {
        self.unit_props(unit, &[prop])
            .remove(prop)
            .unwrap_or_default()
    }

    /// `journalctl -u unit` inside (for failure messages).
    pub fn journal(&self, unit: &str) -> String {
        let out = self.run(&[
            "journalctl",
            "--no-pager",
            "-o",
            "short-monotonic",
            "-u",
            unit,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Fail unless every one of `units` is active, showing its journal.
    #[track_caller]
    pub fn assert_active(&self, units: &[&str], when: &str) {
        for unit in units {
            assert_eq!(
                self.unit_prop(unit, "ActiveState"),
                "active",
                "{unit} {when}\n{}",
                self.journal(unit)
            );
        }
    }

    /// Wait until `systemctl is-active unit` says `state`, at most `secs`.
    pub fn wait_for_state(&self, unit: &str, state: &str, secs: u64) {
        let reached = eventually(secs, Duration::from_millis(20), || {
            let out = self.run(&["systemctl", "is-active", unit]);
            String::from_utf8_lossy(&out.stdout).trim() == state
        });
        assert!(
            reached,
            "{unit} never became {state}:\n{}",
            self.journal(unit)
        );
    }

    /// Wait until `unit` is `activating/auto-restart` (restarting after a failure), at most
    /// `secs`.
    pub fn wait_for_restarting(&self, unit: &str, secs: u64) {
        let mut p = BTreeMap::new();
        let reached = eventually(secs, Duration::from_millis(50), || {
            p = self.unit_props(unit, &["ActiveState", "SubState"]);
            p["ActiveState"] == "activating" && p["SubState"] == "auto-restart"
        });
        assert!(
            reached,
            "{unit} never went back to its crash loop: {p:?}\n{}",
            self.journal(unit)
        );
    }

    /// Start `command` (a shell command line) inside in its own session (`setsid`, as apt
    /// runs maintainer scripts) and return at once; [`Testbed::wait_detached`] waits for it.
    pub fn start_detached(&self, command: &str) {
        self.sh_ok(&format!(
            "mkdir -p {DETACHED_DIR}; setsid sh -c '{command} >{DETACHED_DIR}/log 2>&1; \
             echo $? >{DETACHED_DIR}/rc' </dev/null >/dev/null 2>&1 &"
        ));
    }

    /// Wait (at most `secs`) until the command of [`Testbed::start_detached`] ended: its exit
    /// status and its output (stdout and stderr), which is also printed.
    pub fn wait_detached(&self, secs: u64) -> (String, String) {
        let rc = format!("{DETACHED_DIR}/rc");
        let ended = eventually(secs, Duration::from_millis(100), || self.path(&rc).exists());
        assert!(ended, "the detached command never ended");
        let log = String::from_utf8_lossy(&self.read(&format!("{DETACHED_DIR}/log"))).into_owned();
        eprint!("{log}");
        let rc = String::from_utf8_lossy(&self.read(&rc)).trim().to_string();
        (rc, log)
    }

    fn check_alive(&mut self, doing: &str) {
        let exited = self
            .nspawn
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            self.nspawn = None;
            self.fail(&format!("systemd-nspawn exited ({status}) while {doing}"));
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join(format!("nspawn.{}.log", self.boots)))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn fail(&mut self, what: &str) -> ! {
        panic!(
            "testbed '{}': {what}; nspawn log:\n{}",
            self.name,
            self.log_tail()
        );
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.shutdown();
        if self.mounted {
            let merged = self.merged();
            let ok = Command::new("umount")
                .arg(&merged)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&merged).status();
            }
            self.mounted = false;
        }
        for cg in self.cgroups.drain(..) {
            remove_cgroup_tree(&cg);
        }
        let _ = fs::remove_dir(Path::new("/run/systemd/nspawn/propagate").join(&self.name));
        if self.keep {
            eprintln!(
                "testbed: kept {} (K8S_NOKMEM_KEEP_TMP=1)",
                self.dir.display()
            );
        } else if let Err(e) = remove_tree(&self.dir) {
            eprintln!("testbed: failed to remove {}: {e}", self.dir.display());
        }
    }
}

/// The original stand-in kubelet: its main process is `sleep 1000001`.
pub const ORIG_KUBELET: &[u8] = b"#!/bin/sh\n# stand-in kubelet (original)\nexec sleep 1000001\n";

/// Stand-in `kubelet.service` (Type=simple, `Restart=always` like kubeadm's unit) running
/// `/usr/bin/kubelet` = [`ORIG_KUBELET`], and `docker.service` (Type=notify) whose
/// `/usr/local/bin/stand-in-dockerd` checks that `/usr/sbin/runc --version` works before it
/// reports ready (so a broken runc fails docker's start job). Both enabled; the real
/// docker.socket and containerd.service masked. Write before [`Testbed::boot`].
pub fn write_stand_in_services(tb: &Testbed) {
    tb.write("/usr/bin/kubelet", ORIG_KUBELET, 0o755);
    tb.write(
        "/etc/systemd/system/kubelet.service",
        "[Unit]\nDescription=stand-in kubelet\nAfter=docker.service\nStartLimitIntervalSec=0\n\n\
         [Service]\nExecStart=/usr/bin/kubelet\nRestart=always\nRestartSec=10\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    tb.write(
        "/usr/local/bin/stand-in-dockerd",
        "#!/bin/sh\n# stand-in dockerd: needs a working runc, ready after a moment\n\
         /usr/sbin/runc --version >/dev/null || { echo 'stand-in dockerd: runc does not run' >&2; exit 1; }\n\
         sleep 0.2\nsystemd-notify --ready\nexec sleep 1000002\n",
        0o755,
    );
    tb.write(
        "/etc/systemd/system/docker.service",
        "[Unit]\nDescription=stand-in docker\nStartLimitIntervalSec=0\n\n\
         [Service]\nType=notify\nNotifyAccess=all\nExecStart=/usr/local/bin/stand-in-dockerd\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    for unit in STAND_IN_UNITS {
        tb.symlink(
            &format!("/etc/systemd/system/multi-user.target.wants/{unit}"),
            &format!("/etc/systemd/system/{unit}"),
        );
    }
    for unit in ["docker.socket", "containerd.service"] {
        tb.mask(unit);
    }
}

/// A testbed for `test` (not booted) with the stand-in services of
/// [`write_stand_in_services`], or `None` when it cannot run ([`root_or_skip`]).
pub fn stand_in_node(test: &str) -> Option<Testbed> {
    let root = root_or_skip(test)?;
    let tb = Testbed::new(&root);
    write_stand_in_services(&tb);
    Some(tb)
}

/// Clean up after test processes that died without dropping their testbed (SIGKILL, Ctrl-C):
/// kill what is left in their cgroups, unmount, remove the cgroups and the directory. Kept
/// directories (`K8S_NOKMEM_KEEP_TMP=1`) and those of live processes are left alone.
fn reap_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) || dir.join(KEPT).exists() {
            continue;
        }
        let Ok(owner) = fs::read_to_string(dir.join(OWNER)) else {
            continue;
        };
        let mut lines = owner.lines();
        let (Some(pid), Some(name)) = (lines.next(), lines.next()) else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        eprintln!(
            "testbed: cleaning up after dead test process {pid}: {}",
            dir.display()
        );
        if let Ok(nspawn) = fs::read_to_string(dir.join(NSPAWN_PID)) {
            let cmdline = fs::read(format!("/proc/{}/cmdline", nspawn.trim())).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()) {
                let _ = Command::new("kill").args(["-KILL", nspawn.trim()]).status();
            }
        }
        let cgroups = fs::read_to_string(dir.join(CGROUPS)).unwrap_or_default();
        for cg in cgroups.lines().filter(|l| l.contains(name)) {
            remove_cgroup_tree(Path::new(cg));
        }
        let merged = dir.join("merged");
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&merged)
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir(Path::new("/run/systemd/nspawn/propagate").join(name));
        if let Err(e) = remove_tree(&dir) {
            eprintln!("testbed: failed to remove {}: {e}", dir.display());
        }
    }
}

/// Parse `systemctl show` output (`Key=Value` lines).
pub fn parse_props(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A command's status, stdout and stderr, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_host(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", show(&out));
}

/// The host PID whose PID-namespace PID is 1 and whose parent is nspawn.
fn find_leader(nspawn: u32) -> Option<u32> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let nspid = field("NSpid:");
        if nspid.len() >= 2
            && nspid.last().map(String::as_str) == Some("1")
            && field("PPid:").first().map(String::as_str) == Some(nspawn.to_string().as_str())
        {
            return Some(pid);
        }
    }
    None
}

/// A child cgroup named `name` under this process's cgroup in every mounted hierarchy
/// (cgroup v1 controllers, name=systemd, cgroup2), cpuset initialised from its parent.
fn make_cgroups(name: &str) -> Vec<PathBuf> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut made = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hid), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(mount) = cgroup_mount(&mountinfo, hid == "0", ctrls) else {
            continue;
        };
        let parent = mount.join(path.trim_start_matches('/'));
        let dir = parent.join(name);
        if let Err(e) = fs::create_dir(&dir) {
            panic!("create cgroup {}: {e}", dir.display());
        }
        made.push(dir.clone());
        if ctrls.split(',').any(|c| c == "cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = fs::read(parent.join(f)).unwrap();
                fs::write(dir.join(f), v).unwrap();
            }
        }
    }
    made
}

/// The mount point of the v1 hierarchy with these controllers (or of cgroup2).
fn cgroup_mount(mountinfo: &str, v2: bool, ctrls: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype), Some(superopts)) =
            (left.get(3), left.get(4), right.first(), right.get(2))
        else {
            continue;
        };
        if *root != "/" {
            continue;
        }
        let hit = if v2 {
            *fstype == "cgroup2"
        } else {
            *fstype == "cgroup" && {
                let opts: Vec<&str> = superopts.split(',').collect();
                ctrls.split(',').all(|c| opts.contains(&c))
            }
        };
        if hit {
            return Some(PathBuf::from(point));
        }
    }
    None
}

/// rmdir a cgroup and everything below it, deepest first; retried while processes leave.
fn remove_cgroup_tree(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut dirs = Vec::new();
        collect_dirs(dir, &mut dirs);
        dirs.reverse();
        let mut left = 0;
        for d in &dirs {
            if fs::remove_dir(d).is_err() && d.exists() {
                left += 1;
            }
        }
        if left == 0 || Instant::now() > deadline {
            if left > 0 {
                eprintln!(
                    "testbed: could not remove cgroup {} ({left} left)",
                    dir.display()
                );
            }
            return;
        }
        // processes still inside: kill them, then retry
        for d in &dirs {
            if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Remove a tree on one file system (the overlay is unmounted first).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let status = Command::new("rm")
        .args(["-rf", "--one-file-system"])
        .arg(dir)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("rm -rf exited {status}")))
    }
}

/// Whether `done` holds within `secs`, asked at once and then every `every`.
fn eventually(secs: u64, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Collect a child's output, killing it after `timeout` (then `None`).
fn output_timeout(mut child: Child, timeout: Duration) -> Option<Output> {
    use std::io::Read;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = match wait_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
    };
    Some(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Append a line to a file on the host (logs of a scenario).
pub fn append(path: &Path, line: &str) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let _ = writeln!(f, "{line}");
}
