//! k8s-nokmem and the node's kubelet package move together: the package built for kubelet
//! 1.20.x declares Breaks on the kubelet packages of every other minor
//! (scripts/lib/kubelet-breaks.sh, run by scripts/build-deb.sh on each .deb), so apt keeps
//! a kubelet minor upgrade back instead of landing it at kubelet.distrib underneath the
//! diversion.
//!
//! Real dpkg and apt: a k8s-nokmem .deb with the control fields of Cargo.toml's
//! `[package.metadata.deb]` (the payload is irrelevant to apt) gets its Breaks from the
//! build's script, is installed with dpkg into a temporary root next to kubelet 1.20.2,
//! and apt (`-o Dir=ROOT`) resolves upgrades against a local repository (apt-ftparchive)
//! that holds kubelet 1.20.3 / 1.21.0 and optionally a k8s-nokmem built for 1.21.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, repo, run};

const KUBELET: &str = "1.20.2";
/// The repository's Origin, allowed in unattended-upgrades' Origins-Pattern.
const ORIGIN: &str = "k8s-nokmem-test";
/// unattended-upgrades' script (Debian's unattended-upgrades package).
const UNATTENDED_UPGRADE: &str = "/usr/bin/unattended-upgrade";

/// A value of `[package.metadata.deb]` in Cargo.toml (`key = "value"`).
fn deb_metadata(key: &str) -> String {
    let toml = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let start = toml.find("[package.metadata.deb]").unwrap();
    toml[start..]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(" = ")?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("Cargo.toml [package.metadata.deb] has no {key}"))
}

fn arch() -> String {
    ok(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string()
}

/// Build `name_version_arch.deb` in `out` with these extra control fields.
fn build_deb(out: &Path, name: &str, version: &str, fields: &[(&str, String)]) -> PathBuf {
    let tree = out.join(format!("tree-{name}-{version}"));
    let doc = tree.join("usr/share/doc").join(name);
    fs::create_dir_all(&doc).unwrap();
    fs::write(doc.join("README"), format!("{name} {version}\n")).unwrap();
    fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    let arch = arch();
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {}\n\
         Section: {}\nPriority: {}\nDescription: test package {name}\n",
        deb_metadata("maintainer"),
        deb_metadata("section"),
        deb_metadata("priority"),
    );
    for (k, v) in fields {
        control.push_str(&format!("{k}: {v}\n"));
    }
    fs::write(tree.join("DEBIAN/control"), control).unwrap();
    let deb = out.join(format!("{name}_{version}_{arch}.deb"));
    ok(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "-b"])
        .arg(&tree)
        .arg(&deb));
    deb
}

/// k8s-nokmem for a payload kubelet, its Breaks set by the build's own script.
fn k8s_nokmem_deb(out: &Path, kubelet: &str) -> PathBuf {
    let version = format!("{kubelet}+nokmem{}-1", env!("CARGO_PKG_VERSION"));
    let deb = build_deb(
        out,
        &deb_metadata("name"),
        &version,
        &[("Depends", deb_metadata("depends"))],
    );
    ok(Command::new(repo().join("scripts/lib/kubelet-breaks.sh"))
        .arg(kubelet)
        .arg(&deb));
    deb
}

/// A temporary dpkg + apt root and a flat repository beside it.
struct AptRoot {
    dir: tempfile::TempDir,
}

