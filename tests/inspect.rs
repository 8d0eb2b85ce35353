//! `k8s-nokmem inspect` on real Go binaries built here with /usr/bin/go: a program whose
//! `.../libcontainer/cgroups/fs/kmem.go` writes `memory.kmem.limit_in_bytes` (as runc's
//! does), the same program built with `-tags nokmem` (its `kmem_disabled.go` instead),
//! and a hello world; for amd64 and arm64, stripped and not, statically and dynamically
//! linked. `go version -m` is the oracle for the Go version and the tags. These test the
//! parser; tests/probes.rs tests the real vendored runc code.
//!
//! The binaries are built once per source/Go version into `target/tmp/gobin-progs-<key>`
//! (a few seconds with a warm Go build cache). No Go => failure (skipped under
//! `K8S_NOKMEM_ALLOW_SKIP=1`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use k8s_nokmem::gobin::{self, Reason, Verdict};
use sha2::{Digest, Sha256};

const GO: &str = "/usr/bin/go";
const BIN: &str = env!("CARGO_BIN_EXE_k8s-nokmem");

const KMEM_GO: &str = r#"//go:build !nokmem
// +build !nokmem

package fs

import (
	"os"
	"path/filepath"
)

const cgroupKernelMemoryLimit = "memory.kmem.limit_in_bytes"

// EnableKernelMemoryAccounting writes 1 then -1 to the kmem limit, as runc's does.
//
//go:noinline
func EnableKernelMemoryAccounting(path string) error {
	for _, v := range []string{"1", "-1"} {
		if err := os.WriteFile(filepath.Join(path, cgroupKernelMemoryLimit), []byte(v), 0o644); err != nil {
			return err
		}
	}
	return nil
}
"#;

const KMEM_DISABLED_GO: &str = r#"//go:build nokmem
// +build nokmem

package fs

import "errors"

// EnableKernelMemoryAccounting does nothing, as runc's kmem_disabled.go.
//
//go:noinline
func EnableKernelMemoryAccounting(path string) error {
	if path == "" {
		return errors.New("empty cgroup path")
	}
	return nil
}
"#;

const PROG_MAIN_GO: &str = r#"package main

import (
	"fmt"
	"os"

	"example.com/runc/libcontainer/cgroups/fs"
)

