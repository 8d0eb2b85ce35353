#!/usr/bin/env bash
# Service downtime of `k8s-nokmem install` against the shell baseline (`systemctl stop ...;
# dpkg-divert ...; cp ...; systemctl start ...`) on the same nspawn testbed, 5 alternating
# rounds, 100 MB kubelet + 10 MB runc payload (tests/bench_swap.rs). Prints the medians and
# the ratio. Needs root and the testbed root (scripts/testbed-root.sh); ~1-2 min.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/testbed-root.sh >/dev/null
exec cargo test --release --test bench_swap -- --ignored --nocapture --test-threads=1
