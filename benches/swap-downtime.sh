#!/usr/bin/env bash
# Service downtime of `k8s-nokmem install` against the shell baseline (`systemctl stop ...;
# dpkg-divert ...; cp ...; systemctl start ...`) on the same nspawn testbed, 5 alternating
# rounds, 100 MB kubelet + 10 MB runc payload (tests/bench_swap.rs). Prints the medians and
# the ratio. Needs root and the testbed root (scripts/testbed-root.sh); ~1-2 min after the
# release build.
#
# Unlike benches/downtime.sh (small stand-in payload, one systemctl call per unit), this one
# uses real payload sizes, so it shows what staging the copy before the stops saves, and the
# issue's one-line baseline (`systemctl stop kubelet.service docker.service`). Figures
# (2026-11-28, release, 2 shared cores, 5 rounds): baseline 424 ms, install 296 ms, ratio
# 0.70; the helper's steps while services are down: divert 9 + 8 ms, place 0 + 1 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/testbed-root.sh >/dev/null
exec cargo test --release --test bench_swap -- --ignored --nocapture --test-threads=1
