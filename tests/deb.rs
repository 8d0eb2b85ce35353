//! The built .debs (scripts/build-deb.sh -> target/debian/) checked as Debian and a user
//! would: lintian, contents and modes, the helper static and running on both arches,
//! systemd-analyze on the units, shellcheck on the maintainer, build and e2e scripts, and
//! the arm64 .deb installed and removed with dpkg in an arm64 Debian root under qemu-user;
//! and, on a fake node root with the real dpkg-divert, odd paths in dpkg's diversions and
//! the maintainer scripts' own paths (spaces, a prerm without the helper).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::node::{self, NodeRoot};
use common::{artifact, deb, ok, run};

const ARCHES: [&str; 2] = ["amd64", "arm64"];

fn extract(deb: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir.path()));
    ok(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb)
        .arg(dir.path().join("DEBIAN")));
    dir
}

#[test]
fn lintian_finds_no_errors_or_warnings() {
    let debs: Vec<PathBuf> = ARCHES.iter().filter_map(|a| deb(a)).collect();
    if debs.is_empty() {
        return;
    }
    let out = run(Command::new("lintian")
        .args([
            "--pedantic",
            "--info",
            "--allow-root",
            "--no-tag-display-limit",
        ])
        .args(&debs));
    let text = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(
        bad.is_empty(),
        "lintian errors/warnings (fix them, or override with a reason in debian/k8s-nokmem.lintian-overrides):\n{}",
        bad.join("\n")
    );
}

/// path -> (mode, owner) from `dpkg-deb -c`.
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    ok(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.get(5)?.trim_start_matches('.').to_string();
            Some((path, (f[0].to_string(), f[1].to_string())))
        })
        .collect()
}