impl AptRoot {
    fn new() -> AptRoot {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("root");
        for d in [
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/log",
            "var/run",
            "var/log/unattended-upgrades",
            "etc/apt/sources.list.d",
            "etc/apt/preferences.d",
            "etc/apt/apt.conf.d",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
        fs::create_dir_all(dir.path().join("debs")).unwrap();
        AptRoot { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn debs(&self) -> PathBuf {
        self.dir.path().join("debs")
    }

    /// dpkg -i into the root (no maintainer scripts in these packages).
    fn dpkg_install(&self, debs: &[&Path]) -> std::process::Output {
        run(Command::new("dpkg")
            .arg(format!("--root={}", self.root().display()))
            .args(["--force-not-root", "--force-script-chrootless", "-i"])
            .args(debs))
    }

    /// The repository holds exactly `debs`; apt-get update reads it.
    fn publish(&self, debs: &[&Path]) {
        let repo_dir = self.dir.path().join("repo");
        let _ = fs::remove_dir_all(&repo_dir);
        fs::create_dir_all(&repo_dir).unwrap();
        for deb in debs {
            fs::copy(deb, repo_dir.join(deb.file_name().unwrap())).unwrap();
        }
        let packages = ok(Command::new("apt-ftparchive")
            .args(["packages", "."])
            .current_dir(&repo_dir));
        fs::write(repo_dir.join("Packages"), packages).unwrap();
        let release = ok(Command::new("apt-ftparchive")
            .args(["-o", &format!("APT::FTPArchive::Release::Origin={ORIGIN}")])
            .args(["release", "."])
            .current_dir(&repo_dir));
        fs::write(repo_dir.join("Release"), release).unwrap();
        fs::write(
            self.root().join("etc/apt/sources.list"),
            format!("deb [trusted=yes] file:{} ./\n", repo_dir.display()),
        )
        .unwrap();
        ok(&mut self.apt(&["update"]));
    }

    fn apt(&self, args: &[&str]) -> Command {
        let r = self.root();
        let mut cmd = Command::new("apt-get");
        cmd.env("APT_CONFIG", "/dev/null")
            .arg("-o")
            .arg(format!("Dir={}", r.display()))
            .arg("-o")
            .arg(format!(
                "Dir::State::status={}/var/lib/dpkg/status",
                r.display()
            ))
            .arg("-o")
            .arg(format!(
                "Dir::Etc::Parts={}/etc/apt/apt.conf.d",
                r.display()
            ))
            .args(["-o", "APT::Architectures::=", "-o"])
            .arg(format!("APT::Architecture={}", arch()))
            .args(["-o", "Debug::NoLocking=1", "-q"])
            .args(args);
        cmd
    }

    /// unattended-upgrades' own `main(options, rootdir)` (how its test suite runs it on a
    /// root; the command line always takes /) in dry-run with debug, allowed the
    /// repository's origin through ROOT/etc/apt/apt.conf. Its stdout and stderr.
    fn unattended_upgrade(&self) -> Option<String> {
        if !Path::new(UNATTENDED_UPGRADE).is_file() {
            common::cannot_run(&format!(
                "{UNATTENDED_UPGRADE} is missing; install it with `scripts/install-deps.sh` \
                 (apt-get install unattended-upgrades)"
            ));
            return None;
        }
        let r = self.root();
        fs::write(
            r.join("etc/apt/apt.conf"),
            format!(
                "APT::Architecture \"{arch}\";\n\
                 APT::Architectures {{ \"{arch}\"; }};\n\
                 Unattended-Upgrade::Origins-Pattern {{ \"origin={ORIGIN}\"; }};\n",
                arch = arch(),
            ),
        )
        .unwrap();
        let script = "import importlib.machinery, importlib.util, sys\n\
             loader = importlib.machinery.SourceFileLoader('uu', sys.argv[2])\n\
             uu = importlib.util.module_from_spec(importlib.util.spec_from_loader('uu', loader))\n\
             loader.exec_module(uu)\n\
             o = uu.Options()\n\
             o.dry_run = True\n\
             o.debug = True\n\
             sys.exit(uu.main(o, rootdir=sys.argv[1]))\n";
        let out = run(Command::new("/usr/bin/python3")
            .args(["-c", script])
            .arg(&r)
            .arg(UNATTENDED_UPGRADE)
            .env("DEBIAN_FRONTEND", "noninteractive"));
        Some(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// `apt-get -s ARGS`: the simulated actions.
    fn simulate(&self, args: &[&str]) -> String {
        let mut all = vec!["-s"];
        all.extend_from_slice(args);
        ok(&mut self.apt(&all))
    }
}

fn kubelet_deb(root: &AptRoot, name: &str, version: &str) -> PathBuf {
    build_deb(&root.debs(), name, version, &[])
}

/// The node never ends with a kubelet of another minor next to the 1.20 k8s-nokmem.
fn assert_moves_together(plan: &str) {
    let new_kubelet = plan
        .lines()
        .any(|l| l.starts_with("Inst kubelet ") && l.contains("(1.21"));
    let new_nokmem = plan
        .lines()
        .any(|l| l.starts_with("Inst k8s-nokmem ") && l.contains("(1.21"));
    let removed = plan.lines().any(|l| l.starts_with("Remv k8s-nokmem"));
    assert!(
        !new_kubelet || new_nokmem || removed,
        "kubelet 1.21 would land underneath the 1.20 k8s-nokmem:\n{plan}"
    );
}

#[test]
fn breaks_names_the_kubelet_packages_outside_the_payload_minor() {
    let out = ok(Command::new(repo().join("scripts/lib/kubelet-breaks.sh")).arg("1.20.2"));
    assert_eq!(
        out.trim(),
        "kubelet (<< 1.20), kubelet (>= 1.21~), kubernetes-node (<< 1.20), kubernetes-node (>= 1.21~)"
    );
    let out = ok(Command::new(repo().join("scripts/lib/kubelet-breaks.sh")).arg("v1.14.6"));
    assert!(out.contains("kubelet (>= 1.15~)"), "{out}");

    let root = AptRoot::new();
    let deb = k8s_nokmem_deb(&root.debs(), KUBELET);
    let field = |f: &str| ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f));
    assert_eq!(
        field("Breaks").trim(),
        "kubelet (<< 1.20), kubelet (>= 1.21~), kubernetes-node (<< 1.20), kubernetes-node (>= 1.21~)"
    );
    // Only the control member changes: the payload (data.tar) is the same bytes.
    let plain = build_deb(&root.debs(), "k8s-nokmem", "1.20.2+nokmem0-2", &[]);
    let member =
        |deb: &Path, name: &str| run(Command::new("ar").arg("p").arg(deb).arg(name)).stdout;
    let data_before = member(&plain, "data.tar.xz");
    ok(Command::new(repo().join("scripts/lib/kubelet-breaks.sh"))
        .arg(KUBELET)
        .arg(&plain));
    assert!(!data_before.is_empty() && member(&plain, "data.tar.xz") == data_before);
    let members = ok(Command::new("ar").arg("t").arg(&plain));
    assert_eq!(
        members.lines().collect::<Vec<_>>(),
        ["debian-binary", "control.tar.xz", "data.tar.xz"]
    );
    // Setting it is reproducible: the same package twice gives the same bytes.
    let base = build_deb(&root.debs(), "k8s-nokmem", "1.20.2+nokmem0-1", &[]);
    let copies: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|n| {
            let c = root.debs().join(format!("{n}.deb"));
            fs::copy(&base, &c).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1100));
            ok(Command::new(repo().join("scripts/lib/kubelet-breaks.sh"))
                .env_remove("SOURCE_DATE_EPOCH")
                .arg(KUBELET)
                .arg(&c));
            c
        })
        .collect();
    assert!(
        fs::read(&copies[0]).unwrap() == fs::read(&copies[1]).unwrap(),
        "two runs of kubelet-breaks.sh on one package differ"
    );
    // The rest of the control file is what cargo-deb wrote.
    assert_eq!(field("Depends").trim(), deb_metadata("depends"));
    assert_eq!(field("Package").trim(), "k8s-nokmem");
}

