#!/usr/bin/env bash
# End-to-end test of k8s-nokmem on a booted node (issue 6): a Debian bookworm root booted
# with systemd-nspawn (systemd as PID 1, dockerd, a real kubelet running a static pod), the
# .deb installed from a local signed apt repository, upgraded by unattended-upgrade, the
# kubelet package upgraded underneath, removed, purged, reinstalled, rebooted, and dpkg
# killed -9 in the middle of the helper's transaction. See --help.
set -euo pipefail

KN_PROG=e2e
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/../../scripts/lib/common.sh"

usage() {
    cat <<'EOF'
usage: tests/e2e/run.sh [--keep]

Builds what the scenarios need (cached under ${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}):
  - the kmem-enabled "original" kubelet .debs (tests/e2e/build-kubelet-debs.sh);
  - the testbed root (scripts/testbed-root.sh);
  - the k8s-nokmem amd64 .deb (target/debian/, scripts/build-deb.sh --arch amd64 when
    missing) and four repacked later versions of it (tests/e2e/make-variants.sh): the same
    payload; a changed runc; runc and the shipped conffile changed; the conffile changed again;
  - a static pause binary from tests/e2e/images/pause.c;
then runs the scenarios (tests/e2e/main.rs, `cargo test --test e2e -- --ignored`) and,
beside them in the background (their output shown after the scenarios'), the real-kernel
boots under qemu (tests/e2e/qemu.sh) and the booted arm64 node (tests/e2e/arm64.sh: the
arm64 .deb from $K8S_NOKMEM_DEB_DIR or target/debian, scripts/build-deb.sh --arch arm64),
which print one PASS/FAIL line each. Exit status: 0 when every scenario passed, 1 otherwise,
2 when something could not be built.

  --keep   keep the testbed directory (upper layer, logs) and the artifacts

Needs root, systemd-nspawn, gcc, gpg, reprepro (scripts/install-deps.sh).
Every process, mount and cgroup the run creates is removed at the end, also on failure.
EOF
}

keep=0
case "${1:-}" in
"") ;;
--keep) keep=1 ;;
-h | --help) usage; exit 0 ;;
*) die "unknown argument '$1' (try --help)" ;;
esac

top=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$top"
[ "$(id -u)" -eq 0 ] || die "must run as root (systemd-nspawn, mounts, cgroups)"
need_tools gcc gpg reprepro dpkg-deb systemd-nspawn nsenter cargo

t0=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/k8s-nokmem-e2e.XXXXXX")

# The Rust runner writes the testbed it boots into $work/testbed.env (dir=, pid=). When
# the runner is killed before its Drop guards run, tear that testbed down from here.
# shellcheck source=tests/e2e/testbed.sh
. "$top/tests/e2e/testbed.sh"
vm_pid=
cleanup() {
    local rc=$?
    # the background boots (their own process group): their EXIT traps stop qemu and clean up
    if [ -n "$vm_pid" ] && kill -0 "$vm_pid" 2>/dev/null; then
        kill -TERM -- "-$vm_pid" 2>/dev/null || true
        wait "$vm_pid" 2>/dev/null || true
    fi
    tb_reap "$work" "$keep"
    if [ "$keep" -eq 1 ]; then
        log "kept the artifacts in $work"
    else
        rm -rf "$work"
    fi
    log "total $(($(date +%s) - t0)) s"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { log "[$(($(date +%s) - t0)) s] $*"; }

step "original kubelet .debs (cached)"
debs=$(tests/e2e/build-kubelet-debs.sh) || die "tests/e2e/build-kubelet-debs.sh failed"
cp "$debs"/kubelet_*_amd64.deb "$work/"

step "testbed root (cached)"
scripts/testbed-root.sh >/dev/null || die "scripts/testbed-root.sh failed"

step "k8s-nokmem amd64 .deb"
# the newest target/debian/k8s-nokmem_*_amd64.deb, or nothing
newest_deb() {
    find target/debian -maxdepth 1 -name 'k8s-nokmem_*_amd64.deb' -printf '%T@ %p\n' |
        sort -rn | head -n1 | cut -d' ' -f2-
}
deb=$(newest_deb 2>/dev/null) || true
if [ -z "$deb" ]; then
    log "no target/debian/k8s-nokmem_*_amd64.deb: scripts/build-deb.sh --arch amd64"
    scripts/build-deb.sh --arch amd64 >&2 || die "scripts/build-deb.sh --arch amd64 failed"
    deb=$(newest_deb)
fi
[ -n "$deb" ] || die "no k8s-nokmem .deb in target/debian"
log "using $deb ($(dpkg-deb -f "$deb" Version))"
tests/e2e/make-variants.sh "$deb" "$work" || die "tests/e2e/make-variants.sh failed"

step "pause binary"
gcc -static -Os -Wall -Wextra -Werror -o "$work/pause" tests/e2e/images/pause.c ||
    die "gcc -static failed on tests/e2e/images/pause.c (apt-get install gcc libc6-dev)"

# The qemu boots keep one core busy (TCG, -smp 1) for minutes; the scenarios mostly wait on
# the booted container. So the boots run in the background, one after the other, while the
# scenarios run; their output is shown after the scenarios'. setsid: their own process group,
# which cleanup() stops on an early exit.
step "in the background: a real kernel under qemu TCG (tests/e2e/qemu.sh), then a booted arm64 node (tests/e2e/arm64.sh)"
# boot DIR NAME COMMAND...: COMMAND's output in DIR/NAME.log, "STATUS SECONDS" in DIR/NAME.rc
boot() {
    local t=$SECONDS rc=0
    "${@:3}" >"$1/$2.log" 2>&1 || rc=$?
    echo "$rc $((SECONDS - t))" >"$1/$2.rc"
}
export -f boot
# shellcheck disable=SC2016 # expanded by the inner shell
setsid bash -c 'boot "$1" qemu tests/e2e/qemu.sh "$2"; boot "$1" arm64 tests/e2e/arm64.sh' vms "$work" "$deb" &
vm_pid=$!

step "scenarios (cargo test --test e2e -- --ignored)"
rc=0
E2E_ARTIFACTS=$work K8S_NOKMEM_KEEP_TMP=$keep \
    cargo test --locked --test e2e -- --ignored --nocapture --test-threads=1 || rc=$?

step "wait for the qemu boots"
wait "$vm_pid" || true
vm_pid=
for vm in "qemu:a real kernel under qemu TCG (tests/e2e/qemu.sh)" \
    "arm64:a booted arm64 node under qemu TCG (tests/e2e/arm64.sh)"; do
    name=${vm%%:*}
    read -r vrc secs 2>/dev/null <"$work/$name.rc" || { vrc=1; secs="?"; }
    log "--- ${vm#*:}: exit $vrc in $secs s"
    cat "$work/$name.log" >&2 2>/dev/null || true
    [ "$vrc" -eq 0 ] || rc=1
done
if [ "$rc" -ne 0 ]; then
    log "FAILED: at least one scenario failed (see the FAIL lines above)"
    exit 1
fi
log "all scenarios passed"
