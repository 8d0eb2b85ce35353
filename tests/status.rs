//! `k8s-nokmem status` on a node where systemd runs but the system bus cannot be reached
//! says why, with zbus's reason (issue 18 item 3: an error shows its whole cause chain).
//!
//! The helper runs in a mount namespace of its own (`unshare -m`), where a tmpfs on /run
//! holds `/run/systemd/system` (systemd "running", as the helper detects it) and
//! `$DBUS_SYSTEM_BUS_ADDRESS` names a socket that does not exist. Nothing outside that
//! namespace changes; `status` only reads. Needs root (`unshare -m`).

mod common;

use std::process::Command;

#[test]
fn status_shows_why_the_bus_is_unreachable() {
    if !common::root_or_skip("status_shows_why_the_bus_is_unreachable (unshare -m)") {
        return;
    }
    let address = "unix:path=/nonexistent/k8s-nokmem-test-bus";
    let out = common::run(
        Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-ec",
                "mount --make-rprivate /; mount -t tmpfs k8s-nokmem-test /run; \
                 mkdir -p /run/systemd/system; exec \"$0\" status",
                env!("CARGO_BIN_EXE_k8s-nokmem"),
            ])
            .env("DBUS_SYSTEM_BUS_ADDRESS", address)
            .env_remove("RUST_LOG")
            .env_remove("DPKG_ROOT")
            .env_remove("K8S_NOKMEM_LOG_PREFIX"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("unknown: systemd runs but D-Bus is unreachable"))
        .unwrap_or_else(|| {
            panic!("no D-Bus line in the status output:\n{stdout}\nstderr:\n{stderr}")
        });
    // zbus's own reason (the address it tried), and the OS error under it
    let prefix =
        "unknown: systemd runs but D-Bus is unreachable: failed to connect to the system bus: ";
    assert!(
        line.starts_with(prefix)
            && line.contains(address)
            && line.ends_with("No such file or directory (os error 2)"),
        "zbus's reason is missing from the status line:\n{line}\nstatus output:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
}