#[test]
fn contents_modes_owner_and_compression() {
    for arch in ARCHES {
        let Some(deb) = deb(arch) else { continue };
        let files = contents(&deb);
        let want = [
            ("/usr/sbin/k8s-nokmem", "-rwxr-xr-x"),
            ("/usr/lib/k8s-nokmem/runc", "-rwxr-xr-x"),
            ("/usr/lib/k8s-nokmem/kubelet", "-rwxr-xr-x"),
            ("/usr/lib/k8s-nokmem/MANIFEST", "-rw-r--r--"),
            ("/etc/k8s-nokmem/k8s-nokmem.conf", "-rw-r--r--"),
            (
                "/lib/systemd/system/k8s-nokmem-verify.service",
                "-rw-r--r--",
            ),
            ("/lib/systemd/system/k8s-nokmem-verify.timer", "-rw-r--r--"),
            (
                "/lib/systemd/system/k8s-nokmem-recover.service",
                "-rw-r--r--",
            ),
            ("/usr/share/man/man8/k8s-nokmem.8.gz", "-rw-r--r--"),
            ("/usr/share/doc/k8s-nokmem/README", "-rw-r--r--"),
            (
                "/usr/share/bash-completion/completions/k8s-nokmem",
                "-rw-r--r--",
            ),
            ("/usr/share/doc/k8s-nokmem/copyright", "-rw-r--r--"),
            (
                "/usr/share/doc/k8s-nokmem/changelog.Debian.gz",
                "-rw-r--r--",
            ),
        ];
        for (path, mode) in want {
            let got = files.get(path);
            assert_eq!(
                got.map(|(m, _)| m.as_str()),
                Some(mode),
                "{arch}: {path} in {}",
                deb.display()
            );
        }
        for (path, (_, owner)) in &files {
            assert_eq!(owner, "0/0", "{arch}: {path} is not root:root");
        }
        assert!(
            !files.keys().any(|p| p.starts_with("/usr/lib/systemd/")),
            "{arch}: units must be in /lib/systemd/system for Ubuntu 16.04"
        );

        let members = ok(Command::new("ar").arg("t").arg(&deb));
        assert!(
            members.lines().any(|m| m == "data.tar.xz"),
            "{arch}: {members}"
        );
        assert!(
            members.lines().any(|m| m == "control.tar.xz"),
            "{arch}: {members}"
        );

        let field = |name: &str| {
            ok(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg(name))
                .trim()
                .to_string()
        };
        assert_eq!(field("Architecture"), arch);
        assert_eq!(field("Package"), "k8s-nokmem");
        let version = field("Version");
        assert!(
            version.contains("+nokmem") && version.ends_with("-1"),
            "{arch}: version '{version}' should name the kubelet, e.g. 1.20.2+nokmem0.1.0-1"
        );
        let depends = field("Depends");
        assert!(
            !depends.contains("libc6"),
            "{arch}: static: no libc dependency: {depends}"
        );
        assert!(
            !depends.contains("dpkg (>="),
            "{arch}: 16.04 has dpkg 1.18.4: {depends}"
        );

        // Built-Using (Debian Policy 7.8): the Go toolchain and the sources compiled in.
        let built_using = field("Built-Using");
        for src in ["golang-1.", "kubernetes (= ", "runc (= "] {
            assert!(
                built_using.split(", ").any(|b| b.starts_with(src)),
                "{arch}: Built-Using lacks {src}: '{built_using}'"
            );
        }

        let x = extract(&deb);
        // Breaks on the kubelet packages of every other minor than the payload's.
        let manifest = fs::read_to_string(x.path().join("usr/lib/k8s-nokmem/MANIFEST")).unwrap();
        let m = k8s_nokmem::manifest::Manifest::parse(&manifest, "MANIFEST").unwrap();
        let kubelet = m
            .binaries
            .iter()
            .find(|b| b.name == "kubelet")
            .map(|b| b.version.clone())
            .expect("MANIFEST names the kubelet");
        let want =
            ok(Command::new(common::repo().join("scripts/lib/kubelet-breaks.sh")).arg(&kubelet));
        assert_eq!(field("Breaks"), want.trim(), "{arch}: kubelet {kubelet}");
        // Each payload binary is what the shipped MANIFEST says (inspect's cross-check).
        let lib = x.path().join("usr/lib/k8s-nokmem");
        let inspected = run(Command::new(env!("CARGO_BIN_EXE_k8s-nokmem"))
            .arg("inspect")
            .arg(lib.join("runc"))
            .arg(lib.join("kubelet")));
        let text = String::from_utf8_lossy(&inspected.stdout);
        assert!(
            inspected.status.success()
                && text
                    .matches("]: matches: sha256 ok, go ok, tags ok")
                    .count()
                    == 2,
            "{arch}: inspect against the MANIFEST ({}):\n{text}{}",
            inspected.status,
            String::from_utf8_lossy(&inspected.stderr)
        );
        let conffiles = fs::read_to_string(x.path().join("DEBIAN/conffiles")).unwrap();
        assert_eq!(conffiles.trim(), "/etc/k8s-nokmem/k8s-nokmem.conf");
        // The payload recorded in the MANIFEST is what the package ships.
        let manifest = fs::read_to_string(x.path().join("usr/lib/k8s-nokmem/MANIFEST")).unwrap();
        let m = k8s_nokmem::manifest::Manifest::parse(&manifest, "MANIFEST").unwrap();
        assert_eq!(m.arch, arch);
        for bin in &m.binaries {
            let path = x.path().join("usr/lib/k8s-nokmem").join(&bin.file);
            assert_eq!(
                k8s_nokmem::fs::sha256_file(&path).unwrap(),
                bin.sha256,
                "{arch}: {} sha256 differs from its MANIFEST",
                bin.file
            );
            assert!(
                bin.tags.iter().any(|t| t == "nokmem"),
                "{arch}: {} tags {:?}",
                bin.file,
                bin.tags
            );
        }
    }
}

