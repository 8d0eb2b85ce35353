//! `scripts/install-deps.sh` is the one list of what the build and the tests run: a fresh CI
//! machine has nothing else. This test reads every test, script and benchmark, finds the
//! host tools they call, and fails when a tool's package is neither installed by
//! install-deps nor part of every Debian system (Essential, or Priority required/important,
//! as dpkg's own database on this machine says).
//!
//! When it fails: add the package to `pkgs` in `scripts/install-deps.sh` (or, for a tool of
//! a new kind, a row to `TOOLS` below).
//!
//! A tool's own run-time needs count too: install-deps installs with
//! `--no-install-recommends`, so every Recommends of a package it installs is either installed
//! by it as well or named in `RECOMMENDS_LEFT_OUT` with the reason the build and the tests do
//! without it (mmdebstrap recommends arch-test, without which a foreign-architecture build
//! stops with "E: install arch-test for foreign architecture support").

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
    ("man", "man-db"),
    ("bash", "bash"),
    ("/usr/bin/python3", "python3"),
    ("grub-mkconfig", "grub-common"),
    ("grub-mkrelpath", "grub-common"),
    ("ansible-playbook", "ansible"),
    ("ansible", "ansible"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("qemu-aarch64-static", "qemu-user-static"),
    ("qemu-img", "qemu-utils"),
    ("apt-ftparchive", "apt-utils"),
    ("reprepro", "reprepro"),
    ("gpg", "gnupg"),
    ("gpgconf", "gpgconf"),
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
    ("dbus-daemon", "dbus"),
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
    ("mkfifo", "coreutils"),
    ("cp", "coreutils"),
    ("rm", "coreutils"),
    ("sha256sum", "coreutils"),
    ("timeout", "coreutils"),
    ("chroot", "coreutils"),
    ("tar", "tar"),
    ("gcc", "gcc"),
    ("git", "git"),
    ("python3", "python3"),
    ("/usr/bin/python3", "python3"),
    ("ip", "iproute2"),
    ("/lib/systemd/systemd-binfmt", "systemd"),
    ("diffoscope", "diffoscope-minimal"),
    ("taskset", "util-linux"),
    ("dpkg-parsechangelog", "dpkg-dev"),
    ("/usr/bin/go", "golang-go"),
];

