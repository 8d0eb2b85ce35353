//! A fake node root for the swap tests: a temp dir with dpkg's admin dir (empty `status` and
//! `diversions`), original runc/kubelet "binaries" (small files), the payload in
//! /usr/lib/k8s-nokmem with a MANIFEST that matches it, and helpers to run the helper with
//! `--root`, list diversions with the real `dpkg-divert --root`, and snapshot the tree.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

pub const ORIG_KUBELET: &[u8] = b"#!/bin/sh\necho original kubelet v1.20.2\n";
pub const ORIG_RUNC: &[u8] = b"#!/bin/sh\necho original runc 1.0.0-rc92\n";
pub const PAYLOAD_KUBELET: &[u8] = b"#!/bin/sh\necho nokmem kubelet v1.20.2\n";
pub const PAYLOAD_RUNC: &[u8] = b"#!/bin/sh\necho nokmem runc 1.1.5\n";

/// Paths left out of snapshots: the helper's own state dir (lock, journal, state), the
/// backup dpkg-divert writes next to its database, and dpkg's frontend lock a hand-run
/// takes (an empty file, created as dpkg creates it).
pub const NOT_SNAPSHOTTED: [&str; 3] = [
    "var/lib/k8s-nokmem",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/lock-frontend",
];

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a snapshot records for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, sha256: String },
    Symlink { target: PathBuf },
}

pub struct NodeRoot {
    dir: Option<tempfile::TempDir>,
    pub path: PathBuf,
}

impl NodeRoot {
    /// An empty root with only dpkg's admin dir and the payload.
    pub fn bare() -> NodeRoot {
        let dir = tempfile::Builder::new()
            .prefix("k8s-nokmem-node.")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().to_path_buf();
        let node = NodeRoot {
            dir: Some(dir),
            path,
        };
        for d in ["var/lib/dpkg/info", "usr/bin", "usr/sbin", "usr/local/bin"] {
            fs::create_dir_all(node.abs(d)).unwrap();
        }
        node.write("var/lib/dpkg/status", b"", 0o644);
        node.write("var/lib/dpkg/diversions", b"", 0o644);
        node.set_payload(PAYLOAD_RUNC, PAYLOAD_KUBELET, "1.20.2");
        node
    }

    /// The usual node: kubelet in /usr/bin, runc in /usr/sbin (Debian's docker.io layout).
    pub fn new() -> NodeRoot {
        let node = NodeRoot::bare();
        node.write("usr/bin/kubelet", ORIG_KUBELET, 0o755);
        node.write("usr/sbin/runc", ORIG_RUNC, 0o755);
        node
    }

    /// `rel` (relative to the root) as a host path.
    pub fn abs(&self, rel: &str) -> PathBuf {
        self.path.join(rel.trim_start_matches('/'))
    }

