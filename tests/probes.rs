//! The real probes: tests/probe built from Debian's kubernetes source (vendored runc
//! rc92 `libcontainer/cgroups/fs`) with and without `nokmem`, by scripts/build-probes.sh,
//! into `target/probes/{amd64,arm64}/{probe-kmem,probe-nokmem}` (or `$K8S_NOKMEM_PROBES`).
//!
//! - `inspect` must classify all four right;
//! - on a cgroup v1 host, as root, the amd64 probes run under `strace -f` creating a
//!   pod-style cgroup under a test parent: only the kmem build may open
//!   `memory.kmem.limit_in_bytes` for writing. Every cgroup created is removed, also when
//!   the test fails (a Drop guard, deepest first).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::cgroup::{opens_for_writing, v1_mounts, CgroupGuard};

const BIN: &str = env!("CARGO_BIN_EXE_k8s-nokmem");
const GO: &str = "/usr/bin/go";
const STRACE: &str = "/usr/bin/strace";
const MEMORY_V1: &str = "/sys/fs/cgroup/memory";
const KMEM_LIMIT: &str = "memory.kmem.limit_in_bytes";
const MEMORY_LIMIT: &str = "memory.limit_in_bytes";
const ARCHES: [&str; 2] = ["amd64", "arm64"];
const FLAVOURS: [&str; 2] = ["kmem", "nokmem"];

fn probes_dir() -> (PathBuf, String) {
    match std::env::var_os("K8S_NOKMEM_PROBES") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let cmd = format!("scripts/build-probes.sh --out {}", dir.display());
            (dir, cmd)
        }
        None => (
            common::repo().join("target/probes"),
            "scripts/build-probes.sh".into(),
        ),
    }
}

/// The probe binary; when it is not built the test fails (`None`: skipped, only under
/// `K8S_NOKMEM_ALLOW_SKIP=1`).
fn probe(arch: &str, flavour: &str) -> Option<PathBuf> {
    let (dir, build_with) = probes_dir();
    common::artifact(
        &dir.join(arch).join(format!("probe-{flavour}")),
        &build_with,
    )
}

