#!/usr/bin/env bash
# Install every host tool the build and the tests need, on a fresh Debian 12 machine.
# Idempotent; run as root. Used by .ci/run and by developers on a new machine.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "must run as root (apt-get install)"; exit 2; }

export DEBIAN_FRONTEND=noninteractive

# Debian source packages (runc, kubernetes) are the payload's default source.
src_list=/etc/apt/sources.list.d/k8s-nokmem-src.sources
if [ ! -f "$src_list" ]; then
    log "adding deb-src entries in $src_list"
    cat >"$src_list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

# qemu-system-x86 from bookworm-backports (tests/e2e/qemu.sh boots Debian's kernel under TCG).
bpo_list=/etc/apt/sources.list.d/k8s-nokmem-backports.sources
if [ ! -f "$bpo_list" ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports in $bpo_list"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' >"$bpo_list"
fi

# arm64 libraries for the static cross build of runc (libseccomp).
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding dpkg architecture arm64"
    dpkg --add-architecture arm64
fi

apt-get update -qq

pkgs=(
    # payload build
    golang-go pkg-config libseccomp-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    libseccomp-dev:arm64 dpkg-dev
    # packaging and Debian's judges
    lintian shellcheck file xz-utils binutils systemd
    # tests: arm64 under qemu-user, chroots, a booted systemd, tracing
    qemu-user-static debootstrap systemd-container strace apt-utils gnupg
    prometheus jq
)
log "apt-get install ${pkgs[*]}"
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null

log "apt-get install -t bookworm-backports qemu-system-x86 qemu-utils"
apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils >/dev/null

# runc's Go dependencies come from Debian's gocode packages (GOPATH build).
log "apt-get build-dep runc"
apt-get build-dep -y -qq runc >/dev/null

# Rust: static musl targets and a pinned cargo-deb.
rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl >/dev/null
cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
    log "cargo install cargo-deb $cargo_deb_version"
    cargo install --locked --quiet cargo-deb --version "$cargo_deb_version"
fi
log "done"
