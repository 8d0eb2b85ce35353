#!/usr/bin/env bash
# Build (or reuse) the Debian bookworm amd64 root that the nspawn tests boot with
# `systemd-nspawn -b` (tests/common/nspawn.rs; see TESTBED.md for the flags).
#
#   scripts/testbed-root.sh            build it unless the cached one is current; print its path
#   scripts/testbed-root.sh --check    exit 0 if the cached root is current, 1 if not
#   scripts/testbed-root.sh --force    rebuild even if current
#   scripts/testbed-root.sh --print    print the path only
#   --arch arm64                       (with any of the above) a minimal arm64 root instead,
#                                      for chroot installs under qemu-user (tests/deb.rs);
#                                      registers qemu-aarch64 with binfmt_misc if needed
#
# Cache: ${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}/testbed/bookworm-amd64, keyed by this
# script's version, the mirror and the package list (the key is in <root>/etc/k8s-nokmem-testbed).
# It is built in a temporary directory next to it and renamed into place at the end, so an
# interrupted build never looks like a cache. Needs root, debootstrap and ~900 MB; ~2-4 min.
set -euo pipefail

# Bump when the customisation below changes (the key changes, the next run rebuilds).
version=1
suite=bookworm
arch=amd64
KN_PROG=testbed-root
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
# shellcheck source=scripts/lib/mirror.sh
. "$(dirname "$0")/lib/mirror.sh"
mirror=$(mirror)  # the mirror apt uses here; K8S_NOKMEM_MIRROR overrides
packages=(
    systemd systemd-sysv dbus docker.io busybox-static iproute2 procps
    unattended-upgrades apt-utils strace ca-certificates gpgv conntrack iptables
    util-linux mount less
)

cache=${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}/testbed
name=$suite-$arch
root=$cache/$name
stamp_rel=etc/k8s-nokmem-testbed

key() {
    printf '%s\n' "version=$version" "suite=$suite" "arch=$arch" "mirror=$mirror" \
        "packages=${packages[*]}" | sha256sum | cut -c1-16
}

current() {
    [ -f "$root/$stamp_rel" ] && grep -qx "key=$(key)" "$root/$stamp_rel"
}

mode=build
while [ $# -gt 0 ]; do
    case "$1" in
        --check) mode=check ;;
        --force) mode=force ;;
        --print) mode=print ;;
        --arch)
            arch=${2:-}
            shift
            case "$arch" in
                amd64) ;;
                # dpkg and its maintainer-script tools only: nothing boots this root.
                arm64) packages=(init-system-helpers) ;;
                *) die "--arch '$arch': expected amd64 or arm64" ;;
            esac
            name=$suite-$arch
            root=$cache/$name
            ;;
        -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done

case "$mode" in
    print) printf '%s\n' "$root"; exit 0 ;;
    check) current; exit ;;
    build) if current; then log "up to date: $root"; printf '%s\n' "$root"; exit 0; fi ;;
    force) ;;
esac

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap)"
need_tools debootstrap:debootstrap systemctl:systemd

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.$name.build.XXXXXX")
cleanup() {
    local rc=$?
    if [ -n "${tmp:-}" ] && [ -d "$tmp" ]; then
        log "removing unfinished build $tmp"
        rm -rf --one-file-system "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$arch" != amd64 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # debootstrap's second stage runs arm64 binaries: qemu-user via binfmt_misc.
    [ -e /proc/sys/fs/binfmt_misc/register ] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    /lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf ||
        die "cannot register qemu-aarch64 with binfmt_misc (apt-get install qemu-user-static)"
fi

started=$(date +%s)
include=$(IFS=,; printf '%s' "${packages[*]}")
log "debootstrap $suite $arch from $mirror into $tmp (log: $tmp.debootstrap.log)"
if ! debootstrap --variant=minbase --arch="$arch" --include="$include" \
    "$suite" "$tmp" "$mirror" >"$tmp.debootstrap.log" 2>&1; then
    tail -n 30 "$tmp.debootstrap.log" >&2 || true
    die "debootstrap failed; full log kept at $tmp.debootstrap.log"
fi
rm -f "$tmp.debootstrap.log"

if [ "$arch" = amd64 ]; then
log "customising"
printf 'testbed\n' >"$tmp/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 testbed\n::1 localhost\n' >"$tmp/etc/hosts"
# systemd makes a machine id at each boot; an empty file keeps it transient
: >"$tmp/etc/machine-id"
rm -f "$tmp/var/lib/dbus/machine-id"

# No background apt runs: tests run apt and unattended-upgrade themselves.
systemctl --root="$tmp" mask --quiet \
    apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer 2>/dev/null || true

# The host's cgroup v1 controllers are mounted read-only inside nspawn; dockerd, runc and
# kubelet need them writable. This runs before anything that creates cgroups.
install -d "$tmp/usr/local/sbin"
cat >"$tmp/usr/local/sbin/testbed-cgroup-rw" <<'SH'
#!/bin/sh
# Remount every read-only cgroup v1 hierarchy read-write (k8s-nokmem testbed).
set -eu
while read -r _dev mnt fstype opts _rest; do
    [ "$fstype" = cgroup ] || continue
    case ",$opts," in
        *,ro,*) mount -o remount,bind,rw "$mnt" && echo "remounted $mnt rw" ;;
    esac
done </proc/self/mounts
SH
chmod 0755 "$tmp/usr/local/sbin/testbed-cgroup-rw"
cat >"$tmp/etc/systemd/system/testbed-cgroup-rw.service" <<'UNIT'
[Unit]
Description=k8s-nokmem testbed: make the host's cgroup v1 controllers writable
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target containerd.service docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/testbed-cgroup-rw

[Install]
WantedBy=sysinit.target
UNIT
systemctl --root="$tmp" enable --quiet testbed-cgroup-rw.service

# The share the harness binds at /mnt/share
install -d "$tmp/mnt/share"
fi

# The apt cache stays small.
apt_lists=$tmp/var/lib/apt/lists
find "$apt_lists" -maxdepth 1 -type f ! -name lock -delete 2>/dev/null || true
rm -f "$tmp"/var/cache/apt/archives/*.deb

{
    printf 'key=%s\n' "$(key)"
    printf 'version=%s\nsuite=%s\narch=%s\nmirror=%s\n' "$version" "$suite" "$arch" "$mirror"
    printf 'packages=%s\n' "${packages[*]}"
    printf 'built=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$tmp/$stamp_rel"

if [ -e "$root" ]; then
    old=$(mktemp -d "$cache/.$name.old.XXXXXX")
    log "replacing the previous root (moved to $old, then deleted)"
    mv "$root" "$old/root"
    rm -rf --one-file-system "$old"
fi
mv "$tmp" "$root"
tmp=
log "built $root in $(($(date +%s) - started)) s"
printf '%s\n' "$root"