#[test]
fn inspect_classifies_the_probes() {
    for arch in ARCHES {
        for flavour in FLAVOURS {
            // A missing probe fails (or, when skipping is allowed, skips only itself).
            let Some(path) = probe(arch, flavour) else {
                continue;
            };
            let case = format!("{}", path.display());
            let out = common::run(Command::new(BIN).args(["inspect", "--json"]).arg(&path));
            let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{case}: not JSON ({e}): {out:?}"));
            let e = &entries[0];
            assert_eq!(e["arch"], arch, "{case}: {e:#}");
            let tags: Vec<&str> = e["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            let file_names: Vec<&str> = e["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .chain(e["nokmem_evidence"].as_array().unwrap())
                .filter_map(|v| v["file_name"].as_str())
                .collect();
            let vendored =
                "k8s.io/kubernetes/vendor/github.com/opencontainers/runc/libcontainer/cgroups/fs";
            if flavour == "kmem" {
                assert_eq!(out.status.code(), Some(1), "{case}: {e:#}");
                assert_eq!(e["verdict"], "enables-kmem", "{case}: {e:#}");
                let what: Vec<&str> = e["evidence"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["what"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    what,
                    [KMEM_LIMIT, "libcontainer/cgroups/fs/kmem.go"],
                    "{case}: {e:#}"
                );
                assert_eq!(file_names, [format!("{vendored}/kmem.go")], "{case}: {e:#}");
                assert!(!tags.contains(&"nokmem"), "{case}: {e:#}");
            } else {
                assert_eq!(out.status.code(), Some(0), "{case}: {e:#}");
                assert_eq!(e["verdict"], "safe", "{case}: {e:#}");
                assert_eq!(e["evidence"], serde_json::json!([]), "{case}: {e:#}");
                assert!(tags.contains(&"nokmem"), "{case}: {e:#}");
                // The probe keeps kmem_disabled.go (a small program may not; kubelet does).
                assert!(
                    file_names.is_empty() || file_names == [format!("{vendored}/kmem_disabled.go")],
                    "{case}: {e:#}"
                );
            }
            if Path::new(GO).exists() {
                let m = common::ok(Command::new(GO).args(["version", "-m"]).arg(&path));
                let version = m
                    .lines()
                    .next()
                    .and_then(|l| l.rsplit(": ").next())
                    .unwrap();
                assert_eq!(
                    e["go_version"],
                    version.trim(),
                    "{case}: go version -m says\n{m}"
                );
            }
        }
    }
}

/// Fail (or skip under `K8S_NOKMEM_ALLOW_SKIP=1`) unless this host can run the strace test.
fn strace_host_or_skip() -> bool {
    if !common::root_or_skip("creating cgroups") {
        return false;
    }
    let needs = [
        (STRACE.to_string(), "apt-get install strace"),
        (
            format!("{MEMORY_V1}/{KMEM_LIMIT}"),
            "a cgroup v1 memory hierarchy at /sys/fs/cgroup/memory with kmem files",
        ),
    ];
    for (path, how) in needs {
        if !Path::new(&path).exists() {
            common::cannot_run(&format!("'{path}' is missing ({how})"));
            return false;
        }
    }
    true
}

#[test]
fn only_the_kmem_probe_opens_the_kmem_limit_for_writing() {
    if !strace_host_or_skip() {
        return;
    }
    let Some(kmem) = probe("amd64", "kmem") else {
        return;
    };
    let Some(nokmem) = probe("amd64", "nokmem") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for (flavour, bin) in [("kmem", kmem), ("nokmem", nokmem)] {
        let parent = format!("k8s-nokmem-test-{}-{flavour}", std::process::id());
        let pod = "pod0123abcd-probe";
        let guard = CgroupGuard::new(&parent);
        let trace_file = tmp.path().join(format!("strace-{flavour}.txt"));
        let out = common::run(
            Command::new(STRACE)
                .args(["-f", "-qq", "-e", "trace=openat,openat2,write", "-o"])
                .arg(&trace_file)
                .arg(&bin)
                .args(["--parent", &parent, "--name", pod]),
        );
        let trace = fs::read_to_string(&trace_file).unwrap_or_default();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let case = format!(
            "{flavour}: {} ({})\nstdout:\n{stdout}\nstderr:\n{}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{case}");
        assert!(stdout.contains(&format!("build={flavour} ")), "{case}");
        let memory_cgroup = Path::new(MEMORY_V1).join(&parent).join(pod);
        assert!(
            memory_cgroup.is_dir(),
            "{case}: no {}",
            memory_cgroup.display()
        );

        let under_parent = |lines: Vec<&str>| -> Vec<String> {
            lines
                .into_iter()
                .filter(|l| l.contains(&format!("/{parent}/")))
                .map(String::from)
                .collect()
        };
        let limit_writes = under_parent(opens_for_writing(&trace, MEMORY_LIMIT));
        assert!(
            !limit_writes.is_empty(),
            "{case}\nthe probe never set {MEMORY_LIMIT}: the test proves nothing\ntrace:\n{trace}"
        );
        let kmem_writes = under_parent(opens_for_writing(&trace, KMEM_LIMIT));
        if flavour == "kmem" {
            assert!(
                !kmem_writes.is_empty(),
                "{case}\nno write-open of {KMEM_LIMIT}:\n{trace}"
            );
        } else {
            assert_eq!(kmem_writes, Vec::<String>::new(), "{case}");
        }
        assert_eq!(guard.remove(), Vec::<String>::new(), "{case}: cleanup");
        for p in guard.paths() {
            assert!(!p.exists(), "{case}: {} left behind", p.display());
        }
    }
}

#[test]
fn strace_lines_are_matched_by_syscall_path_and_flags() {
    let trace = r#"31414 openat(AT_FDCWD, "/sys/fs/cgroup/memory/t/p/memory.kmem.limit_in_bytes", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0700) = 8
31415 openat2(AT_FDCWD, "/sys/fs/cgroup/memory/t/p/memory.kmem.limit_in_bytes", {flags=O_WRONLY|O_CLOEXEC, resolve=RESOLVE_NO_XDEV}, 24) = 9
31416 openat(AT_FDCWD, "/sys/fs/cgroup/memory/t/p/memory.kmem.limit_in_bytes", O_RDONLY|O_CLOEXEC) = 8
31417 openat(AT_FDCWD, "/sys/fs/cgroup/memory/t/p/memory.kmem.limit_in_bytes", O_RDWR <unfinished ...>
31418 write(8, "memory.kmem.limit_in_bytes", 26) = 26
31419 openat(AT_FDCWD, "/sys/fs/cgroup/memory/t/p/memory.limit_in_bytes", O_WRONLY|O_CLOEXEC) = 8
"#;
    let pids = |name| -> Vec<&str> {
        opens_for_writing(trace, name)
            .iter()
            .map(|l| l.split(' ').next().unwrap())
            .collect()
    };
    assert_eq!(pids(KMEM_LIMIT), ["31414", "31415", "31417"]);
    assert_eq!(pids(MEMORY_LIMIT), ["31419"]);
}

#[test]
fn v1_hierarchies_come_from_mountinfo() {
    let mountinfo = "\
25 30 0:22 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
26 30 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 30 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
28 30 0:25 / /proc rw - proc proc rw
";
    assert_eq!(
        v1_mounts(mountinfo),
        [
            PathBuf::from("/sys/fs/cgroup/memory"),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        ]
    );
}