#[test]
fn helper_is_static_and_runs_on_both_arches() {
    for arch in ARCHES {
        let Some(deb) = deb(arch) else { continue };
        let x = extract(&deb);
        let bin = x.path().join("usr/sbin/k8s-nokmem");
        let file = ok(Command::new("file").arg("-b").arg(&bin));
        let machine = if arch == "amd64" {
            "x86-64"
        } else {
            "ARM aarch64"
        };
        assert!(file.contains(machine), "{arch}: {file}");
        assert!(
            file.contains("statically linked") || file.contains("static-pie linked"),
            "{arch}: helper must be static: {file}"
        );
        let mut cmd = if arch == "amd64" {
            Command::new(&bin)
        } else {
            let mut c = Command::new("qemu-aarch64-static");
            c.arg(&bin);
            c
        };
        let version = ok(cmd.arg("--version"));
        assert!(version.starts_with("k8s-nokmem "), "{arch}: {version}");
    }
}

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    let Some(deb) = deb("amd64") else { return };
    let x = extract(&deb);
    let units = x.path().join("lib/systemd/system");
    // The units' dependencies (sysinit.target, ...) come from this host's systemd, copied
    // beside ours so `--root` sees a whole system in which /usr/sbin/k8s-nokmem exists.
    fs::create_dir_all(x.path().join("usr/lib/systemd")).unwrap();
    ok(Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(x.path().join("usr/lib/systemd/")));
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", x.path().display()))
        .arg(units.join("k8s-nokmem-verify.service"))
        .arg(units.join("k8s-nokmem-verify.timer"))
        .arg(units.join("k8s-nokmem-recover.service"))
        .env("SYSTEMD_LOG_LEVEL", "notice")
        // Documentation=man:k8s-nokmem(8) must resolve to the package's own man page
        .env("MANPATH", x.path().join("usr/share/man")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only complaints about our own units count (the build host's other units are not ours).
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("k8s-nokmem"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{}",
        out.status,
        stderr
    );
}

#[test]
fn maintainer_and_build_scripts_pass_shellcheck() {
    let repo = common::repo();
    let mut files: Vec<PathBuf> = [
        "debian/postinst",
        "debian/prerm",
        "debian/postrm",
        ".ci/run",
    ]
    .iter()
    .map(|f| repo.join(f))
    .collect();
    for dir in ["scripts", "scripts/lib", "tests/e2e"] {
        for e in fs::read_dir(repo.join(dir)).unwrap().filter_map(Result::ok) {
            if e.path().extension().is_some_and(|x| x == "sh") {
                files.push(e.path());
            }
        }
    }
    let out = run(Command::new("shellcheck")
        .args(["-S", "warning", "-x"])
        .args(&files)
        .current_dir(&repo));
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Registers qemu-aarch64 with binfmt_misc for the test's lifetime (unless it already was),
/// so maintainer scripts in an arm64 chroot run under emulation.
struct Binfmt {
    registered_here: bool,
}

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
const BINFMT_ENTRY: &str = "/proc/sys/fs/binfmt_misc/qemu-aarch64";

impl Binfmt {
    fn ensure() -> Binfmt {
        if Path::new(BINFMT_ENTRY).exists() {
            return Binfmt {
                registered_here: false,
            };
        }
        if !Path::new(BINFMT_DIR).join("register").exists() {
            ok(Command::new("mount").args(["-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR]));
        }
        ok(Command::new("/lib/systemd/systemd-binfmt").arg("/usr/lib/binfmt.d/qemu-aarch64.conf"));
        assert!(
            Path::new(BINFMT_ENTRY).exists(),
            "qemu-aarch64 binfmt not registered"
        );
        Binfmt {
            registered_here: true,
        }
    }
}

impl Drop for Binfmt {
    fn drop(&mut self) {
        if self.registered_here {
            let _ = fs::write(BINFMT_ENTRY, "-1");
        }
    }
}

/// The arm64 .deb installs with `dpkg -i` in an arm64 Debian root (debootstrap, run under
/// qemu-user), its helper runs there, diverts the original kubelet, and `dpkg --purge`
/// restores it byte for byte and leaves nothing of ours.
#[test]
fn arm64_deb_installs_and_purges_in_an_arm64_root() {
    if !common::root_or_skip("installing into an arm64 chroot") {
        return;
    }
    let Some(deb) = deb("arm64") else { return };
    let cached = common::repo().join("scripts/testbed-root.sh");
    let base = ok(Command::new(&cached).args(["--arch", "arm64", "--print"]));
    let Some(base) = artifact(
        Path::new(base.trim()),
        "scripts/testbed-root.sh --arch arm64",
    ) else {
        return;
    };
    let _binfmt = Binfmt::ensure();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    ok(Command::new("cp").arg("-a").arg(&base).arg(&root));

    // An "original" kubelet owned by nobody, as a hand-installed one would be.
    let original = b"#!/bin/sh\necho original kubelet\n".to_vec();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("usr/bin/kubelet"), &original).unwrap();
    fs::copy(&deb, root.join("tmp/k8s-nokmem.deb")).unwrap();

    let chroot = |args: &[&str]| {
        let mut c = Command::new("chroot");
        c.arg(&root).args(args).env("LC_ALL", "C");
        c
    };
    // An administrator's diversion whose path `dpkg-divert --list` cannot split.
    let odd = "/srv/back to school/notes";
    fs::create_dir_all(root.join("srv/back to school")).unwrap();
    ok(&mut chroot(&["dpkg-divert", "--local", "--rename", odd]));
    let install = run(&mut chroot(&["dpkg", "-i", "/tmp/k8s-nokmem.deb"]));
    let log = String::from_utf8_lossy(&install.stderr).into_owned()
        + &String::from_utf8_lossy(&install.stdout);
    assert!(install.status.success(), "dpkg -i failed:\n{log}");

    let help = ok(&mut chroot(&["k8s-nokmem", "--help"]));
    assert!(help.contains("Usage: k8s-nokmem"), "{help}");
    let diversions = ok(&mut chroot(&["dpkg-divert", "--list", "k8s-nokmem"]));
    assert!(
        diversions
            .contains("diversion of /usr/bin/kubelet to /usr/bin/kubelet.distrib by k8s-nokmem"),
        "diversions after install:\n{diversions}\ninstall log:\n{log}"
    );
    assert_eq!(
        fs::read(root.join("usr/bin/kubelet.distrib")).unwrap(),
        original
    );
    assert_eq!(
        fs::read(root.join("usr/bin/kubelet")).unwrap(),
        fs::read(root.join("usr/lib/k8s-nokmem/kubelet")).unwrap(),
        "the payload kubelet is in place"
    );

    let purge = run(&mut chroot(&["dpkg", "--purge", "k8s-nokmem"]));
    assert!(
        purge.status.success(),
        "dpkg --purge failed:\n{}{}",
        String::from_utf8_lossy(&purge.stdout),
        String::from_utf8_lossy(&purge.stderr)
    );
    let left = ok(&mut chroot(&["dpkg-divert", "--list", "k8s-nokmem"]));
    assert!(
        left.trim().is_empty(),
        "diversions left after purge:\n{left}"
    );
    assert_eq!(
        fs::read(root.join("usr/bin/kubelet")).unwrap(),
        original,
        "original restored"
    );
    assert_eq!(
        ok(&mut chroot(&["dpkg-divert", "--listpackage", odd])).trim(),
        "LOCAL",
        "the administrator's diversion stays"
    );
    for gone in [
        "usr/bin/kubelet.distrib",
        "etc/k8s-nokmem",
        "var/lib/k8s-nokmem",
        "usr/lib/k8s-nokmem",
        "usr/sbin/k8s-nokmem",
    ] {
        assert!(
            !root.join(gone).exists(),
            "/{gone} still exists after purge"
        );
    }
    common::keep_tmp(tmp);
}

/// A local diversion whose path holds " to " and a target whose path holds a space, the way
/// an administrator may have them: install, status and remove work and leave the
/// administrator's diversion alone; remove gives back the identical tree.
#[test]
fn odd_paths_in_the_diversion_list_and_a_target_with_a_space_work() {
    let n = node_with_odd_paths();
    let before = n.snapshot();
    let local = "local diversion of /srv/back to school/notes to /srv/back to school/notes.distrib";
    let ours = "diversion of /opt/my bin/kubelet to /opt/my bin/kubelet.distrib by k8s-nokmem";

    n.ok(&["install"]);
    assert_eq!(n.read("opt/my bin/kubelet"), node::PAYLOAD_KUBELET);
    assert_eq!(n.read("opt/my bin/kubelet.distrib"), node::ORIG_KUBELET);
    assert_eq!(n.read("usr/sbin/runc"), node::PAYLOAD_RUNC);
    let diversions = n.diversions();
    assert!(
        diversions.iter().any(|d| d == local) && diversions.iter().any(|d| d == ours),
        "{diversions:?}"
    );
    n.ok(&["install"]);

    let status = n.run(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        status.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        text.contains("kubelet  /opt/my bin/kubelet: swapped") && text.contains(ours),
        "{text}"
    );

    // the verify unit's diversion check reads the same list
    let out = n.run(&["verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let check = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "diversions"))
        .unwrap_or_else(|| panic!("no diversions check: {report:#}"));
    assert_eq!(check["status"], "ok", "{check:#}");

    n.ok(&["remove"]);
    assert_eq!(n.diversions(), vec![local.to_string()]);
    let after = n.snapshot();
    assert!(
        before == after,
        "tree changed:\n{}",
        node::diff(&before, &after)
    );
}

/// A node with an administrator's diversion of `/srv/back to school/notes` and kubelet at
/// `/opt/my bin/kubelet`, not yet swapped.
fn node_with_odd_paths() -> NodeRoot {
    let n = NodeRoot::new();
    n.write("srv/back to school/notes", b"term plan\n", 0o644);
    ok(Command::new("dpkg-divert")
        .arg("--root")
        .arg(&n.path)
        .args(["--local", "--rename", "/srv/back to school/notes"]));
    n.write("opt/my bin/kubelet", node::ORIG_KUBELET, 0o755);
    n.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        b"[kubelet]\npath = /opt/my bin/kubelet\n",
        0o644,
    );
    n
}

/// `prerm remove` with the helper gone (deleted by hand), after an install or an upgrade
/// was killed half-way: the diversion of a path with spaces is undone, the staged copies
/// (`.NAME.k8s-nokmem-new`, also next to a path not diverted yet) and the previous payload
/// kept aside (`.NAME.k8s-nokmem-prev`) are deleted, the administrator's diversion stays,
/// and the tree is as before install.
#[test]
fn prerm_without_the_helper_handles_spaces_and_removes_staged_leftovers() {
    const NEW_KUBELET: &[u8] = b"#!/bin/sh\necho nokmem kubelet v1.20.3\n";
    // (what runs before the kill, the failpoint, a leftover it must leave)
    let cases = [
        (false, "place:abort", "opt/my bin/.kubelet.k8s-nokmem-new"),
        (true, "start:abort", "opt/my bin/.kubelet.k8s-nokmem-prev"),
        // staged, not diverted yet (the journal names the paths)
        (false, "stop:abort", "opt/my bin/.kubelet.k8s-nokmem-new"),
    ];
    for (upgrade, failpoint, leftover) in cases {
        let n = node_with_odd_paths();
        let pristine = n.snapshot();
        if upgrade {
            n.ok(&["install"]);
            n.set_payload(node::PAYLOAD_RUNC, NEW_KUBELET, "1.20.3");
        }
        let out = n.run_with_failpoint(&["install"], failpoint);
        assert!(!out.status.success(), "{failpoint}");
        assert!(n.exists(leftover), "{failpoint}: no {leftover} to clean up");

        let out = n.prerm_remove(false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{failpoint}: prerm failed: {err}");
        assert_eq!(
            n.diversions(),
            vec![
                "local diversion of /srv/back to school/notes to /srv/back to school/notes.distrib"
            ],
            "{failpoint}: {err}"
        );
        n.set_payload(node::PAYLOAD_RUNC, node::PAYLOAD_KUBELET, "1.20.2");
        let after = n.snapshot();
        assert!(
            pristine == after,
            "{failpoint}: tree changed:\n{}\nprerm said: {err}",
            node::diff(&pristine, &after)
        );
    }
}
