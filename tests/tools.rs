//! `scripts/install-deps.sh` is the one list of what the build and the tests run: a fresh CI
//! machine has nothing else. This test reads every test, script and benchmark, finds the
//! host tools they call, and fails when a tool's package is neither installed by
//! install-deps nor part of every Debian system (Essential, or Priority required/important,
//! as dpkg's own database on this machine says).
//!
//! When it fails: add the package to `pkgs` in `scripts/install-deps.sh` (or, for a tool of
//! a new kind, a row to `TOOLS` below).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::repo;

/// (how a script calls it, the tool, its Debian package). The pattern is matched as a whole
/// word in shell; Rust is matched on `Command::new("tool")`.
const TOOLS: &[(&str, &str)] = &[
    ("piuparts", "piuparts"),
    ("lintian", "lintian"),
    ("shellcheck", "shellcheck"),
    ("systemd-nspawn", "systemd-container"),
    ("debootstrap", "debootstrap"),
    ("mmdebstrap", "mmdebstrap"),
    ("promtool", "prometheus"),
    ("strace", "strace"),
    ("jq", "jq"),
    ("grub-mkconfig", "grub-common"),
    ("grub-mkrelpath", "grub-common"),
    ("ansible-playbook", "ansible"),
    ("ansible", "ansible"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("qemu-aarch64-static", "qemu-user-static"),
    ("qemu-img", "qemu-utils"),
    ("apt-ftparchive", "apt-utils"),
    ("gpg", "gnupg"),
    ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    ("pkg-config", "pkg-config"),
    ("dpkg-architecture", "dpkg-dev"),
    ("dpkg-buildflags", "dpkg-dev"),
    ("dpkg-source", "dpkg-dev"),
    ("xz", "xz-utils"),
    ("file", "file"),
    ("ar", "binutils"),
    ("readelf", "binutils"),
    ("objdump", "binutils"),
    ("systemd-analyze", "systemd"),
    ("systemctl", "systemd"),
    ("journalctl", "systemd"),
    ("busctl", "systemd"),
    ("dpkg", "dpkg"),
    ("dpkg-deb", "dpkg"),
    ("dpkg-divert", "dpkg"),
    ("dpkg-query", "dpkg"),
    ("apt-get", "apt"),
    ("nsenter", "util-linux"),
    ("unshare", "util-linux"),
    ("setsid", "util-linux"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("mkfs.ext4", "e2fsprogs"),
    ("kill", "procps"),
    ("sh", "dash"),
    ("/bin/sh", "dash"),
    ("touch", "coreutils"),
    ("cp", "coreutils"),
    ("rm", "coreutils"),
    ("sha256sum", "coreutils"),
    ("timeout", "coreutils"),
    ("chroot", "coreutils"),
    ("tar", "tar"),
    ("gcc", "gcc"),
    ("git", "git"),
    ("python3", "python3"),
    ("ip", "iproute2"),
    ("/lib/systemd/systemd-binfmt", "systemd"),
    ("diffoscope", "diffoscope-minimal"),
    ("taskset", "util-linux"),
    ("dpkg-parsechangelog", "dpkg-dev"),
    ("/usr/bin/go", "golang-go"),
];

/// Tools that come with the Rust toolchain or are built by the project: not Debian's.
const NOT_DEBIAN: &[&str] = &["cargo", "rustup", "cargo-deb", "k8s-nokmem"];

/// The packages `scripts/install-deps.sh` installs (the `pkgs=(...)` and `bpo_pkgs=(...)`
/// arrays; `:arch` qualifiers dropped).
fn installed_by_deps() -> BTreeSet<String> {
    let text = fs::read_to_string(repo().join("scripts/install-deps.sh")).unwrap();
    let mut out = BTreeSet::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with("pkgs=(") || line.starts_with("bpo_pkgs=(") {
            inside = true;
        }
        if !inside {
            continue;
        }
        let body = line
            .trim_start_matches("bpo_pkgs=(")
            .trim_start_matches("pkgs=(");
        let closes = body.contains(')');
        for word in body.trim_end_matches(')').split_whitespace() {
            out.insert(word.split(':').next().unwrap().to_string());
        }
        if closes {
            inside = false;
        }
    }
    assert!(
        out.contains("lintian"),
        "could not read the package list in scripts/install-deps.sh (found {out:?})"
    );
    out
}

fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        if name == "fixtures" || name == "target" {
            continue;
        }
        if path.is_dir() {
            files_under(&path, keep, out);
        } else if keep(&path) {
            out.push(path);
        }
    }
}

fn is_shell(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "sh")
        || fs::read(path)
            .is_ok_and(|b| b.starts_with(b"#!/bin/sh") || b.starts_with(b"#!/usr/bin/env bash"))
}