#[test]
fn apt_keeps_a_kubelet_minor_upgrade_back() {
    let root = AptRoot::new();
    let d = root.debs();
    let helpers = build_deb(&d, "init-system-helpers", "1.65.2", &[]);
    let k1202 = kubelet_deb(&root, "kubelet", "1.20.2-00");
    let k1203 = kubelet_deb(&root, "kubelet", "1.20.3-00");
    let k1210 = kubelet_deb(&root, "kubelet", "1.21.0-00");
    let nokmem120 = k8s_nokmem_deb(&d, KUBELET);
    let nokmem121 = k8s_nokmem_deb(&d, "1.21.0");

    let out = root.dpkg_install(&[&helpers, &k1202, &nokmem120]);
    assert!(out.status.success(), "{out:?}");

    // A repository offering kubelet 1.21 and no k8s-nokmem for it.
    root.publish(&[&helpers, &k1202, &k1210, &nokmem120]);
    let plan = root.simulate(&["upgrade"]);
    assert!(
        plan.contains("The following packages have been kept back:")
            && !plan.lines().any(|l| l.starts_with("Inst kubelet")),
        "apt-get upgrade must keep kubelet 1.21 back:\n{plan}"
    );
    assert_moves_together(&plan);
    // unattended-upgrades (2.9, Debian 12) refuses the change that would remove k8s-nokmem.
    let Some(uu) = root.unattended_upgrade() else {
        return;
    };
    assert!(
        uu.contains("Checking: kubelet")
            && uu.contains("pkg k8s-nokmem is marked to be deleted")
            && uu.contains("No packages found that can be upgraded unattended"),
        "unattended-upgrade must keep kubelet 1.21 back:\n{uu}"
    );
    // full-upgrade keeps it back too rather than remove k8s-nokmem (apt 2.6's resolver;
    // README: "Upgrading kubelet").
    let plan = root.simulate(&["full-upgrade"]);
    assert!(
        plan.contains("The following packages have been kept back:")
            && !plan.lines().any(|l| l.starts_with("Inst kubelet"))
            && !plan.lines().any(|l| l.starts_with("Remv ")),
        "apt-get full-upgrade:\n{plan}"
    );
    // Asking for the new kubelet by name removes k8s-nokmem (the originals come back).
    let plan = root.simulate(&["install", "kubelet"]);
    assert!(
        plan.lines().any(|l| l.starts_with("Remv k8s-nokmem"))
            && plan
                .lines()
                .any(|l| l.starts_with("Inst kubelet ") && l.contains("(1.21.0-00")),
        "apt-get install kubelet:\n{plan}"
    );
    assert_moves_together(&plan);

    // With a k8s-nokmem built for 1.21 too, full-upgrade moves both together.
    root.publish(&[&helpers, &k1202, &k1210, &nokmem120, &nokmem121]);
    let plan = root.simulate(&["full-upgrade"]);
    assert!(
        plan.lines()
            .any(|l| l.starts_with("Inst k8s-nokmem ") && l.contains("(1.21.0+nokmem"))
            && plan
                .lines()
                .any(|l| l.starts_with("Inst kubelet ") && l.contains("(1.21.0-00")),
        "{plan}"
    );
    assert_moves_together(&plan);
    assert_moves_together(&root.simulate(&["upgrade"]));

    // A patch release of the payload's minor still upgrades.
    root.publish(&[&helpers, &k1202, &k1203, &nokmem120]);
    let plan = root.simulate(&["upgrade"]);
    assert!(
        plan.lines()
            .any(|l| l.starts_with("Inst kubelet ") && l.contains("(1.20.3-00")),
        "{plan}"
    );
    let uu = root.unattended_upgrade().unwrap();
    assert!(
        uu.contains("pkgs that look like they should be upgraded: kubelet"),
        "unattended-upgrade upgrades kubelet 1.20.3:\n{uu}"
    );

    // By hand, dpkg -i unpacks kubelet 1.21 but will not configure it, naming the Breaks.
    let out = root.dpkg_install(&[&k1210]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("k8s-nokmem (1.20.2+nokmem")
            && err.contains("breaks kubelet (>= 1.21~)"),
        "dpkg -i kubelet 1.21: {err}"
    );

    // Nor does this package install next to a kubelet of another minor.
    let other = AptRoot::new();
    let out = other.dpkg_install(&[&helpers, &k1210]);
    assert!(out.status.success(), "{out:?}");
    let out = other.dpkg_install(&[&nokmem120]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("installing k8s-nokmem would break kubelet"),
        "dpkg -i k8s-nokmem 1.20 next to kubelet 1.21: {err}"
    );
}