/// (package, what it recommends, why the build and the tests do without it). install-deps
/// installs with `--no-install-recommends`; every other Recommends is installed by it.
const RECOMMENDS_LEFT_OUT: &[(&str, &str, &str)] = &[
    ("git", "ca-certificates", "git only reads local trees (no remote)"),
    ("git", "patch", "git apply/am are not used"),
    ("git", "less", "no pager: git runs non-interactively"),
    ("git", "ssh-client", "no remote"),
    ("dpkg-dev", "build-essential", "no Debian package is built from source (dpkg-source -x only)"),
    ("dpkg-dev", "fakeroot", "dpkg-source -x unpacks as root"),
    ("dpkg-dev", "libalgorithm-merge-perl", "dpkg-source merges nothing on -x"),
    ("systemd", "default-dbus-system-bus", "the host's systemd is not PID 1; the tests' systems run in nspawn/qemu roots with their own dbus"),
    ("systemd", "systemd-timesyncd", "the host's systemd is not PID 1"),
    ("piuparts", "adequate", "tests/piuparts.rs runs piuparts without --adequate"),
    ("systemd-container", "libnss-mymachines", "containers are reached by path and nsenter, not by host name"),
    ("prometheus", "prometheus-node-exporter", "only promtool is used (rules and textfile checks)"),
    ("grub-common", "os-prober", "tests/grub.rs runs grub-mkconfig with only 00_header and 10_linux"),
    ("ansible", "python3-argcomplete", "shell completion only"),
    ("ansible", "python3-cryptography", "no vault, no SSH key handling: local connection"),
    ("ansible", "python3-jmespath", "the rollout play uses no json_query"),
    ("ansible", "python3-kerberos", "no WinRM/Kerberos"),
    ("ansible", "python3-libcloud", "no cloud inventory"),
    ("ansible", "python3-selinux", "no SELinux on the test hosts"),
    ("ansible", "python3-winrm", "no Windows hosts"),
    ("ansible", "python3-xmltodict", "no XML filters"),
    ("qemu-system-x86", "ovmf", "direct -kernel boots with SeaBIOS (a Depends), no UEFI"),
    ("qemu-system-x86", "qemu-system-gui", "headless (-nographic)"),
    ("qemu-system-x86", "qemu-system-modules-spice", "headless (-nographic)"),
    ("qemu-system-x86", "qemu-system-modules-opengl", "headless (-nographic)"),
    ("qemu-system-x86", "qemu-block-extra", "local qcow2 and raw images only"),
    ("qemu-system-arm", "ipxe-qemu", "no network boot: direct -kernel"),
    ("qemu-system-arm", "seabios", "x86 firmware; the arm64 guest boots with -kernel on -M virt"),
    ("qemu-system-arm", "qemu-efi-aarch64", "no UEFI: direct -kernel on -M virt"),
    ("qemu-system-arm", "qemu-efi-arm", "no 32-bit arm guest"),
    ("qemu-system-arm", "qemu-system-gui", "headless (-nographic)"),
    ("qemu-system-arm", "qemu-system-modules-spice", "headless (-nographic)"),
    ("qemu-system-arm", "qemu-system-modules-opengl", "headless (-nographic)"),
    ("qemu-system-arm", "qemu-block-extra", "local qcow2 and raw images only"),
    ("qemu-utils", "qemu-block-extra", "local qcow2 and raw images only"),
    ("mmdebstrap", "libdistro-info-perl", "the suite is named by its codename (bookworm)"),
    ("mmdebstrap", "uidmap", "mmdebstrap runs as root (root mode), not unshare mode"),
    // `*`: every Recommends of that package
    ("diffoscope-minimal", "*", "check-reproducible.sh compares .debs: ar, tar, xz, ELF and text, which diffoscope-minimal's Depends and binutils cover; the other format tools (apk, PDF, images, ...) are for formats never compared"),
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
            // a program's name or path, not a string that merely mentions `Command::new("`
            let is_name = !tool.is_empty()
                && tool
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._/+-".contains(c));
            if !is_name || NOT_DEBIAN.contains(&tool) {
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

/// A dpkg field of an installed package (`Recommends`, `Depends`, ...), or None when dpkg does
/// not know the package.
fn installed_field(pkg: &str, field: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", &format!("-f=${{{field}}}"), pkg])
        .output()
        .expect("failed to start dpkg-query");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A dependency field split into its groups of alternatives, each a bare package name
/// (version constraints and `:any` qualifiers dropped).
fn relation_groups(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|group| {
            group
                .split('|')
                .map(|alt| {
                    let name = alt.split('(').next().unwrap_or("").trim();
                    name.split(':').next().unwrap_or("").to_string()
                })
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

#[test]
fn every_recommends_of_what_install_deps_installs_is_installed_or_left_out_for_a_reason() {
    let deps = installed_by_deps();
    let mut problems = Vec::new();
    // What install-deps brings in besides its list: the Depends of what it installs.
    let mut depended: BTreeSet<String> = BTreeSet::new();
    let mut recommends = Vec::new();
    for pkg in &deps {
        let Some(rec) = installed_field(pkg, "Recommends") else {
            problems.push(format!(
                "{pkg} (scripts/install-deps.sh) is not installed on this machine: run \
                 scripts/install-deps.sh"
            ));
            continue;
        };
        for field in ["Depends", "Pre-Depends"] {
            for group in relation_groups(&installed_field(pkg, field).unwrap_or_default()) {
                depended.extend(group);
            }
        }
        recommends.push((pkg.clone(), relation_groups(&rec)));
    }
    let left_out = |pkg: &str, alt: &str| {
        RECOMMENDS_LEFT_OUT
            .iter()
            .any(|(p, r, _)| *p == pkg && (*r == alt || *r == "*"))
    };
    for (pkg, groups) in &recommends {
        for group in groups {
            let met = group.iter().any(|alt| {
                deps.contains(alt)
                    || depended.contains(alt)
                    || base_package(alt)
                    || left_out(pkg, alt)
            });
            if !met {
                problems.push(format!(
                    "{pkg} recommends {}, which scripts/install-deps.sh leaves out (it installs \
                     with --no-install-recommends): add it to `pkgs` in scripts/install-deps.sh \
                     when a tool needs it at run time (as mmdebstrap needs arch-test for a \
                     foreign architecture), else add a row (package, recommends, why) to \
                     RECOMMENDS_LEFT_OUT in tests/tools.rs",
                    group.join(" | ")
                ));
            }
        }
    }
    // The table stays true: each row names a package install-deps installs and a package it
    // still recommends.
    for (pkg, alt, _) in RECOMMENDS_LEFT_OUT {
        let still = recommends.iter().any(|(p, groups)| {
            p == pkg
                && groups
                    .iter()
                    .any(|g| g.iter().any(|a| a == alt || *alt == "*"))
        });
        if !still {
            problems.push(format!(
                "RECOMMENDS_LEFT_OUT in tests/tools.rs names ({pkg}, {alt}), but {pkg} is not \
                 installed by scripts/install-deps.sh or no longer recommends {alt}: drop the row"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn relation_fields_split_into_groups_of_bare_names() {
    assert_eq!(
        relation_groups("arch-test (>= 0.11~), gnupg | sq, perl:any"),
        vec![
            vec!["arch-test".to_string()],
            vec!["gnupg".to_string(), "sq".to_string()],
            vec!["perl".to_string()],
        ]
    );
    assert!(relation_groups("").is_empty());
}
