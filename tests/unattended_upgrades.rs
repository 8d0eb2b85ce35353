//! contrib/unattended-upgrades as an operator uses it: the `[services] apply = reboot`
//! example is a drop-in (never an edited conffile, which unattended-upgrades would hold back
//! on the first release that changes it; see tests/e2e/main.rs for the real
//! unattended-upgrade run), shipped under /usr/share/doc and copied to conf.d/.

mod common;

use std::fs;

use common::node::{stderr, NodeRoot};

const SOURCE: &str = "contrib/unattended-upgrades/50-unattended-upgrades.conf";
const SHIPPED_AS: &str =
    "usr/share/doc/k8s-nokmem/examples/unattended-upgrades/50-unattended-upgrades.conf";
const INSTALL_AS: &str = "/etc/k8s-nokmem/conf.d/50-unattended-upgrades.conf";

fn read(rel: &str) -> String {
    fs::read_to_string(common::repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

#[test]
fn the_unattended_upgrades_example_is_a_dropin_that_the_package_ships_and_the_helper_reads() {
    let text = read(SOURCE);
    let first = text.lines().next().unwrap_or("");
    assert!(
        first.starts_with(&format!("# {INSTALL_AS}:")),
        "{SOURCE} must say in its first line where it goes ({INSTALL_AS}), says: {first}"
    );
    let asset = format!("[\"{SOURCE}\", \"{SHIPPED_AS}\", \"644\"]");
    assert!(
        read("Cargo.toml").contains(&asset),
        "Cargo.toml must ship {SOURCE} as /{SHIPPED_AS}: no asset line {asset}"
    );
    // README and the apt snippet send the operator to the drop-in, not to the conffile
    let readme = read("README.md").replace("\n  ", " ");
    for want in [SOURCE, INSTALL_AS] {
        assert!(
            readme.contains(&format!("`{want}`")),
            "README.md must name `{want}`"
        );
    }
    assert!(
        read("contrib/unattended-upgrades/51k8s-nokmem").contains(INSTALL_AS),
        "contrib/unattended-upgrades/51k8s-nokmem must name the drop-in {INSTALL_AS}"
    );

    // copied next to the shipped conffile, the helper takes apply from it
    let n = NodeRoot::new();
    n.write(
        "etc/k8s-nokmem/k8s-nokmem.conf",
        read("debian/k8s-nokmem.conf").as_bytes(),
        0o644,
    );
    n.write(&INSTALL_AS[1..], text.as_bytes(), 0o644);
    let out = n.run(&["config"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .position(|l| l.trim() == "apply = reboot")
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{SOURCE} has no line 'apply = reboot'"));
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("[services] apply = reboot ")
                && l.ends_with(&format!("# {INSTALL_AS}:{line}"))),
        "`k8s-nokmem config` must show apply = reboot from {INSTALL_AS}:{line}:\n{shown}"
    );
}