/// Whole-word occurrences of `word` in shell code (comments dropped).
fn shell_calls(text: &str, word: &str) -> bool {
    text.lines()
        .map(|l| l.split(" #").next().unwrap_or(""))
        .filter(|l| !l.trim_start().starts_with('#'))
        .any(|l| {
            l.match_indices(word).any(|(i, _)| {
                let before = l[..i].chars().next_back();
                let after = l[i + word.len()..].chars().next();
                let boundary = |c: Option<char>| {
                    !c.is_some_and(|c| c.is_alphanumeric() || "-_./$".contains(c))
                };
                // a call: at a command position (line start, after `|`, `(`, `;`, `&&`,
                // a keyword, `command -v`, `exec`, `time`)
                boundary(before) && boundary(after) && {
                    let head = l[..i].trim_end();
                    let last = head.rsplit(char::is_whitespace).next().unwrap_or("");
                    head.is_empty()
                        || head.ends_with(['|', '(', ';', '&', '{', '!', '`'])
                        || head.ends_with("command -v")
                        || [
                            "if", "then", "do", "else", "elif", "while", "until", "exec", "time",
                            "env", "sudo", "nice", "ionice",
                        ]
                        .contains(&last)
                }
            })
        })
}

/// The package's state on this machine: `Essential Priority` as dpkg records it.
fn base_package(pkg: &str) -> bool {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Essential} ${Priority}", pkg])
        .output()
        .expect("failed to start dpkg-query");
    let text = String::from_utf8_lossy(&out.stdout);
    text.starts_with("yes") || text.contains("required") || text.contains("important")
}

#[test]
fn every_tool_the_tests_call_is_installed_by_install_deps() {
    let deps = installed_by_deps();
    let top = repo();
    let mut problems = Vec::new();

    // Rust: every Command::new("…") literal names a known tool.
    let mut rust = Vec::new();
    for dir in ["src", "tests"] {
        files_under(
            &top.join(dir),
            &|p| p.extension().is_some_and(|e| e == "rs") && !p.ends_with("tests/tools.rs"),
            &mut rust,
        );
    }
    let mut called: BTreeSet<(String, String)> = BTreeSet::new();
    for file in &rust {
        let text = fs::read_to_string(file).unwrap();
        for piece in text.split("Command::new(\"").skip(1) {
            let Some(tool) = piece.split('"').next() else {
                continue;
            };
            if NOT_DEBIAN.contains(&tool) {
                continue;
            }
            match TOOLS.iter().find(|(t, _)| *t == tool) {
                Some((_, pkg)) => {
                    called.insert((tool.to_string(), pkg.to_string()));
                }
                None => problems.push(format!(
                    "{} calls `{tool}`, which tests/tools.rs does not know: add a row \
                     (tool, Debian package) to TOOLS",
                    file.strip_prefix(&top).unwrap_or(file).display()
                )),
            }
        }
    }

    // Shell: scripts, test and bench scripts, CI.
    let mut shell = Vec::new();
    for dir in ["scripts", "tests", "benches", ".ci"] {
        files_under(&top.join(dir), &is_shell, &mut shell);
    }
    for file in &shell {
        let text = fs::read_to_string(file).unwrap();
        for (tool, pkg) in TOOLS {
            if shell_calls(&text, tool) {
                called.insert((tool.to_string(), pkg.to_string()));
            }
        }
    }

    for (tool, pkg) in &called {
        if !deps.contains(pkg) && !base_package(pkg) {
            problems.push(format!(
                "`{tool}` (package {pkg}) is called by a test or script, but scripts/install-deps.sh \
                 does not install {pkg} and it is not part of every Debian system: add {pkg} to \
                 `pkgs` in scripts/install-deps.sh"
            ));
        }
    }
    assert!(
        called.iter().any(|(t, _)| t == "piuparts"),
        "the scan found no call of piuparts (tests/piuparts.rs): the scanner is broken"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_sees_calls_and_ignores_prose() {
    let cases = [
        ("piuparts --foo", "piuparts", true),
        ("  out=$(jq -r .x f)", "jq", true),
        ("a | jq .", "jq", true),
        ("command -v grub-mkconfig >/dev/null", "grub-mkconfig", true),
        ("# piuparts is Debian's judge", "piuparts", false),
        ("echo 'see the jq manual'", "jq", false),
        ("x=/usr/bin/jq", "jq", false),
        ("if strace -f x; then", "strace", true),
    ];
    for (line, tool, want) in cases {
        assert_eq!(shell_calls(line, tool), want, "case {line:?} / {tool}");
    }
}
