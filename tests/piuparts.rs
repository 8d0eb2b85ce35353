//! Debian's own installation judge on the amd64 .deb: piuparts installs it in a clean
//! bookworm chroot, purges it, then installs a previous build from an apt repository,
//! upgrades to this one, removes and purges it, and checks nothing is left behind.

mod common;

use std::fs;
use std::process::Command;

use common::{deb, mirror, ok, run};

#[test]
fn piuparts_install_upgrade_remove_purge() {
    if !common::root_or_skip("piuparts") {
        return;
    }
    let Some(deb) = deb("amd64") else { return };
    let tmp = tempfile::tempdir().unwrap();

    // The "previous build": this package at a lower version, served by a local repository
    // so that piuparts runs its upgrade test from it to the new .deb.
    let unpacked = tmp.path().join("prev");
    ok(Command::new("dpkg-deb").arg("-R").arg(&deb).arg(&unpacked));
    let control_path = unpacked.join("DEBIAN/control");
    let control = fs::read_to_string(&control_path).unwrap();
    let version = control
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap()
        .to_string();
    let prev_version = format!("{}~prev", version);
    fs::write(
        &control_path,
        control.replace(
            &format!("Version: {version}"),
            &format!("Version: {prev_version}"),
        ),
    )
    .unwrap();
    let repo = tmp.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    ok(Command::new("dpkg-deb")
        .args(["-Zxz", "--build"])
        .arg(&unpacked)
        .arg(repo.join(format!("k8s-nokmem_{prev_version}_amd64.deb"))));
    let packages = ok(Command::new("apt-ftparchive")
        .arg("packages")
        .arg(".")
        .current_dir(&repo));
    fs::write(repo.join("Packages"), packages).unwrap();

    let mirror = mirror();
    let out = run(Command::new("piuparts")
        .args(["--distribution", "bookworm", "--mirror", &mirror])
        .arg(format!("--bindmount={}", repo.display()))
        .arg(format!(
            "--extra-repo=deb [trusted=yes] file://{} ./",
            repo.display()
        ))
        .arg("--warn-on-others")
        .arg(format!("--tmpdir={}", tmp.path().display()))
        .arg(&deb));
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = log
        .lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        out.status.success(),
        "piuparts failed:\n{}",
        tail.join("\n")
    );
    assert!(
        log.contains("PASS: All tests."),
        "piuparts did not say PASS:\n{}",
        tail.join("\n")
    );
    assert!(
        log.contains(&prev_version),
        "piuparts did not run the upgrade test from {prev_version}:\n{}",
        tail.join("\n")
    );
    common::keep_tmp(tmp);
}
