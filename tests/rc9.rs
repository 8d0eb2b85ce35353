//! runc v1.0.0-rc9, the runc of the original write-up (Docker 18.09 nodes run an rc-era
//! runc with kmem code inside), built by scripts/build-rc9.sh into target/rc9: with
//! `nokmem` through `scripts/build-payload.sh --runc-src` (amd64 and arm64, MANIFEST) and,
//! as the test subject, without it (amd64).
//!
//! - the builds say what they are: `--version` (1.0.0-rc9 and the commit), the MANIFEST
//!   (version, commit, tags), `file` (static, the right machine), `inspect` (safe /
//!   enables-kmem);
//! - their behaviour, as root on this host's cgroup v1: each runs `runc run` on a minimal
//!   bundle (a static C program as rootfs) with a memory limit under `strace -f`; only the
//!   default build write-opens `memory.kmem.limit_in_bytes`. Every cgroup made is removed,
//!   also when the test fails (a Drop guard).
//!
//! The rc9 tree: `K8S_NOKMEM_RUNC_RC9_SRC`, else `<repo>/../shared/sources/`, else a clone of
//! the tag; without any, the build (and the test) fails naming all three.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::cgroup::{opens_for_writing, CgroupGuard};

const BIN: &str = env!("CARGO_BIN_EXE_k8s-nokmem");
const STRACE: &str = "/usr/bin/strace";
const MEMORY_V1: &str = "/sys/fs/cgroup/memory";
const KMEM_LIMIT: &str = "memory.kmem.limit_in_bytes";
const MEMORY_LIMIT: &str = "memory.limit_in_bytes";
const VERSION: &str = "1.0.0-rc9";
const COMMIT: &str = "d736ef14f0288d6993a1845745d6756cfc9ddd5a";
const BUILD_CMD: &str = "scripts/build-rc9.sh";

/// target/rc9, built (or found in the cache) once per test binary by scripts/build-rc9.sh.
/// A build that fails fails the test; one that cannot start (exit 2: no rc9 source, a
/// missing tool) too, unless `K8S_NOKMEM_ALLOW_SKIP=1` (then `None`: skipped).
fn built() -> Option<&'static Path> {
    static OUT: OnceLock<Option<PathBuf>> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = common::repo().join("target/rc9");
        let t0 = std::time::Instant::now();
        let res = common::run(
            Command::new(common::repo().join(BUILD_CMD))
                .arg("--out")
                .arg(&out)
                .env("K8S_NOKMEM_BIN", BIN),
        );
        let stderr = String::from_utf8_lossy(&res.stderr);
        let msg = format!(
            "`{BUILD_CMD}` failed ({}); fix what it says (the source: set \
             K8S_NOKMEM_RUNC_RC9_SRC to the runc v1.0.0-rc9 tree or tarball):\n{stderr}",
            res.status
        );
        match res.status.code() {
            Some(0) => {}
            Some(2) => {
                common::cannot_run(&msg);
                return None;
            }
            _ => panic!("{msg}"),
        }
        eprintln!("{BUILD_CMD}: {} ms\n{stderr}", t0.elapsed().as_millis());
        Some(out)
    })
    .as_deref()
}

/// The `[runc]` section of an INI MANIFEST as key/value pairs.
fn runc_section(manifest: &str) -> Vec<(String, String)> {
    let mut on = false;
    let mut kv = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            on = line == "[runc]";
        } else if let (true, Some((k, v))) = (on, line.split_once(" = ")) {
            kv.push((k.to_string(), v.to_string()));
        }
    }
    kv
}

/// `k8s-nokmem inspect --json FILE`: exit code and the one entry.
fn inspect(file: &Path) -> (Option<i32>, serde_json::Value) {
    let out = common::run(Command::new(BIN).args(["inspect", "--json"]).arg(file));
    let mut entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {out:?}", file.display()));
    (out.status.code(), entries.remove(0))
}

