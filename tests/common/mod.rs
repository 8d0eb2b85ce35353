//! Helpers shared by integration tests. Each test binary compiles this module, so items one
//! test does not use are expected.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `K8S_NOKMEM_STRICT=1` (set by scripts/test.sh and CI): a missing artifact fails the test
/// instead of skipping it.
pub fn strict() -> bool {
    std::env::var_os("K8S_NOKMEM_STRICT").is_some_and(|v| v == "1")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Return `path` if it exists. Otherwise skip (print why and how to build it) or, in strict
/// mode, fail.
pub fn artifact(path: &Path, build_with: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    let msg = format!(
        "'{}' is missing; build it with `{build_with}`",
        path.display()
    );
    assert!(!strict(), "{msg}");
    eprintln!("skipped: {msg}");
    None
}

/// Skip (or fail in strict mode) unless we are root.
pub fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(!strict(), "{what} needs root");
    eprintln!("skipped: {what} needs root");
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