func main() {
	if len(os.Args) > 1 {
		if err := fs.EnableKernelMemoryAccounting(os.Args[1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	fmt.Println("ok")
}
"#;

const HELLO_MAIN_GO: &str = r#"package main

import "fmt"

func main() { fmt.Println("hello") }
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prog {
    /// links kmem.go (no tags)
    Kmem,
    /// links kmem_disabled.go (-tags nokmem)
    Nokmem,
    /// no cgroup code at all
    Hello,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// static, with symbols
    Plain,
    /// static, -ldflags=-s -w
    Stripped,
    /// dynamic through gcc: -ldflags=-linkmode=external (cgo)
    External,
}

#[derive(Debug, Clone)]
struct Built {
    prog: Prog,
    arch: &'static str,
    link: Link,
    path: PathBuf,
}

const MATRIX: &[(Prog, &str, Link)] = &[
    (Prog::Kmem, "amd64", Link::Plain),
    (Prog::Kmem, "amd64", Link::Stripped),
    (Prog::Kmem, "amd64", Link::External),
    (Prog::Kmem, "arm64", Link::Plain),
    (Prog::Kmem, "arm64", Link::Stripped),
    (Prog::Nokmem, "amd64", Link::Plain),
    (Prog::Nokmem, "amd64", Link::Stripped),
    (Prog::Nokmem, "amd64", Link::External),
    (Prog::Nokmem, "arm64", Link::Plain),
    (Prog::Nokmem, "arm64", Link::Stripped),
    (Prog::Hello, "amd64", Link::Plain),
    (Prog::Hello, "arm64", Link::Stripped),
];

/// The built programs, or `None` (skipped, under `K8S_NOKMEM_ALLOW_SKIP=1`) when Go is not
/// installed.
fn programs() -> Option<&'static [Built]> {
    static BUILT: OnceLock<Option<Vec<Built>>> = OnceLock::new();
    BUILT.get_or_init(build_all).as_deref()
}

fn build_all() -> Option<Vec<Built>> {
    if !Path::new(GO).exists() {
        let msg = format!("'{GO}' is missing; install it with `apt-get install golang-go`");
        common::cannot_run(&msg);
        return None;
    }
    let go_version = common::ok(Command::new(GO).arg("version"));
    let mut key = Sha256::new();
    for part in [
        KMEM_GO,
        KMEM_DISABLED_GO,
        PROG_MAIN_GO,
        HELLO_MAIN_GO,
        &go_version,
    ] {
        key.update(part.as_bytes());
        key.update([0]);
    }
    key.update(format!("{MATRIX:?}").as_bytes());
    let key = hex::encode(&key.finalize()[..8]);
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gobin-progs-{key}"));
    let built: Vec<Built> = MATRIX
        .iter()
        .map(|&(prog, arch, link)| Built {
            prog,
            arch,
            link,
            path: out_dir.join(format!("{prog:?}-{arch}-{link:?}").to_lowercase()),
        })
        .collect();
    if built.iter().all(|b| b.path.exists()) {
        return Some(built);
    }

    // GOPATH layout, as runc and Kubernetes 1.x are built.
    let work = tempfile::tempdir().unwrap();
    let gopath = work.path().join("gopath");
    let runc = gopath.join("src/example.com/runc");
    let files = [
        ("libcontainer/cgroups/fs/kmem.go", KMEM_GO),
        ("libcontainer/cgroups/fs/kmem_disabled.go", KMEM_DISABLED_GO),
        ("cmd/prog/main.go", PROG_MAIN_GO),
        ("cmd/hello/main.go", HELLO_MAIN_GO),
    ];
    for (rel, text) in files {
        let p = runc.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
    }
    let staging = work.path().join("out");
    fs::create_dir_all(&staging).unwrap();
    for b in &built {
        let (pkg, tags) = match b.prog {
            Prog::Kmem => ("cmd/prog", ""),
            Prog::Nokmem => ("cmd/prog", "nokmem"),
            Prog::Hello => ("cmd/hello", ""),
        };
        let mut cmd = Command::new(GO);
        cmd.current_dir(runc.join(pkg))
            .env("GO111MODULE", "off")
            .env("GOPATH", &gopath)
            .env("GOFLAGS", "")
            .env("GOOS", "linux")
            .env("GOARCH", b.arch)
            .args(["build", "-tags", tags, "-o"])
            .arg(staging.join(b.path.file_name().unwrap()));
        match b.link {
            Link::Plain => cmd.env("CGO_ENABLED", "0"),
            Link::Stripped => cmd.env("CGO_ENABLED", "0").arg("-ldflags=-s -w"),
            Link::External => cmd
                .env("CGO_ENABLED", "1")
                .arg("-ldflags=-linkmode=external"),
        };
        let started = std::time::Instant::now();
        common::ok(&mut cmd);
        eprintln!(
            "built {} ({} ms)",
            b.path.file_name().unwrap().to_string_lossy(),
            started.elapsed().as_millis()
        );
    }
    // Publish all at once, so that a concurrent run sees all or nothing.
    fs::create_dir_all(out_dir.parent().unwrap()).unwrap();
    let _ = fs::remove_dir_all(&out_dir);
    fs::rename(&staging, &out_dir)
        .or_else(|_| fs::metadata(&out_dir).map(|_| ()))
        .unwrap();
    Some(built)
}

fn inspect(args: &[&Path], json: bool) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("inspect");
    if json {
        cmd.arg("--json");
    }
    common::run(cmd.args(args))
}

fn json_of(out: &Output) -> Vec<serde_json::Value> {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `go version -m FILE`: the Go version and the `-tags` build setting (empty when none).
fn oracle(path: &Path) -> (String, Vec<String>) {
    let text = common::ok(Command::new(GO).args(["version", "-m"]).arg(path));
    let version = text
        .lines()
        .next()
        .and_then(|l| l.rsplit(": ").next())
        .unwrap()
        .trim()
        .to_string();
    let tags = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("build\t-tags="))
        .map(|t| t.split(',').map(String::from).collect())
        .unwrap_or_default();
    (version, tags)
}

#[test]
fn go_programs_are_classified_like_go_version_m_says() {
    let Some(progs) = programs() else { return };
    let paths: Vec<&Path> = progs.iter().map(|b| b.path.as_path()).collect();
    let out = inspect(&paths, true);
    assert_eq!(out.status.code(), Some(1), "a kmem build is among them");
    let entries = json_of(&out);
    assert_eq!(entries.len(), progs.len());
    for (b, e) in progs.iter().zip(&entries) {
        let case = format!("{b:?}: {e:#}");
        let (version, tags) = oracle(&b.path);
        assert_eq!(e["path"], b.path.to_str().unwrap(), "{case}");
        assert_eq!(e["arch"], b.arch, "{case}");
        assert_eq!(e["go_version"], version.as_str(), "{case}");
        assert_eq!(e["tags"], serde_json::json!(tags), "{case}");
        assert_eq!(e["error"], serde_json::Value::Null, "{case}");
        let evidence: Vec<&str> = e["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["what"].as_str().unwrap())
            .collect();
        let nokmem: Vec<&str> = e["nokmem_evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["what"].as_str().unwrap())
            .collect();
        match b.prog {
            Prog::Kmem => {
                assert_eq!(e["verdict"], "enables-kmem", "{case}");
                assert_eq!(
                    evidence,
                    [
                        "memory.kmem.limit_in_bytes",
                        "libcontainer/cgroups/fs/kmem.go"
                    ],
                    "{case}"
                );
                let file_name = e["evidence"][1]["file_name"].as_str().unwrap();
                assert!(
                    file_name.ends_with("src/example.com/runc/libcontainer/cgroups/fs/kmem.go"),
                    "{case}"
                );
            }
            Prog::Nokmem => {
                assert_eq!(e["verdict"], "safe", "{case}");
                assert_eq!(e["reason"], "nokmem-code", "{case}");
                assert_eq!(evidence, Vec::<&str>::new(), "{case}");
                assert_eq!(
                    nokmem,
                    ["libcontainer/cgroups/fs/kmem_disabled.go"],
                    "{case}"
                );
            }
            Prog::Hello => {
                assert_eq!(e["verdict"], "safe", "{case}");
                assert_eq!(e["reason"], "no-kmem-code", "{case}");
                assert!(evidence.is_empty() && nokmem.is_empty(), "{case}");
            }
        }
        // Offsets point at the bytes named.
        let bytes = fs::read(&b.path).unwrap();
        for ev in e["evidence"].as_array().unwrap() {
            let at = ev["offset"].as_u64().unwrap() as usize;
            let what = ev["what"].as_str().unwrap();
            assert_eq!(&bytes[at..at + what.len()], what.as_bytes(), "{case}");
        }
    }
}

#[test]
fn human_lines_name_the_verdict_version_tags_and_evidence() {
    let Some(progs) = programs() else { return };
    let pick = |prog, link| {
        progs
            .iter()
            .find(|b| b.prog == prog && b.arch == "arm64" && b.link == link)
            .unwrap()
    };
    let kmem = pick(Prog::Kmem, Link::Stripped);
    let nokmem = pick(Prog::Nokmem, Link::Stripped);
    let hello = pick(Prog::Hello, Link::Stripped);
    let version = oracle(&kmem.path).0;

    let out = inspect(&[&nokmem.path, &hello.path], false);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let prefix = format!(
        "{}: safe (nokmem): {version}, arm64, tags nokmem; evidence: none; nokmem code: libcontainer/cgroups/fs/kmem_disabled.go at 0x",
        nokmem.path.display()
    );
    assert!(lines[0].starts_with(&prefix), "{stdout}");
    assert_eq!(
        lines[1],
        format!(
            "{}: safe (no kmem-enabling code): {version}, arm64, tags none; evidence: none",
            hello.path.display()
        )
    );

    let out = inspect(&[&kmem.path], false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report = gobin::inspect(&kmem.path).unwrap();
    let want = format!(
        "{}: ENABLES KMEM: {version}, arm64, tags none; evidence: memory.kmem.limit_in_bytes at {:#x}, libcontainer/cgroups/fs/kmem.go at {:#x}\n",
        kmem.path.display(),
        report.evidence[0].offset,
        report.evidence[1].offset
    );
    assert_eq!(stdout, want);
}

#[test]
fn the_library_api_gives_the_same_answer() {
    let Some(progs) = programs() else { return };
    for b in progs {
        let r = gobin::inspect(&b.path).unwrap_or_else(|e| panic!("{b:?}: {e}"));
        let want = match b.prog {
            Prog::Kmem => (Verdict::EnablesKmem, Reason::KmemCode),
            Prog::Nokmem => (Verdict::Safe, Reason::NokmemCode),
            Prog::Hello => (Verdict::Safe, Reason::NoKmemCode),
        };
        assert_eq!((r.verdict, r.reason), want, "{b:?}");
        assert_eq!(r.has_nokmem_tag(), b.prog == Prog::Nokmem, "{b:?}");
        assert_eq!(r.size, fs::metadata(&b.path).unwrap().len(), "{b:?}");
    }
}

/// Overwrite the ELF section table fields (e_shoff, e_shnum, e_shstrndx), as `sstrip` does.
fn drop_section_table(bytes: &mut [u8]) {
    assert_eq!(&bytes[..6], b"\x7fELF\x02\x01", "64-bit little-endian");
    bytes[40..48].fill(0);
    bytes[60..64].fill(0);
}

#[test]
fn a_binary_without_section_table_or_build_info_is_still_read() {
    let Some(progs) = programs() else { return };
    let dir = tempfile::tempdir().unwrap();
    for b in progs
        .iter()
        .filter(|b| b.link == Link::Stripped && b.prog != Prog::Hello)
    {
        let case = format!("{b:?}");
        let mut bytes = fs::read(&b.path).unwrap();
        drop_section_table(&mut bytes);
        let no_sections = dir.path().join(format!("{}-sstripped", b.arch));
        fs::write(&no_sections, &bytes).unwrap();
        let r = gobin::inspect(&no_sections).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            r.go_version,
            Some(oracle(&b.path).0),
            "{case}: build info found by its magic"
        );
        assert!(r.evidence.iter().all(|e| e.section.is_none()), "{case}");
        let kmem = b.prog == Prog::Kmem;
        assert_eq!(r.verdict == Verdict::EnablesKmem, kmem, "{case}");

        // Also without the build info (as Go < 1.13 writes none): the pclntab tells it is Go.
        let magic = b"\xff Go buildinf:";
        let at = memchr::memmem::find(&bytes, magic).unwrap();
        bytes[at..at + magic.len()].fill(0);
        let no_info = dir.path().join(format!("{}-noinfo", b.arch));
        fs::write(&no_info, &bytes).unwrap();
        let r = gobin::inspect(&no_info).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(r.go_version, None, "{case}");
        assert_eq!(r.tags, None, "{case}");
        assert_eq!(r.go_releases.as_deref(), Some("go1.18 or go1.19"), "{case}");
        assert_eq!(r.verdict == Verdict::EnablesKmem, kmem, "{case}");
        let out = inspect(&[&no_info], false);
        let line = String::from_utf8(out.stdout).unwrap();
        assert!(
            line.contains(": go version unknown (pclntab of go1.18 or go1.19), ")
                && line.contains(", tags unknown; "),
            "{line}"
        );
    }
}

#[test]
fn an_unstripped_binary_without_build_info_has_its_version_in_the_symbol_table() {
    let Some(progs) = programs() else { return };
    let dir = tempfile::tempdir().unwrap();
    for b in progs.iter().filter(|b| b.link != Link::Stripped) {
        let case = format!("{b:?}");
        // As Go < 1.13 writes no build info: runtime.buildVersion is all there is.
        let mut bytes = fs::read(&b.path).unwrap();
        let magic = b"\xff Go buildinf:";
        let at = memchr::memmem::find(&bytes, magic).unwrap();
        bytes[at..at + magic.len()].fill(0);
        let no_info = dir.path().join(b.path.file_name().unwrap());
        fs::write(&no_info, &bytes).unwrap();
        let r = gobin::inspect(&no_info).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(r.go_version, Some(oracle(&b.path).0), "{case}");
        assert_eq!(r.tags, None, "{case}");
        assert_eq!(r.go_releases, None, "{case}");
    }
}

/// What the user sees for files that cannot be inspected: exit 2, the path on stderr.
#[test]
fn unreadable_and_non_go_files_exit_2_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("kubelet");
    let a_dir = dir.path().join("bin");
    fs::create_dir(&a_dir).unwrap();
    let c_program = PathBuf::from("/bin/true");
    let mut cases: Vec<(PathBuf, String)> = vec![
        (missing.clone(), format!("failed to open '{}'\n  -> No such file or directory", missing.display())),
        (a_dir.clone(), format!("'{}' is a directory, not a Go binary", a_dir.display())),
        (
            c_program.clone(),
            "'/bin/true' is not a Go binary: an ELF amd64 file without Go build info or a Go pclntab".into(),
        ),
    ];
    if let Some(progs) = programs() {
        let whole = fs::read(&progs[0].path).unwrap();
        let truncated = dir.path().join("runc.part");
        fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
        cases.push((
            truncated.clone(),
            format!(
                "'{}' is truncated\n  -> loadable segment ",
                truncated.display()
            ),
        ));
    }
    for (path, want) in &cases {
        let out = inspect(&[path], false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(
            stderr.contains(&format!("k8s-nokmem: error: {want}")),
            "{}: {stderr}",
            path.display()
        );
        assert!(stderr.contains("\nnote: "), "{}: {stderr}", path.display());
        assert!(
            out.stdout.is_empty(),
            "{}: results only on stdout",
            path.display()
        );

        let out = inspect(&[path], true);
        assert_eq!(out.status.code(), Some(2), "{}", path.display());
        let entries = json_of(&out);
        assert_eq!(entries[0]["path"], path.to_str().unwrap());
        assert_eq!(entries[0]["verdict"], "error");
        let first_line = want.lines().next().unwrap();
        assert!(
            entries[0]["error"]
                .as_str()
                .unwrap()
                .starts_with(first_line),
            "{}: {:#}",
            path.display(),
            entries[0]
        );
    }
}

#[test]
fn enables_kmem_outranks_errors_and_errors_outrank_safe() {
    let Some(progs) = programs() else { return };
    let find = |prog| {
        progs
            .iter()
            .find(|b| b.prog == prog)
            .unwrap()
            .path
            .as_path()
    };
    let missing = Path::new("/nonexistent/runc");
    let cases: [(&[&Path], i32); 5] = [
        (&[find(Prog::Nokmem), find(Prog::Hello)], 0),
        (&[find(Prog::Nokmem), find(Prog::Kmem)], 1),
        (&[find(Prog::Nokmem), missing], 2),
        (&[missing, find(Prog::Kmem)], 1),
        (&[missing, find(Prog::Kmem), find(Prog::Hello)], 1),
    ];
    for (files, want) in cases {
        let out = inspect(files, true);
        assert_eq!(out.status.code(), Some(want), "{files:?}");
        assert_eq!(
            json_of(&out).len(),
            files.len(),
            "{files:?}: one entry per file"
        );
    }
}

#[test]
fn inspect_needs_a_file() {
    let out = common::run(Command::new(BIN).arg("inspect"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<FILE>..."));
}

/// 32- and 64-bit, little- and big-endian ELF beyond amd64/arm64: the GOARCH, the Go
/// version from the build info and, with the build info gone, from `runtime.buildVersion`
/// in the symbol table (read with the file's byte order and word size).
#[test]
fn other_word_sizes_and_byte_orders_are_read() {
    const ARCHES: [&str; 5] = ["386", "arm", "mips", "ppc64", "s390x"];
    if !Path::new(GO).exists() {
        let msg = format!("'{GO}' is missing; install it with `apt-get install golang-go`");
        assert!(!common::strict(), "{msg}");
        eprintln!("skipped: {msg}");
        return;
    }
    let go_version = common::ok(Command::new(GO).arg("version"));
    let mut key = Sha256::new();
    for part in [HELLO_MAIN_GO, &go_version, &ARCHES.join(",")] {
        key.update(part.as_bytes());
        key.update([0]);
    }
    let key = hex::encode(&key.finalize()[..8]);
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gobin-arches-{key}"));
    if !ARCHES.iter().all(|a| out_dir.join(a).exists()) {
        let work = tempfile::tempdir().unwrap();
        let pkg = work.path().join("gopath/src/hello");
        fs::create_dir_all(&pkg).unwrap();
        fs::write(pkg.join("main.go"), HELLO_MAIN_GO).unwrap();
        let staging = work.path().join("out");
        for arch in ARCHES {
            common::ok(
                Command::new(GO)
                    .current_dir(&pkg)
                    .env("GO111MODULE", "off")
                    .env("GOPATH", work.path().join("gopath"))
                    .env("GOFLAGS", "")
                    .env("GOOS", "linux")
                    .env("GOARCH", arch)
                    .env("CGO_ENABLED", "0")
                    .args(["build", "-o"])
                    .arg(staging.join(arch)),
            );
        }
        fs::create_dir_all(out_dir.parent().unwrap()).unwrap();
        let _ = fs::remove_dir_all(&out_dir);
        fs::rename(&staging, &out_dir)
            .or_else(|_| fs::metadata(&out_dir).map(|_| ()))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    for arch in ARCHES {
        let path = out_dir.join(arch);
        let version = oracle(&path).0;
        let r = gobin::inspect(&path).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(r.arch, arch);
        assert_eq!(r.go_version.as_deref(), Some(version.as_str()), "{arch}");
        assert_eq!(r.tags, Some(vec![]), "{arch}");
        assert_eq!((r.verdict, r.reason), (Verdict::Safe, Reason::NoKmemCode));

        let mut bytes = fs::read(&path).unwrap();
        let magic = b"\xff Go buildinf:";
        let at = memchr::memmem::find(&bytes, magic).unwrap();
        bytes[at..at + magic.len()].fill(0);
        let no_info = dir.path().join(arch);
        fs::write(&no_info, &bytes).unwrap();
        let r = gobin::inspect(&no_info).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(r.go_version, Some(version), "{arch}: from the symbol table");
        assert_eq!(r.tags, None, "{arch}");
    }
}

/// A payload directory as build-payload.sh writes it: the nokmem program as `runc`, and a
/// MANIFEST whose `[runc]` section is `runc_section` (a `[kubelet]` one too: the format
/// has both).
fn payload_dir(nokmem: &Built, runc_section: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(&nokmem.path, dir.path().join("runc")).unwrap();
    let manifest = format!(
        "[payload]\narch = amd64\n\n[runc]\n{runc_section}\n\n[kubelet]\nfile = kubelet\n\
         version = 1.20.2\nsize = 1\nsha256 = {}\n",
        "b".repeat(64)
    );
    fs::write(dir.path().join("MANIFEST"), manifest).unwrap();
    dir
}

/// The `[runc]` section that tells the truth about `b` (CGO_ENABLED=0, -tags nokmem, no
/// -trimpath), with `replace` applied.
fn true_section(b: &Built, replace: (&str, &str)) -> String {
    let (go, _) = oracle(&b.path);
    let sha = hex::encode(Sha256::digest(fs::read(&b.path).unwrap()));
    format!(
        "file = runc\nversion = 1.1.5\nsource = debian:runc=1.1.5+ds1-1\ngo = {go}\n\
         tags = nokmem\narch = amd64\nsize = 1\nsha256 = {sha}\n\
         build = CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -tags=nokmem -ldflags='-s -w'\n\
         built_using = golang-1.19 (= 1.19.8-2), runc (= 1.1.5+ds1-1)"
    )
    .replace(replace.0, replace.1)
}

/// `inspect` on a payload binary checks it against the MANIFEST beside it (or the one
/// given with --manifest): the Go version, tags, arch, -trimpath and cgo in its build info
/// and its sha256 must be what the MANIFEST says; a difference is named and exits 1.
#[test]
fn a_payload_binary_is_cross_checked_against_its_manifest() {
    let Some(progs) = programs() else { return };
    let b = progs
        .iter()
        .find(|b| b.prog == Prog::Nokmem && b.arch == "amd64" && b.link == Link::Stripped)
        .unwrap();
    let (go, _) = oracle(&b.path);

    let good = payload_dir(b, &true_section(b, ("", "")));
    let runc = good.path().join("runc");
    let out = inspect(&[&runc], false);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let want = format!(
        "  MANIFEST '{}' [runc]: matches: sha256 ok, go ok, tags ok, arch ok, -trimpath ok, CGO_ENABLED ok",
        good.path().join("MANIFEST").display()
    );
    assert!(text.lines().any(|l| l == want), "want {want:?} in:\n{text}");
    let json = json_of(&inspect(&[&runc], true));
    assert_eq!(json[0]["manifest"]["ok"], true, "{json:#?}");
    assert_eq!(json[0]["manifest"]["section"], "runc", "{json:#?}");

    let cases = [
        (
            ("tags = nokmem", "tags = nokmem seccomp"),
            "MISMATCH tags: MANIFEST 'nokmem,seccomp', binary 'nokmem'".to_string(),
        ),
        (
            ("go = go", "go = go1.99.0-was-"),
            format!(
                "MISMATCH go: MANIFEST 'go1.99.0-was-{}', binary '{go}'",
                &go[2..]
            ),
        ),
        (
            ("go build -tags", "go build -trimpath -tags"),
            "MISMATCH -trimpath: MANIFEST 'true', binary 'false'".to_string(),
        ),
        (
            ("CGO_ENABLED=0", "CGO_ENABLED=1"),
            "MISMATCH CGO_ENABLED: MANIFEST '1', binary '0'".to_string(),
        ),
        (
            ("arch = amd64\nsize", "arch = arm64\nsize"),
            "MISMATCH arch".to_string(),
        ),
        (("sha256 = ", "sha256 = 0"), "MISMATCH sha256".to_string()),
    ];
    for (replace, want) in cases {
        let mut section = true_section(b, replace);
        if replace.0 == "sha256 = " {
            // keep 64 hex digits: drop the last one
            let at = section.find("sha256 = ").unwrap() + "sha256 = ".len() + 64;
            section.remove(at);
        }
        let dir = payload_dir(b, &section);
        let out = inspect(&[&dir.path().join("runc")], false);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "case {replace:?}: {text}");
        assert!(
            text.contains("[runc]: DIFFERS: ") && text.contains(&want),
            "case {replace:?}: want {want:?} in:\n{text}"
        );
    }

    // --manifest: a copy under another name is found by its sha256.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("runc.distrib");
    fs::copy(&runc, &copy).unwrap();
    let manifest = good.path().join("MANIFEST");
    let out = common::run(
        Command::new(BIN)
            .args(["inspect", "--manifest"])
            .arg(&manifest)
            .arg(&copy),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("[runc]: matches: "), "{text}");
    // ... and a binary the MANIFEST does not describe cannot be checked: exit 2, named.
    let hello = progs.iter().find(|b| b.prog == Prog::Hello).unwrap();
    let out = common::run(
        Command::new(BIN)
            .args(["inspect", "--manifest"])
            .arg(&manifest)
            .arg(&hello.path),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "failed to cross-check '{}' against its MANIFEST",
            hello.path.display()
        )) && err.contains("has no section with file = "),
        "{err}"
    );
}
