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
# scripts/build-deb.sh sets the field on the built .deb with dpkg-deb (data unchanged;
# SOURCE_DATE_EPOCH, when set, is honoured by dpkg-deb as by cargo-deb).
set -euo pipefail

die() { printf 'kubelet-breaks: error: %s\n' "$*" >&2; exit 2; }

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

deb=$2
[ -f "$deb" ] || die "no such package '$deb'"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -R "$deb" "$tmp/pkg"
# Reproducible: without SOURCE_DATE_EPOCH, the newest mtime of the packaged files stands in.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(find "$tmp/pkg" -path "$tmp/pkg/DEBIAN" -prune -o -type f -printf '%T@\n' |
        sort -n | tail -n1 | cut -d. -f1)
fi
export SOURCE_DATE_EPOCH
# Replace any Breaks field (and its continuation lines), then add ours after Depends
# (at the end when there is no Depends).
awk -v breaks="Breaks: $value" '
    /^Breaks:/ { skip = 1; next }
    skip && /^[ \t]/ { next }
    { skip = 0; print }
    /^Depends:/ { print breaks; done = 1 }
    END { if (!done) print breaks }' "$tmp/pkg/DEBIAN/control" >"$tmp/control"
cat "$tmp/control" >"$tmp/pkg/DEBIAN/control"
compressor=$(ar t "$deb" | sed -n 's/^data\.tar\.\{0,1\}//p')
dpkg-deb --root-owner-group -Z"${compressor:-xz}" -b "$tmp/pkg" "$tmp/new.deb" >/dev/null
mv "$tmp/new.deb" "$deb"
printf 'kubelet-breaks: %s: Breaks: %s\n' "$deb" "$value" >&2
