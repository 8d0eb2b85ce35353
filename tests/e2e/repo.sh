#!/usr/bin/env bash
# A local, signed apt repository for the end-to-end test (flat layout, one suite).
#
#   tests/e2e/repo.sh init DIR            throwaway gpg key, empty index; prints the keyring
#   tests/e2e/repo.sh publish DIR DEB...  add the .debs (older versions stay) and re-sign
#
# DIR/dists/e2e/{Release,Release.gpg,InRelease} and main/binary-ARCH/Packages (ARCH:
# $E2E_REPO_ARCH, default amd64; tests/e2e/arm64.sh sets arm64) are made
# by apt-ftparchive; the key lives in DIR/gnupg and its public part in
# DIR/e2e-archive-keyring.gpg (for `signed-by=`). The Release file says
# Origin: k8s-nokmem-e2e, Label: k8s-nokmem-e2e, Suite/Codename: e2e: unattended-upgrades
# is configured with that origin in the test.
set -euo pipefail

log() { printf 'e2e-repo: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

[ $# -ge 2 ] || die "usage: $0 init DIR | publish DIR DEB..."
cmd=$1 dir=$2
shift 2
for t in gpg apt-ftparchive; do
    command -v "$t" >/dev/null || die "'$t' not found (apt-get install gnupg apt-utils)"
done
export GNUPGHOME=$dir/gnupg
suite=e2e
arch=${E2E_REPO_ARCH:-amd64}

init() {
    rm -rf "$dir"
    install -d -m 0700 "$GNUPGHOME"
    install -d "$dir/pool" "$dir/dists/$suite/main/binary-$arch"
    gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
        --quick-generate-key 'k8s-nokmem e2e archive <e2e@k8s-nokmem.invalid>' ed25519 sign never
    gpg --batch --quiet --export >"$dir/e2e-archive-keyring.gpg"
    index
    printf '%s\n' "$dir/e2e-archive-keyring.gpg"
}

index() {
    local rel=$dir/dists/$suite
    (cd "$dir" && apt-ftparchive packages pool) >"$rel/main/binary-$arch/Packages"
    gzip -9nc "$rel/main/binary-$arch/Packages" >"$rel/main/binary-$arch/Packages.gz"
    rm -f "$rel/Release" "$rel/Release.gpg" "$rel/InRelease"
    apt-ftparchive \
        -o APT::FTPArchive::Release::Origin=k8s-nokmem-e2e \
        -o APT::FTPArchive::Release::Label=k8s-nokmem-e2e \
        -o APT::FTPArchive::Release::Suite=$suite \
        -o APT::FTPArchive::Release::Codename=$suite \
        -o APT::FTPArchive::Release::Architectures="$arch" \
        -o APT::FTPArchive::Release::Components=main \
        release "$rel" >"$rel/Release.tmp"
    mv "$rel/Release.tmp" "$rel/Release"
    gpg --batch --quiet --yes --armor --detach-sign -o "$rel/Release.gpg" "$rel/Release"
    gpg --batch --quiet --yes --clearsign -o "$rel/InRelease" "$rel/Release"
}

case "$cmd" in
init) init ;;
publish)
    [ -d "$GNUPGHOME" ] || die "'$dir' is not an initialised repository (run init first)"
    for deb in "$@"; do
        [ -f "$deb" ] || die "no such .deb: '$deb'"
        cp "$deb" "$dir/pool/"
        log "published $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
    done
    index
    ;;
*) die "unknown command '$cmd' (init or publish)" ;;
esac
