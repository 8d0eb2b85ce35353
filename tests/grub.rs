//! The kernel command line with real grub: `k8s-nokmem install --root R` writes the grub
//! drop-in, and Debian's real `grub-mkconfig` (grub-common) runs in a mount namespace
//! (`unshare -m`) over R's `/etc/default` (with a cloud image's `50-cloudimg-settings.cfg`
//! that assigns GRUB_CMDLINE_LINUX_DEFAULT), `/etc/grub.d` with only `00_header` and
//! `10_linux`, and a `/boot` with an empty kernel. The generated `linux` lines carry
//! `cgroup.memory=nokmem` exactly once with the drop-in, and not at all after `remove`.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::node::NodeRoot;

const PARAM: &str = "cgroup.memory=nokmem";
const KERNEL: &str = "vmlinuz-5.4.0-150-generic";

/// Run grub-mkconfig with `etc_default` as /etc/default; returns the generated grub.cfg.
fn grub_mkconfig(etc_default: &Path) -> String {
    let t = tempfile::tempdir().unwrap();
    let grub_d = t.path().join("grub.d");
    let boot = t.path().join("boot");
    fs::create_dir_all(&grub_d).unwrap();
    fs::create_dir_all(boot.join("grub")).unwrap();
    for script in ["00_header", "10_linux"] {
        fs::copy(Path::new("/etc/grub.d").join(script), grub_d.join(script)).unwrap();
    }
    fs::write(boot.join(KERNEL), b"").unwrap();
    let out = t.path().join("grub.cfg");
    let script = format!(
        "set -e\nmount --bind '{}' /etc/default\nmount --bind '{}' /etc/grub.d\n\
         mount --bind '{}' /boot\ngrub-mkconfig -o '{}'\n",
        etc_default.display(),
        grub_d.display(),
        boot.display(),
        out.display()
    );
    common::ok(Command::new("unshare").args(["-m", "sh", "-c", &script]));
    fs::read_to_string(&out).unwrap()
}

/// The normal (not recovery) `linux` lines of a grub.cfg.
fn linux_lines(cfg: &str) -> Vec<String> {
    let lines: Vec<String> = cfg
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("linux") && l.contains(KERNEL) && !l.contains(" single"))
        .map(str::to_string)
        .collect();
    assert!(!lines.is_empty(), "no linux line in:\n{cfg}");
    lines
}

fn count(line: &str) -> usize {
    line.split_whitespace().filter(|a| *a == PARAM).count()
}

#[test]
fn grub_mkconfig_appends_the_parameter_once_and_remove_takes_it_away() {
    if !common::root_or_skip(
        "grub-mkconfig in a mount namespace (run: sudo cargo test --test grub)",
    ) {
        return;
    }
    assert!(
        Path::new("/usr/sbin/grub-mkconfig").exists(),
        "grub-mkconfig is missing: run scripts/install-deps.sh (grub-common)"
    );
    let n = NodeRoot::new();
    n.write(
        "etc/default/grub",
        b"GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=Ubuntu\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"\"\n",
        0o644,
    );
    // what Ubuntu's cloud images ship: it assigns (not appends) the variable
    n.write(
        "etc/default/grub.d/50-cloudimg-settings.cfg",
        b"# Cloud Image specific Grub settings for Generic Cloud Images\n\
          GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\"\nGRUB_TERMINAL=console\n",
        0o644,
    );
    n.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        b"[kernel]\ncmdline = manage\n",
        0o644,
    );
    let log = n.ok(&["install"]);
    assert!(
        log.contains("kernel cmdline: '/etc/default/grub.d/99-k8s-nokmem.cfg' under root"),
        "{log}"
    );
    assert!(n.exists("etc/default/grub.d/99-k8s-nokmem.cfg"));

    let cfg = grub_mkconfig(&n.abs("etc/default"));
    for line in linux_lines(&cfg) {
        assert_eq!(count(&line), 1, "{line}");
        assert!(
            line.contains("console=tty1 console=ttyS0"),
            "appended, not replaced: {line}"
        );
    }

    // already on the command line (GRUB_CMDLINE_LINUX): not added a second time
    n.write(
        "etc/default/grub",
        format!("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"{PARAM}\"\n")
            .as_bytes(),
        0o644,
    );
    let twice = grub_mkconfig(&n.abs("etc/default"));
    for line in linux_lines(&twice) {
        assert_eq!(count(&line), 1, "{line}");
    }

    // the generated grub.cfg is what the rule reads: a 5.4 node without the parameter in
    // /proc/cmdline reboots into it
    n.write("boot/grub/grub.cfg", cfg.as_bytes(), 0o644);
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgroup/5.4-kmem");
    let out = n.run(&[
        "verify",
        "--json",
        "--proc-root",
        node.join("proc").to_str().unwrap(),
        "--cgroup-root",
        node.join("sys/fs/cgroup").to_str().unwrap(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["action"], "reboot", "{json:#}");

    // remove: the drop-in goes, and grub-mkconfig no longer adds the parameter
    n.write(
        "etc/default/grub",
        b"GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"\"\n",
        0o644,
    );
    let log = n.ok(&["remove"]);
    assert!(log.contains("99-k8s-nokmem.cfg' under root"), "{log}");
    assert!(!n.exists("etc/default/grub.d/99-k8s-nokmem.cfg"));
    assert!(n.exists("etc/default/grub.d/50-cloudimg-settings.cfg"));
    let after = grub_mkconfig(&n.abs("etc/default"));
    for line in linux_lines(&after) {
        assert_eq!(count(&line), 0, "{line}");
        assert!(line.contains("console=tty1 console=ttyS0"), "{line}");
    }
}
