#!/usr/bin/env bash
# The package and the node's kubelet package move together: k8s-nokmem carrying kubelet
# X.Y.Z declares Breaks on the kubelet packages (`kubelet` from the Kubernetes apt
# repository, Debian's `kubernetes-node`) of every other minor, so `apt-get upgrade` and
# unattended-upgrades keep a kubelet minor upgrade back instead of landing it at
# /usr/bin/kubelet.distrib underneath the diversion, where it would never run.
#
#   kubelet-breaks.sh VERSION        print the Breaks value for payload kubelet VERSION
#   kubelet-breaks.sh VERSION DEB    set that Breaks field in DEB's control (in place)
#
# cargo-deb 3.8 reads `breaks` only from Cargo.toml (no command-line override), so
# scripts/build-deb.sh sets the field on each built .deb with deb-control-field.py: only its
# control member is rebuilt (same entries, order, modes and times).
set -euo pipefail

KN_PROG=kubelet-breaks
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/common.sh"

breaks() { # VERSION
    local major minor
    [[ $1 =~ ^v?([0-9]+)\.([0-9]+)(\.|$) ]] ||
        die "kubelet version '$1' is not MAJOR.MINOR[.PATCH] (from the payload MANIFEST)"
    major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
    local lo="$major.$minor" hi="$major.$((minor + 1))~" out=() pkg
    for pkg in kubelet kubernetes-node; do
        out+=("$pkg (<< $lo)" "$pkg (>= $hi)")
    done
    local IFS=,
    printf '%s\n' "${out[*]}" | sed 's/,/, /g'
}

{ [ $# -ge 1 ] && [ $# -le 2 ]; } || die "usage: kubelet-breaks.sh VERSION [DEB]"
value=$(breaks "$1")
if [ $# -eq 1 ]; then
    printf '%s\n' "$value"
    exit 0
fi

# Only the control member is rebuilt, the same way as Built-Using (deb-control-field.py):
# data.tar and the ar headers stay byte for byte as cargo-deb wrote them.
[ -f "$2" ] || die "no such package '$2'"
exec python3 "$(dirname "$0")/deb-control-field.py" "$2" Breaks "$value"