    pub fn write(&self, rel: &str, bytes: &[u8], mode: u32) {
        let p = self.abs(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.abs(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.abs(rel)).is_ok()
    }

    /// Write the payload binaries and a MANIFEST that matches them.
    pub fn set_payload(&self, runc: &[u8], kubelet: &[u8], kubelet_version: &str) {
        self.write("usr/lib/k8s-nokmem/runc", runc, 0o755);
        self.write("usr/lib/k8s-nokmem/kubelet", kubelet, 0o755);
        let manifest = format!(
            "; test payload\n[payload]\narch = amd64\nbuilt = 2026-11-28T00:00:00Z\n\n\
             [runc]\nfile = runc\nversion = 1.1.5\nsource = test\ngo = go1.19.8\n\
             tags = seccomp nokmem\narch = amd64\nsize = {}\nsha256 = {}\n\n\
             [kubelet]\nfile = kubelet\nversion = {kubelet_version}\nsource = test\ngo = go1.19.8\n\
             tags = selinux notest nokmem\narch = amd64\nsize = {}\nsha256 = {}\n",
            runc.len(),
            sha256(runc),
            kubelet.len(),
            sha256(kubelet)
        );
        self.write("usr/lib/k8s-nokmem/MANIFEST", manifest.as_bytes(), 0o644);
    }

    /// Register an installed package in dpkg's status file that ships `files`.
    pub fn dpkg_package(&self, name: &str, version: &str, files: &[&str]) {
        let mut status = String::from_utf8(self.read("var/lib/dpkg/status")).unwrap();
        status.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: misc\n\
             Architecture: amd64\nVersion: {version}\nMaintainer: t <t@example.org>\nDescription: t\n\n"
        ));
        self.write("var/lib/dpkg/status", status.as_bytes(), 0o644);
        let mut list = String::from("/.\n");
        for f in files {
            list.push_str(f);
            list.push('\n');
        }
        self.write(
            &format!("var/lib/dpkg/info/{name}.list"),
            list.as_bytes(),
            0o644,
        );
    }

    /// The helper with `--root` and a clean environment for the variables it reads.
    pub fn helper(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_k8s-nokmem"));
        cmd.args(args)
            .arg("--root")
            .arg(&self.path)
            .env_remove("RUST_LOG")
            .env_remove("DPKG_ROOT")
            .env_remove("K8S_NOKMEM_FAILPOINT")
            .env_remove("K8S_NOKMEM_LOG_PREFIX")
            .env_remove("JOURNAL_STREAM");
        cmd
    }

    /// Run the helper with `K8S_NOKMEM_FAILPOINT=<failpoint>` armed (`3:error`,
    /// `undivert:abort`).
    pub fn run_with_failpoint(&self, args: &[&str], failpoint: &str) -> Output {
        let mut cmd = self.helper(args);
        cmd.env("K8S_NOKMEM_FAILPOINT", failpoint);
        super::run(&mut cmd)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.helper(args);
        super::run(&mut cmd)
    }

    /// Run the helper; it must exit 0. Returns stderr (the log).
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "k8s-nokmem {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `dpkg-divert --root R --list`, sorted lines.
    pub fn diversions(&self) -> Vec<String> {
        let out = super::ok(
            Command::new("dpkg-divert")
                .env("LC_ALL", "C")
                .arg("--root")
                .arg(&self.path)
                .arg("--list"),
        );
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    /// `dpkg-divert --root R --package P --add --rename --divert TO PATH`.
    pub fn divert_as(&self, package: &str, path: &str, to: &str) {
        super::ok(
            Command::new("dpkg-divert")
                .arg("--root")
                .arg(&self.path)
                .args([
                    "--package",
                    package,
                    "--add",
                    "--rename",
                    "--divert",
                    to,
                    path,
                ]),
        );
    }

    /// `sh debian/prerm remove` on the node (DPKG_ROOT), with `PATH` holding only the tools
    /// it uses, and the helper when `with_helper`.
    pub fn prerm_remove(&self, with_helper: bool) -> Output {
        let bin = tempfile::tempdir().unwrap();
        for tool in ["dpkg-divert", "cmp", "ln", "rm", "date"] {
            let real = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.exists())
                .unwrap_or_else(|| {
                    panic!("{tool} not found: apt-get install dpkg diffutils coreutils")
                });
            std::os::unix::fs::symlink(real, bin.path().join(tool)).unwrap();
        }
        if with_helper {
            std::os::unix::fs::symlink(
                env!("CARGO_BIN_EXE_k8s-nokmem"),
                bin.path().join("k8s-nokmem"),
            )
            .unwrap();
        }
        let prerm = super::repo().join("debian/prerm");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg(prerm)
            .arg("remove")
            .env_clear()
            .env("PATH", bin.path())
            .env("DPKG_ROOT", &self.path);
        super::run(&mut cmd)
    }

    /// Every path under `dir`, sorted (nothing left out).
    pub fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if fs::symlink_metadata(&path).unwrap().is_dir() {
                    todo.push(path.clone());
                }
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
        out.sort();
        out
    }

    /// Every path under the root (minus [`NOT_SNAPSHOTTED`]) with its kind, mode and sha256.
    pub fn snapshot(&self) -> BTreeMap<String, Entry> {
        let mut out = BTreeMap::new();
        walk(&self.path, &self.path, &mut out);
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if NOT_SNAPSHOTTED.iter().any(|n| rel == *n) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o7777;
        let e = if meta.file_type().is_symlink() {
            Entry::Symlink {
                target: fs::read_link(&path).unwrap(),
            }
        } else if meta.is_dir() {
            walk(root, &path, out);
            Entry::Dir { mode }
        } else {
            Entry::File {
                mode,
                sha256: sha256(&fs::read(&path).unwrap()),
            }
        };
        out.insert(rel, e);
    }
}

/// A run's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Two snapshots are equal, else fail with their difference.
pub fn assert_same(before: &BTreeMap<String, Entry>, after: &BTreeMap<String, Entry>, what: &str) {
    assert!(
        before == after,
        "{what}: tree changed:\n{}",
        diff(before, after)
    );
}

/// Lines in which two snapshots differ, for assertion messages.
pub fn diff(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>) -> String {
    let mut lines = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => lines.push(format!("- {k} {v:?}")),
            Some(w) if w != v => lines.push(format!("~ {k} {v:?} -> {w:?}")),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            lines.push(format!("+ {k} {v:?}"));
        }
    }
    lines.join("\n")
}

impl Drop for NodeRoot {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            super::keep_tmp(dir);
        }
    }
}
