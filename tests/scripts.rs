//! The build and test scripts (scripts/, scripts/lib/, tests/e2e/) report alike: one
//! `scripts/lib/common.sh` gives them `log`, `warn`, `die`, `need_arg` and `need_tools`, and
//! every message carries the script's own prefix (`build-deb: error: ...`), so a developer
//! sees at once which script stopped and why, with the exit status the script documents.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::{repo, run};

/// What scripts/lib/common.sh defines, once for every script.
const SHARED: &[&str] = &["log", "warn", "die", "need_arg", "need_tools"];
const SCRIPT_DIRS: &[&str] = &["scripts", "scripts/lib", "tests/e2e"];
/// Scripts that still carry their own copies, each with why. An entry that no longer
/// defines any of them fails the test: drop it then.
const OWN_COPIES: &[(&str, &str)] = &[];

fn scripts() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in SCRIPT_DIRS {
        for e in fs::read_dir(repo().join(dir))
            .unwrap()
            .filter_map(Result::ok)
        {
            if e.path().extension().is_some_and(|x| x == "sh") {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The names of SHARED that `text` defines as shell functions (`name() {` or `function name`).
fn defines(text: &str) -> Vec<&'static str> {
    SHARED
        .iter()
        .copied()
        .filter(|name| {
            text.lines().any(|l| {
                let l = l.trim_start();
                match l.strip_prefix("function ") {
                    Some(f) => f.trim_start().strip_prefix(name).is_some_and(|rest| {
                        rest.is_empty() || rest.starts_with(|c: char| " ({".contains(c))
                    }),
                    None => l
                        .strip_prefix(name)
                        .is_some_and(|rest| rest.trim_start().starts_with("()")),
                }
            })
        })
        .collect()
}

#[test]
fn every_script_takes_log_die_and_need_tools_from_common_sh() {
    let repo = repo();
    let mut copies = Vec::new();
    for path in scripts() {
        let rel = path
            .strip_prefix(&repo)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "scripts/lib/common.sh" {
            continue;
        }
        let names = defines(&fs::read_to_string(&path).unwrap());
        match OWN_COPIES.iter().find(|(p, _)| *p == rel) {
            Some(_) => assert!(
                !names.is_empty(),
                "{rel} no longer defines its own {SHARED:?}: drop it from OWN_COPIES"
            ),
            None if !names.is_empty() => copies.push(format!("{rel}: {}", names.join(", "))),
            None => {}
        }
    }
    assert!(
        copies.is_empty(),
        "these scripts define their own copies; source scripts/lib/common.sh instead:\n{}",
        copies.join("\n")
    );
    let common = fs::read_to_string(repo.join("scripts/lib/common.sh")).unwrap();
    assert_eq!(defines(&common), SHARED, "scripts/lib/common.sh");
}

#[test]
fn the_scanner_sees_definitions_and_ignores_calls() {
    assert_eq!(defines("log() { printf x; }\n"), ["log"]);
    assert_eq!(defines("    die () {\n"), ["die"]);
    assert_eq!(defines("function need_tools {\n"), ["need_tools"]);
    assert_eq!(defines("function need_tools() {\n"), ["need_tools"]);
    assert_eq!(defines("function need_toolsets {\n"), Vec::<&str>::new());
    assert_eq!(
        defines("log \"die() is shared\"\nkn_log() {\n"),
        Vec::<&str>::new()
    );
}

/// A usage error in each script: (script, arguments, the line it must print on stderr).
const USAGE_ERRORS: &[(&str, &[&str], &str)] = &[
    (
        "scripts/build-deb.sh",
        &["--bogus"],
        "build-deb: error: unknown argument '--bogus'",
    ),
    (
        "scripts/build-payload.sh",
        &["--bogus"],
        "build-payload: error: unknown argument '--bogus' (see --help)",
    ),
    (
        "scripts/build-probes.sh",
        &["--bogus"],
        "build-probes: error: unknown argument '--bogus' (see --help)",
    ),
    (
        "scripts/build-rc9.sh",
        &["--out"],
        "build-rc9: error: --out needs a value (see --help)",
    ),
    (
        "scripts/check-reproducible.sh",
        &["--bogus"],
        "check-reproducible: error: unknown argument '--bogus' (try --help)",
    ),
    (
        "scripts/install-deps.sh",
        &["--bogus"],
        "install-deps: error: unknown argument '--bogus' (try --help)",
    ),
    (
        "scripts/testbed-root.sh",
        &["--bogus"],
        "testbed-root: error: unknown argument '--bogus' (try --help)",
    ),
    (
        "scripts/lib/kubelet-breaks.sh",
        &[],
        "kubelet-breaks: error: usage: kubelet-breaks.sh VERSION [DEB]",
    ),
    (
        "tests/e2e/run.sh",
        &["--bogus"],
        "e2e: error: unknown argument '--bogus' (try --help)",
    ),
    (
        "tests/e2e/qemu.sh",
        &["--bogus"],
        "e2e: qemu: error: unknown argument '--bogus' (try --help)",
    ),
    (
        "tests/e2e/qemu.sh",
        &["--timeout", "soon", "x.deb"],
        "e2e: qemu: error: --timeout 'soon' is not a number of seconds",
    ),
    (
        "tests/e2e/arm64.sh",
        &["a.deb", "b.deb"],
        "e2e: arm64: error: more than one .deb given (try --help)",
    ),
    (
        "tests/e2e/build-kubelet-debs.sh",
        &["--bogus"],
        "e2e-kubelet: error: unknown argument '--bogus' (see --help)",
    ),
    (
        "tests/e2e/make-variants.sh",
        &[],
        "e2e-variants: error: usage:",
    ),
];

#[test]
fn usage_errors_name_the_script_and_exit_2() {
    for (script, args, want) in USAGE_ERRORS {
        let out = run(Command::new(repo().join(script)).args(*args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{script} {args:?}: exit status\n{stderr}"
        );
        assert!(
            stderr.lines().any(|l| l.starts_with(want)),
            "{script} {args:?}: no line starting {want:?} on stderr:\n{stderr}"
        );
    }
}

/// `need_tools` as a script calls it, in bash with common.sh sourced.
fn need_tools(args: &str) -> (Option<i32>, String) {
    let common = repo().join("scripts/lib/common.sh");
    let out = run(Command::new("bash").arg("-c").arg(format!(
        "set -euo pipefail; KN_PROG=probe; . '{}'; need_tools {args}; echo reached",
        common.display()
    )));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), all)
}

#[test]
fn need_tools_names_every_missing_tool_and_the_fix() {
    let (code, out) = need_tools("sh bash");
    assert_eq!((code, out.as_str()), (Some(0), "reached\n"));

    let (code, out) = need_tools("sh no-such-tool-a no-such-tool-b");
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(
        out,
        "probe: error: 'no-such-tool-a' 'no-such-tool-b' not found (run scripts/install-deps.sh)\n"
    );

    let (code, out) = need_tools("no-such-tool-a:pkg-a/bookworm-backports sh:dash");
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(
        out,
        "probe: error: 'no-such-tool-a' not found: apt-get install -y pkg-a/bookworm-backports \
         (or run scripts/install-deps.sh)\n"
    );
}
