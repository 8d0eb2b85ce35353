//! Benchmark, not a timed test (`#[ignore]`; run by benches/swap-downtime.sh): service
//! downtime of `k8s-nokmem install` against the shell baseline
//! (`systemctl stop ...; dpkg-divert ...; cp ...; systemctl start ...`) on the same booted
//! nspawn testbed, alternating rounds. Downtime is measured by systemd itself: from the
//! first `ActiveExitTimestampMonotonic` to the last `ActiveEnterTimestampMonotonic` of
//! kubelet.service and docker.service. Payload: a 100 MB kubelet and a 10 MB runc (stand-in
//! scripts padded to real sizes). Prints the medians and the ratio; asserts only that every
//! round swapped and restored.

#[path = "common/nspawn.rs"]
mod nspawn;

use std::time::Instant;

use sha2::{Digest, Sha256};

const HELPER: &str = "/usr/sbin/k8s-nokmem";
const UNITS: [&str; 2] = ["kubelet.service", "docker.service"];
const ROUNDS: usize = 5;

const BASELINE: &str = "set -e
systemctl stop kubelet.service docker.service
dpkg-divert --package k8s-nokmem --add --rename --divert /usr/bin/kubelet.distrib /usr/bin/kubelet >/dev/null
dpkg-divert --package k8s-nokmem --add --rename --divert /usr/sbin/runc.distrib /usr/sbin/runc >/dev/null
cp /usr/lib/k8s-nokmem/kubelet /usr/bin/kubelet
cp /usr/lib/k8s-nokmem/runc /usr/sbin/runc
systemctl start docker.service kubelet.service
";

const BASELINE_UNDO: &str = "set -e
systemctl stop kubelet.service docker.service
rm -f /usr/bin/kubelet /usr/sbin/runc
dpkg-divert --package k8s-nokmem --remove --rename --divert /usr/bin/kubelet.distrib /usr/bin/kubelet >/dev/null
dpkg-divert --package k8s-nokmem --remove --rename --divert /usr/sbin/runc.distrib /usr/sbin/runc >/dev/null
systemctl start docker.service kubelet.service
";

/// A stand-in script padded with a trailing comment to `size` bytes (sh never reads it).
fn padded(script: &str, size: usize) -> Vec<u8> {
    let mut v = script.as_bytes().to_vec();
    v.push(b'#');
    v.resize(size - 1, b'x');
    v.push(b'\n');
    v
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Downtime in µs of the last swap: first ActiveExit to last ActiveEnter.
fn downtime_us(tb: &nspawn::Testbed) -> u64 {
    let mut exit = u64::MAX;
    let mut enter: u64 = 0;
    for unit in UNITS {
        let p = tb.unit_props(
            unit,
            &[
                "ActiveState",
                "ActiveExitTimestampMonotonic",
                "ActiveEnterTimestampMonotonic",
            ],
        );
        assert_eq!(p["ActiveState"], "active", "{unit}\n{}", tb.journal(unit));
        exit = exit.min(p["ActiveExitTimestampMonotonic"].parse().unwrap());
        enter = enter.max(p["ActiveEnterTimestampMonotonic"].parse().unwrap());
    }
    enter.saturating_sub(exit)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: run benches/swap-downtime.sh"]
fn install_downtime_against_the_shell_baseline() {
    let Some(root) = nspawn::root_or_skip("install_downtime_against_the_shell_baseline") else {
        return;
    };
    let mut tb = nspawn::Testbed::new(&root);
    nspawn::write_stand_in_services(&tb);
    let kubelet = padded("#!/bin/sh\nexec sleep 2000001\n", 100 << 20);
    let runc = padded(
        "#!/bin/sh\necho 'runc version 1.1.5+nokmem'\nexit 0\n",
        10 << 20,
    );
    tb.write("/usr/lib/k8s-nokmem/kubelet", &kubelet, 0o755);
    tb.write("/usr/lib/k8s-nokmem/runc", &runc, 0o755);
    tb.write(
        "/usr/lib/k8s-nokmem/MANIFEST",
        format!(
            "[payload]\narch = amd64\n[runc]\nfile = runc\nversion = 1.1.5\nsize = {}\nsha256 = {}\n\
             [kubelet]\nfile = kubelet\nversion = 1.20.2\nsize = {}\nsha256 = {}\n",
            runc.len(),
            sha256(&runc),
            kubelet.len(),
            sha256(&kubelet)
        ),
        0o644,
    );
    tb.write(
        "/etc/k8s-nokmem/k8s-nokmem.conf",
        "[services]\ntimeout = 30s\n",
        0o644,
    );
    tb.copy_in(env!("CARGO_BIN_EXE_k8s-nokmem"), HELPER, 0o755);
    tb.boot();
    // warm the page cache for both: the payload is read in either case
    tb.sh_ok("cat /usr/lib/k8s-nokmem/kubelet /usr/lib/k8s-nokmem/runc >/dev/null");

    let (mut base, mut ours, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        tb.sh_ok(BASELINE);
        let b = downtime_us(&tb);
        assert_eq!(sha256(&tb.read("/usr/bin/kubelet")), sha256(&kubelet));
        tb.sh_ok(BASELINE_UNDO);

        let t0 = Instant::now();
        let out = tb.run(&[HELPER, "install"]);
        let w = t0.elapsed().as_micros() as u64;
        assert!(out.status.success(), "{}", nspawn::show(&out));
        if round == 1 {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        let o = downtime_us(&tb);
        assert_eq!(sha256(&tb.read("/usr/bin/kubelet")), sha256(&kubelet));
        let out = tb.run(&[HELPER, "remove"]);
        assert!(out.status.success(), "{}", nspawn::show(&out));
        assert_eq!(
            sha256(&tb.read("/usr/bin/kubelet")),
            sha256(nspawn::ORIG_KUBELET)
        );

        eprintln!(
            "round {round}: downtime baseline {} ms, k8s-nokmem {} ms (helper wall time {} ms)",
            b / 1000,
            o / 1000,
            w / 1000
        );
        base.push(b);
        ours.push(o);
        wall.push(w);
    }
    let (b, o, w) = (median(base), median(ours), median(wall));
    println!(
        "swap downtime, median of {ROUNDS}: shell baseline {:.1} ms, k8s-nokmem install {:.1} ms, \
         ratio {:.2}, difference {:+.1} ms; helper wall time {:.1} ms",
        b as f64 / 1000.0,
        o as f64 / 1000.0,
        o as f64 / b as f64,
        (o as f64 - b as f64) / 1000.0,
        w as f64 / 1000.0
    );
}
