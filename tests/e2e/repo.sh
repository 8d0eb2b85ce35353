#!/usr/bin/env bash
# The local, signed apt repository of the end-to-end tests, built with reprepro from
# README's recipe ("An apt repository for the fleet"): contrib/reprepro/distributions.
#
#   tests/e2e/repo.sh init DIR                       throwaway gpg key, empty repository;
#                                                    prints the keyring
#   tests/e2e/repo.sh publish DIR COMPONENT DEB...   put each .deb into COMPONENT and re-sign
#
# The suite is README's `stable`, Origin example-k8s, Label k8s-nokmem: the node allows it
# with contrib/unattended-upgrades/51k8s-nokmem as shipped. One component per kubelet minor
# (kubelet-1.14 ... kubelet-1.20, plus kubelet-1.21 here: the minor the Breaks scenario moves
# the node to); a node's line is `deb [signed-by=...] file:DIR stable kubelet-1.20`.
# reprepro 5.3 keeps one version of a package per component: `publish` of an older version
# (a scenario going back) removes the one there first (`reprepro remove`), which is README's
# way back too.
#
# reprepro runs offline on DIR only (--basedir; its conf, db, dists and pool all in DIR),
# signing with the key in DIR/gnupg; its public part is DIR/e2e-archive-keyring.gpg (for
# `signed-by=`).
set -euo pipefail

KN_PROG=e2e-repo
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/../../scripts/lib/common.sh"

[ $# -ge 2 ] || die "usage: $0 init DIR | publish DIR COMPONENT DEB..."
cmd=$1 dir=$2
shift 2
need_tools gpg:gnupg gpgconf:gpgconf reprepro:reprepro dpkg-deb:dpkg
top=$(cd "$(dirname "$0")/../.." && pwd)
conf=$top/contrib/reprepro/distributions
[ -f "$conf" ] || die "no $conf (README's reprepro recipe)"
suite=$(sed -n 's/^Codename: *//p' "$conf")
[ -n "$suite" ] || die "$conf names no Codename"
# no option or base directory from the environment or a ~/.reprepro
unset REPREPRO_BASE_DIR REPREPRO_CONFIG_DIR REPREPRO_OUT_DIR REPREPRO_DIST_DIR
export GNUPGHOME=$dir/gnupg
# the gpg-agent that signing starts ends with this script
trap '[ -d "$GNUPGHOME" ] && gpgconf --kill gpg-agent 2>/dev/null || true' EXIT

rr() {
    reprepro --basedir "$dir" --confdir "$dir/conf" --silent "$@"
}

init() {
    rm -rf "$dir"
    install -d -m 0700 "$GNUPGHOME"
    install -d "$dir/conf"
    gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
        --quick-generate-key 'k8s-nokmem e2e archive <e2e@k8s-nokmem.invalid>' ed25519 sign never
    gpg --batch --quiet --export >"$dir/e2e-archive-keyring.gpg"
    sed '/^Components:/s/$/ kubelet-1.21/' "$conf" >"$dir/conf/distributions"
    rr export "$suite"
    printf '%s\n' "$dir/e2e-archive-keyring.gpg"
}

publish() { # COMPONENT DEB...
    local component=$1 deb pkg version arch there
    shift
    for deb in "$@"; do
        [ -f "$deb" ] || die "no such .deb: '$deb'"
        pkg=$(dpkg-deb -f "$deb" Package)
        version=$(dpkg-deb -f "$deb" Version)
        arch=$(dpkg-deb -f "$deb" Architecture)
        # shellcheck disable=SC2016 # reprepro's format, not the shell's
        there=$(rr -C "$component" -A "$arch" --list-format '${version}\n' list "$suite" "$pkg")
        if [ "$there" = "$version" ]; then
            log "$pkg $version ($arch) is in $suite $component already"
            continue
        fi
        if [ -n "$there" ]; then
            log "$component: $pkg $there replaced by $version (reprepro remove)"
            rr -C "$component" -A "$arch" remove "$suite" "$pkg"
        fi
        rr -C "$component" includedeb "$suite" "$deb"
        log "published $pkg $version ($arch) in $suite $component"
    done
}

case "$cmd" in
init) init ;;
publish)
    { [ -d "$GNUPGHOME" ] && [ -f "$dir/conf/distributions" ]; } ||
        die "'$dir' is not an initialised repository (run init first)"
    [ $# -ge 2 ] || die "usage: $0 publish DIR COMPONENT DEB..."
    publish "$@"
    ;;
*) die "unknown command '$cmd' (init or publish)" ;;
esac
