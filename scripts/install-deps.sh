#!/usr/bin/env bash
# Install every host tool the build and the tests need, on a fresh Debian 12 machine.
# Idempotent; run as root. Used by scripts/build-deb.sh, scripts/test.sh (so .ci/run) and by
# developers on a new machine. This is the one list of what the build and the tests run:
# tests/tools.rs fails when a test or script calls a tool that is not installed from here.
#
#   scripts/install-deps.sh            install what is missing (a no-op when up to date)
#   scripts/install-deps.sh --force    run every step again
#
# The Debian mirror is the one this machine's apt already uses (scripts/lib/mirror.sh;
# K8S_NOKMEM_MIRROR overrides it).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
KN_PROG=install-deps
# shellcheck source=scripts/lib/common.sh
. "$here/lib/common.sh"

case "${1:-}" in
    ""|--force) ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
esac

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get install); try: sudo $0"

export DEBIAN_FRONTEND=noninteractive
# shellcheck source=scripts/lib/mirror.sh
. "$here/lib/mirror.sh"
mirror_uri=$(mirror)

pkgs=(
    # payload build (gcc with libc6-dev, its Recommends: cgo and the static C test programs;
    # git: source commits)
    gcc libc6-dev git python3 golang-go pkg-config libseccomp-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    libseccomp-dev:arm64 dpkg-dev
    # packaging and Debian's judges
    lintian shellcheck file xz-utils binutils systemd piuparts
    # reproducible builds: scripts/check-reproducible.sh shows a difference with diffoscope
    diffoscope-minimal
    # tests: arm64 under qemu-user, chroots, a booted systemd, tracing, local repositories
    qemu-user-static debootstrap systemd-container strace apt-utils gnupg gpgconf
    prometheus jq
    # tests: a private system bus (dbus-daemon and the stock system-bus policy)
    dbus
    # tests: the kernel command line drop-in (grub-mkconfig) and the fleet rollout (ansible)
    grub-common ansible
    # tests: README's apt repository recipe (reprepro; the e2e repository is built with it),
    # matched by unattended-upgrades' own code
    reprepro unattended-upgrades python3-apt
    # mmdebstrap's Recommends that its foreign-architecture (arm64 guest) build needs at run time
    arch-test
)
# From bookworm-backports: qemu-system-x86 and qemu-system-arm (tests/e2e/qemu.sh, arm64.sh boot
# Debian's kernels under TCG; one qemu-system-common with the preinstalled qemu-utils), mmdebstrap.
bpo_pkgs=(qemu-system-x86 qemu-system-arm qemu-utils mmdebstrap)
cargo_deb_version=3.8.0
rust_targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)

# Up to date already? A stamp keyed on this script and the mirror, and everything present.
stamp=${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}/install-deps.stamp
want=$({ cat "$0" "$here/lib/mirror.sh"; echo "$mirror_uri"; } | sha256sum | cut -c1-16)
all_installed() {
    local status
    status=$(dpkg-query -W -f='${db:Status-Abbrev}\n' "${pkgs[@]}" "${bpo_pkgs[@]}" 2>/dev/null) || return 1
    ! grep -qv '^ii' <<<"$status" || return 1
    cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version" || return 1
    local installed
    installed=$(rustup target list --installed 2>/dev/null) || return 1
    for t in "${rust_targets[@]}"; do grep -qx "$t" <<<"$installed" || return 1; done
}
if [ "${1:-}" != "--force" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && all_installed; then
    log "up to date (stamp $stamp; --force to run every step again)"
    exit 0
fi
start=$(date +%s)

# Debian source packages (runc, kubernetes) are the payload's default source.
src_list=/etc/apt/sources.list.d/k8s-nokmem-src.sources
if [ ! -f "$src_list" ]; then
    log "adding deb-src entries for $mirror_uri in $src_list"
    printf 'Types: deb-src\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror_uri" >"$src_list"
fi

bpo_list=/etc/apt/sources.list.d/k8s-nokmem-backports.sources
if [ ! -f "$bpo_list" ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports from $mirror_uri in $bpo_list"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror_uri" >"$bpo_list"
fi

# arm64 libraries for the static cross build of runc (libseccomp).
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding dpkg architecture arm64"
    dpkg --add-architecture arm64
fi

apt-get update -qq

log "apt-get install ${pkgs[*]}"
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null

log "apt-get install -t bookworm-backports ${bpo_pkgs[*]}"
apt-get install -y -qq --no-install-recommends -t bookworm-backports "${bpo_pkgs[@]}" >/dev/null

# runc's Go dependencies come from Debian's gocode packages (GOPATH build).
log "apt-get build-dep runc"
apt-get build-dep -y -qq runc >/dev/null

# Rust: static musl targets and a pinned cargo-deb.
rustup target add "${rust_targets[@]}" >/dev/null
if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
    log "cargo install cargo-deb $cargo_deb_version"
    cargo install --locked --quiet cargo-deb --version "$cargo_deb_version"
fi
mkdir -p "$(dirname "$stamp")"
printf '%s\n' "$want" >"$stamp"
log "done in $(( $(date +%s) - start )) s"
