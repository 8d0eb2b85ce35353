//! Reproducible builds: the same commit gives the same bytes. `scripts/check-reproducible.sh
//! --skip-payload` packages the .debs twice from the payload in target/payload (a build in
//! this checkout, and one in a three-day-old copy elsewhere with another umask, time zone,
//! locale, host name and CPU count) and compares them; the payload's MANIFEST, written
//! twice from the cache, is the same file both times and names its provenance. The full
//! check (the payload from empty caches too) is `scripts/check-reproducible.sh` (README).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{artifact, ok, repo, run};

const ARCHES: [&str; 2] = ["amd64", "arm64"];

#[test]
fn the_debs_package_reproducibly() {
    for arch in ARCHES {
        let manifest = repo().join("target/payload").join(arch).join("MANIFEST");
        if artifact(&manifest, "scripts/build-deb.sh").is_none() {
            return;
        }
    }
    if !Path::new("/usr/bin/diffoscope").exists() {
        common::cannot_run("diffoscope is missing; run `sudo scripts/install-deps.sh`");
        return;
    }
    let out = run(Command::new(repo().join("scripts/check-reproducible.sh")).arg("--skip-payload"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the two packaging builds differ ({}):\n{stderr}\n{stdout}",
        out.status
    );
    for arch in ARCHES {
        assert!(
            stderr.contains(&format!("{arch}: identical: k8s-nokmem_")),
            "{arch}:\n{stderr}"
        );
    }
}

/// The MANIFEST carries no build time: written twice, seconds apart, it is the same file.
/// And it names its provenance: the .dsc's sha256, the exact build flags, Go, and the
/// Debian source packages compiled in.
#[test]
fn the_payload_manifest_is_the_same_each_time_and_names_its_provenance() {
    if !common::root_or_skip("building the payload (apt-get source, the shared cache)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let build = |out: &str| {
        ok(Command::new(repo().join("scripts/build-payload.sh"))
            // the kmem check runs this test build's inspect (no release build needed)
            .env("K8S_NOKMEM_BIN", env!("CARGO_BIN_EXE_k8s-nokmem"))
            .args(["--arch", "amd64", "--only", "runc", "--out"])
            .arg(tmp.path().join(out)))
    };
    build("one");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build("two");
    let one = fs::read_to_string(tmp.path().join("one/amd64/MANIFEST")).unwrap();
    let two = fs::read_to_string(tmp.path().join("two/amd64/MANIFEST")).unwrap();
    assert_eq!(one, two, "the MANIFEST differs between two builds");

    let text = format!(
        "[kubelet]\nfile = kubelet\nversion = 0\nsize = 0\nsha256 = {}\n",
        "0".repeat(64)
    );
    let m = k8s_nokmem::manifest::Manifest::parse(&format!("{one}\n{text}"), "MANIFEST").unwrap();
    let runc = m.binary("runc").unwrap();
    assert!(runc.source.starts_with("debian:runc="), "{one}");
    assert_eq!(
        runc.source_sha256.as_deref().map(str::len),
        Some(64),
        "source_sha256: {one}"
    );
    for flag in [
        "-trimpath",
        "-buildid=",
        "-tags=",
        "CGO_ENABLED=1",
        "GOARCH=amd64",
    ] {
        assert!(runc.build.contains(flag), "build lacks {flag}: {one}");
    }
    let go = ok(Command::new("/usr/bin/go").arg("version"));
    assert!(
        go.contains(&format!("{} ", runc.go)),
        "go = {}: {go}",
        runc.go
    );
    for src in ["golang-1.", "runc (= ", "glibc (= ", "libseccomp (= "] {
        assert!(
            runc.built_using.iter().any(|b| b.starts_with(src)),
            "built_using lacks {src}: {:?}",
            runc.built_using
        );
    }
    assert!(!one.contains("\nbuilt = "), "a build time: {one}");
    common::keep_tmp(tmp);
}
