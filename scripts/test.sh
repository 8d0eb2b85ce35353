#!/usr/bin/env bash
# The test command (README, .ci/run): on a fresh Debian 12 machine, as root, install what
# the tests need, build every artifact they use (cached under /var/cache/k8s-nokmem, so a
# second run is fast), then run all tests; a test that cannot run (missing artifact, tool or
# root) fails, naming the command that fixes it.
#
#   scripts/test.sh            everything
#   scripts/test.sh --quick    lint and `cargo test` only, artifacts used where present and
#                              tests that cannot run skipped (K8S_NOKMEM_ALLOW_SKIP=1)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
quick=0
case "${1:-}" in
    "") ;;
    --quick) quick=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

start=$(date +%s)
step() { printf '\ntest: === %s (%d s so far)\n' "$*" "$(( $(date +%s) - start ))" >&2; }
# wait_bg PID LOG WHAT: wait for a background build, print its log; exit 1 naming WHAT when
# it failed
wait_bg() {
    if ! wait "$1"; then
        cat "$2" >&2
        echo "test: $3 failed" >&2
        exit 1
    fi
    cat "$2" >&2
    rm -f "$2"
}

if [ "$quick" -eq 0 ]; then
    step "install build and test dependencies"
    scripts/install-deps.sh
fi

step "format and lint"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

if [ "$quick" -eq 0 ]; then
    # The test roots are mostly download and unpack: build them while the payload compiles.
    step "build the test roots in the background (cached)"
    roots_log=$(mktemp)
    # (the qemu guests' base roots too: mmdebstrap, ~10 min cold for arm64)
    (scripts/testbed-root.sh && scripts/testbed-root.sh --arch arm64 &&
        tests/e2e/arm64.sh --base-only && tests/e2e/qemu.sh --base-only) >"$roots_log" 2>&1 &
    roots_pid=$!
    step "build the .debs (payload cached)"
    scripts/build-deb.sh
    # The probes' and rc9's kmem check: the static helper build-deb.sh just built (no
    # separate host release build of the same code).
    host_helper=target/$(case "$(dpkg --print-architecture)" in arm64) echo aarch64 ;; *) echo x86_64 ;; esac)-unknown-linux-musl/release/k8s-nokmem
    if [ -x "$host_helper" ]; then export K8S_NOKMEM_BIN=$top/$host_helper; fi
    # The end-to-end run's kmem-enabled "original" kubelets (amd64, arm64): the payload's
    # source and Go build cache are there now; they build while cargo test runs.
    step "build the end-to-end kubelet packages in the background (cached)"
    e2e_log=$(mktemp)
    (tests/e2e/build-kubelet-debs.sh && tests/e2e/build-kubelet-debs.sh --arch arm64) \
        >"$e2e_log" 2>&1 &
    e2e_pid=$!
    step "build the cgroup probes (cached)"
    scripts/build-probes.sh
    step "build runc v1.0.0-rc9 with and without nokmem (cached)"
    scripts/build-rc9.sh
    step "wait for the test roots"
    wait_bg "$roots_pid" "$roots_log" "building the test roots"
else
    export K8S_NOKMEM_ALLOW_SKIP=1
fi

step "cargo test"
cargo test --locked --no-fail-fast 2>&1

if [ "$quick" -eq 0 ] && [ -x tests/e2e/run.sh ]; then
    step "wait for the end-to-end kubelet packages"
    wait_bg "$e2e_pid" "$e2e_log" \
        "building the end-to-end kubelet packages (tests/e2e/build-kubelet-debs.sh)"
    step "end to end (tests/e2e/run.sh)"
    tests/e2e/run.sh
fi
step "all tests passed"