#[test]
fn rc9_builds_say_version_commit_tags_and_kmem() {
    let Some(out) = built() else {
        return;
    };
    let kmem = out.join("kmem/amd64/runc");
    let version_of = |args: &mut Command| {
        let v = common::ok(args);
        assert!(
            v.lines().next() == Some(&format!("runc version {VERSION}"))
                && v.lines().any(|l| l == format!("commit: {COMMIT}")),
            "{args:?}:\n{v}"
        );
    };
    for arch in ["amd64", "arm64"] {
        let dir = out.join("nokmem").join(arch);
        let runc = dir.join("runc");
        let manifest = fs::read_to_string(dir.join("MANIFEST")).unwrap();
        let kv = runc_section(&manifest);
        let get = |k: &str| {
            kv.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{arch}: no '{k}' in [runc] of\n{manifest}"))
        };
        assert_eq!(get("version"), VERSION, "{manifest}");
        assert_eq!(get("commit"), COMMIT, "{manifest}");
        assert_eq!(
            get("version_output"),
            format!("runc version {VERSION}"),
            "{manifest}"
        );
        let tags: Vec<&str> = get("tags").split_whitespace().collect();
        assert!(
            tags.contains(&"seccomp") && tags.contains(&"nokmem"),
            "{manifest}"
        );
        assert_eq!(get("arch"), arch, "{manifest}");

        let desc = common::ok(Command::new("file").arg("-b").arg(&runc));
        let machine = if arch == "amd64" {
            "x86-64"
        } else {
            "ARM aarch64"
        };
        assert!(
            desc.contains("statically linked") && desc.contains(machine),
            "{arch}: {desc}"
        );
        if arch == "amd64" {
            version_of(Command::new(&runc).arg("--version"));
        } else {
            version_of(
                Command::new("qemu-aarch64-static")
                    .arg(&runc)
                    .arg("--version"),
            );
        }
        let (code, e) = inspect(&runc);
        assert_eq!((code, &e["verdict"]), (Some(0), &"safe".into()), "{e:#}");
        assert_eq!(e["arch"], arch, "{e:#}");
        assert!(
            e["tags"].as_array().unwrap().contains(&"nokmem".into()),
            "{e:#}"
        );
    }
    version_of(Command::new(&kmem).arg("--version"));
    let (code, e) = inspect(&kmem);
    assert_eq!(
        (code, &e["verdict"]),
        (Some(1), &"enables-kmem".into()),
        "{e:#}"
    );
    let what: Vec<&str> = e["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["what"].as_str())
        .collect();
    assert!(what.contains(&KMEM_LIMIT), "{e:#}");
    assert!(
        !e["tags"].as_array().unwrap().contains(&"nokmem".into()),
        "{e:#}"
    );
}

/// A bundle whose rootfs holds one static program, `/true`, and whose config (from the
/// runc under test's own `runc spec`) sets a memory limit and `cgroups_path`.
fn bundle(dir: &Path, runc: &Path, cgroups_path: &str) {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    let src = dir.join("true.c");
    fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    common::ok(
        Command::new("gcc")
            .args(["-static", "-Os", "-o"])
            .arg(rootfs.join("true"))
            .arg(&src),
    );
    common::ok(Command::new(runc).arg("spec").current_dir(dir));
    let config = dir.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = serde_json::json!(["/true"]);
    c["root"]["readonly"] = false.into();
    c["linux"]["cgroupsPath"] = cgroups_path.into();
    c["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 64 << 20 });
    fs::write(&config, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
}

#[test]
fn only_the_default_rc9_write_opens_the_kmem_limit() {
    if !common::root_or_skip("runc run (cgroups, namespaces)") {
        return;
    }
    for (path, how) in [
        (STRACE.to_string(), "apt-get install strace"),
        ("/usr/bin/gcc".to_string(), "apt-get install gcc libc6-dev"),
        (
            format!("{MEMORY_V1}/{KMEM_LIMIT}"),
            "a cgroup v1 memory hierarchy at /sys/fs/cgroup/memory with kmem files: boot with \
             systemd.unified_cgroup_hierarchy=0",
        ),
    ] {
        if !Path::new(&path).exists() {
            common::cannot_run(&format!("'{path}' is missing ({how})"));
            return;
        }
    }
    let Some(out) = built() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for flavour in ["kmem", "nokmem"] {
        let runc = out.join(flavour).join("amd64/runc");
        let parent = format!("k8s-nokmem-test-{}-rc9-{flavour}", std::process::id());
        let guard = CgroupGuard::new(&parent);
        let dir = tmp.path().join(flavour);
        bundle(&dir.join("bundle"), &runc, &format!("/{parent}/ctr"));
        let trace_file = dir.join("strace.txt");
        let id = format!("k8s-nokmem-rc9-{flavour}-{}", std::process::id());
        // dropped before `guard`: a container left by a failed run is killed first
        let _container = Container {
            runc: runc.clone(),
            state: dir.join("state"),
            id: id.clone(),
        };
        let res = common::run(
            Command::new(STRACE)
                .args(["-f", "-qq", "-e", "trace=openat,openat2,write", "-o"])
                .arg(&trace_file)
                .arg(&runc)
                .arg("--root")
                .arg(dir.join("state"))
                .args(["run", "--bundle"])
                .arg(dir.join("bundle"))
                .arg(&id),
        );
        let trace = fs::read_to_string(&trace_file).unwrap_or_default();
        let case = format!(
            "{flavour}: {} run ({})\nstdout:\n{}\nstderr:\n{}",
            runc.display(),
            res.status,
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
        assert!(
            res.status.success(),
            "{case}\ntrace tail:\n{}",
            tail(&trace)
        );
        let under_parent = |lines: Vec<&str>| -> Vec<String> {
            lines
                .into_iter()
                .filter(|l| l.contains(&format!("{MEMORY_V1}/{parent}/")))
                .map(String::from)
                .collect()
        };
        let limit_writes = under_parent(opens_for_writing(&trace, MEMORY_LIMIT));
        assert!(
            !limit_writes.is_empty(),
            "{case}\nrunc never set {MEMORY_LIMIT}: the test proves nothing\n{}",
            tail(&trace)
        );
        let kmem_writes = under_parent(opens_for_writing(&trace, KMEM_LIMIT));
        if flavour == "kmem" {
            assert!(
                !kmem_writes.is_empty(),
                "{case}\nno write-open of {KMEM_LIMIT}:\n{}",
                tail(&trace)
            );
        } else {
            assert_eq!(kmem_writes, Vec::<String>::new(), "{case}");
        }
        eprintln!(
            "{flavour}: {} write-open(s) of {MEMORY_LIMIT}, {} of {KMEM_LIMIT}",
            limit_writes.len(),
            kmem_writes.len()
        );
        assert_eq!(guard.remove(), Vec::<String>::new(), "{case}: cleanup");
        for p in guard.paths() {
            assert!(!p.exists(), "{case}: {} left behind", p.display());
        }
    }
}

/// Deletes the container (`runc delete --force`) when dropped, so that a run that failed
/// half-way leaves no process in the test's cgroups; after a good run there is none.
struct Container {
    runc: PathBuf,
    state: PathBuf,
    id: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.state.join(&self.id).exists() {
            let _ = Command::new(&self.runc)
                .arg("--root")
                .arg(&self.state)
                .args(["delete", "--force", &self.id])
                .status();
        }
    }
}

fn tail(trace: &str) -> String {
    let lines: Vec<&str> = trace.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
