#!/usr/bin/env bash
# Containers killed by an upgrade of the runc payload with [services] apply = restart, auto
# (issue 17, the default) and reboot (issue 11: goal 0), each on every kernel case, on the
# e2e node of tests/e2e/main.rs: the testbed root booted with systemd-nspawn, dockerd, a
# real kubelet 1.20 running N static pods, the .deb installed from a local signed apt
# repository.
#
#   benches/upgrade-kills.sh [--pods N] [--keep]
#
# For each kernel case and mode: install k8s-nokmem v1 (apply = reboot: no kill), wait for every
# pod, set the mode and the kernel case, snapshot `docker ps`, `apt-get install
# k8s-nokmem=v3` (v3: the same .deb with a changed runc, tests/e2e/make-variants.sh), wait
# 10 s, count the containers of the snapshot that no longer run and whether reboot-required
# was flagged, then wait until every pod runs again. The kernel cases: this node's kernel,
# and the recorded nodes of tests/fixtures/cgroup that [verify] proc-root/cgroup-root point
# the helper at (4.4 with a clean kubepods, 4.4 with a kmem-active kubepods, 5.4 without and
# with cgroup.memory=nokmem, cgroup v2 only); the docker restarted or not is this node's.
# Prints one `bench:` line per run and a table (kernel case | restart | auto | reboot). The
# test fails when reboot kills a container, when auto kills one anywhere but on the clean
# 4.4 node (where it restarts, as restart does), or flags a reboot on the 5.4 nokmem or the
# cgroup v2 node.
#
# Artifacts as tests/e2e/run.sh builds them: the original kubelet .debs
# (tests/e2e/build-kubelet-debs.sh, cached), the testbed root (scripts/testbed-root.sh,
# cached), the newest k8s-nokmem_*_amd64.deb in $K8S_NOKMEM_DEB_DIR or target/debian/
# (scripts/build-deb.sh --arch amd64), a static pause binary. Needs root. Every process,
# mount and cgroup it creates is removed at the end, also on failure.
set -euo pipefail

pods=5
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
    --pods) pods=${2:?--pods N}; shift ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "upgrade-kills: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$pods" in '' | *[!0-9]* | 0) echo "upgrade-kills: --pods '$pods' is not a positive number" >&2; exit 2 ;; esac

top=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$top"
KN_PROG=upgrade-kills
# shellcheck source=scripts/lib/common.sh
. "$top/scripts/lib/common.sh"
[ "$(id -u)" -eq 0 ] || die "must run as root (systemd-nspawn, mounts, cgroups)"
need_tools gcc gpg reprepro dpkg-deb systemd-nspawn nsenter cargo

work=$(mktemp -d "${TMPDIR:-/tmp}/k8s-nokmem-upgrade-kills.XXXXXX")
# the Rust runner writes the testbed it boots into $work/testbed.env (dir=, pid=): tear it
# down from here when the runner is killed before its Drop guards run
# shellcheck source=tests/e2e/testbed.sh
. "$top/tests/e2e/testbed.sh"
cleanup() {
    local rc=$?
    tb_reap "$work" "$keep"
    if [ "$keep" -eq 1 ]; then log "kept $work"; else rm -rf "$work"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

debs=$(tests/e2e/build-kubelet-debs.sh) || die "tests/e2e/build-kubelet-debs.sh failed"
cp "$debs"/kubelet_*_amd64.deb "$work/"
scripts/testbed-root.sh >/dev/null || die "scripts/testbed-root.sh failed"
dir=${K8S_NOKMEM_DEB_DIR:-target/debian}
deb=$(find "$dir" -maxdepth 1 -name 'k8s-nokmem_*_amd64.deb' -printf '%T@ %p\n' 2>/dev/null |
    sort -rn | head -n1 | cut -d' ' -f2-) || true
[ -n "$deb" ] || die "no k8s-nokmem_*_amd64.deb in $dir (scripts/build-deb.sh --arch amd64)"
log "using $deb ($(dpkg-deb -f "$deb" Version)), $pods pods"
tests/e2e/make-variants.sh "$deb" "$work" || die "tests/e2e/make-variants.sh failed"
gcc -static -Os -Wall -Wextra -Werror -o "$work/pause" tests/e2e/images/pause.c ||
    die "gcc -static failed on tests/e2e/images/pause.c (apt-get install gcc libc6-dev)"

E2E_ARTIFACTS=$work E2E_BENCH=upgrade-kills E2E_BENCH_PODS=$pods K8S_NOKMEM_KEEP_TMP=$keep \
    cargo test --locked --test e2e -- --ignored --exact upgrade_kills --nocapture
