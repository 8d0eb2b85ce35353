//! Helpers shared by integration tests. Each test binary compiles this module, so items one
//! test does not use are expected.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod cgroup;
pub mod node;

/// The opt-out for a quick local loop (`scripts/test.sh --quick` sets it): with
/// `K8S_NOKMEM_ALLOW_SKIP=1` a test that cannot run (a missing artifact, tool or root)
/// prints `skipped: ...` and passes.
pub const ALLOW_SKIP_ENV: &str = "K8S_NOKMEM_ALLOW_SKIP";

/// Whether a test that cannot run must fail: always, unless `K8S_NOKMEM_ALLOW_SKIP=1`.
pub fn strict() -> bool {
    !std::env::var_os(ALLOW_SKIP_ENV).is_some_and(|v| v == "1")
}

/// A test that cannot run: fail with `msg` (which names the command that fixes it), or
/// under `K8S_NOKMEM_ALLOW_SKIP=1` print `skipped: msg` and return (the caller returns).
pub fn cannot_run(msg: &str) {
    assert!(
        !strict(),
        "{msg}\n(this test cannot run; {ALLOW_SKIP_ENV}=1 skips it in a quick local loop)"
    );
    eprintln!("skipped: {msg}");
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Return `path` if it exists. Otherwise fail naming the command that builds it (or skip
/// under `K8S_NOKMEM_ALLOW_SKIP=1`).
pub fn artifact(path: &Path, build_with: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    let msg = format!(
        "'{}' is missing; build it with `{build_with}`",
        path.display()
    );
    cannot_run(&msg);
    None
}

/// The newest `k8s-nokmem_*_<arch>.deb` in `$K8S_NOKMEM_DEB_DIR` or target/debian/.
pub fn deb(arch: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("K8S_NOKMEM_DEB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/debian"));
    let suffix = format!("_{arch}.deb");
    let newest = fs::read_dir(&dir).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("k8s-nokmem_") && name.ends_with(&suffix)
            })
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
    });
    artifact(
        &newest.unwrap_or_else(|| dir.join(format!("k8s-nokmem_*{suffix}"))),
        "scripts/build-deb.sh",
    )
}

/// The Debian mirror this machine's apt uses (`scripts/lib/mirror.sh`; `K8S_NOKMEM_MIRROR`
/// overrides it), so that no host name is written into the tests.
pub fn mirror() -> String {
    ok(&mut Command::new(repo().join("scripts/lib/mirror.sh")))
        .trim()
        .to_string()
}

/// Fail (or skip under `K8S_NOKMEM_ALLOW_SKIP=1`) unless we are root.
pub fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    cannot_run(&format!(
        "{what} needs root; run it with `sudo -E cargo test` (or scripts/test.sh as root)"
    ));
    false
}

/// Run a command, returning its output; panics with the command line if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("failed to start {cmd:?}: {e}"))
}

/// Run a command that must succeed; returns stdout. Panics with stdout+stderr otherwise.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Keep a temp dir when `K8S_NOKMEM_KEEP_TMP=1`, printing its path.
pub fn keep_tmp(dir: tempfile::TempDir) -> Option<tempfile::TempDir> {
    if std::env::var_os("K8S_NOKMEM_KEEP_TMP").is_some_and(|v| v == "1") {
        eprintln!("kept {}", dir.keep().display());
        None
    } else {
        Some(dir)
    }
}

/// Fail unless `text` contains each of `wants`, naming the first one missing, what the text
/// is (`what`: "install log", a check's JSON) and the whole text.
#[track_caller]
pub fn assert_contains(text: &str, wants: &[&str], what: impl std::fmt::Display) {
    for want in wants {
        assert!(text.contains(want), "{what} lacks \"{want}\":\n{text}");
    }
}

/// Fail if `text` contains any of `unwanted`, naming it, what the text is and the whole text.
#[track_caller]
pub fn assert_lacks(text: &str, unwanted: &[&str], what: impl std::fmt::Display) {
    for u in unwanted {
        assert!(!text.contains(u), "{what} has \"{u}\":\n{text}");
    }
}

/// Fail unless `text` starts with `prefix`, showing what the text is and the whole text.
#[track_caller]
pub fn assert_starts_with(text: &str, prefix: &str, what: impl std::fmt::Display) {
    assert!(
        text.starts_with(prefix),
        "{what} does not start with \"{prefix}\":\n{text}"
    );
}
