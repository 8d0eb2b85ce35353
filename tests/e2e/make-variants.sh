#!/usr/bin/env bash
# Later versions of a built k8s-nokmem .deb, for the upgrade scenarios of the e2e test:
#
#   tests/e2e/make-variants.sh DEB OUTDIR
#
# writes OUTDIR/k8s-nokmem-v1.deb (DEB itself), OUTDIR/k8s-nokmem-v2.deb (version
# <v>+e2e2, the same payload: an upgrade must restart nothing) and OUTDIR/k8s-nokmem-v3.deb
# (version <v>+e2e3, runc changed: 16 bytes appended to the ELF, MANIFEST sha256/size and
# DEBIAN/md5sums updated: an upgrade must restart docker.service only).
set -euo pipefail

log() { printf 'e2e-variants: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
[ $# -eq 2 ] || die "usage: $0 DEB OUTDIR"
deb=$1 out=$2
[ -f "$deb" ] || die "no such .deb: '$deb'"
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/e2e-variants.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

version=$(dpkg-deb -f "$deb" Version)
cp "$deb" "$out/k8s-nokmem-v1.deb"

# repack VARIANT NEWVERSION [runc]: unpack DEB, set the version, optionally change runc.
repack() {
    local name=$1 ver=$2 what=${3:-} dir=$tmp/$1 manifest size sha
    dpkg-deb -R "$deb" "$dir"
    sed -i "s/^Version: .*/Version: $ver/" "$dir/DEBIAN/control"
    if [ "$what" = runc ]; then
        printf 'k8s-nokmem-e2e3\n' >>"$dir/usr/lib/k8s-nokmem/runc"
        manifest=$dir/usr/lib/k8s-nokmem/MANIFEST
        size=$(stat -c %s "$dir/usr/lib/k8s-nokmem/runc")
        sha=$(sha256sum "$dir/usr/lib/k8s-nokmem/runc" | cut -d' ' -f1)
        awk -v size="$size" -v sha="$sha" '
            /^\[/ { sec = $0 }
            sec == "[runc]" && $1 == "sha256" { print "sha256 = " sha; next }
            sec == "[runc]" && $1 == "size" { print "size = " size; next }
            { print }' "$manifest" >"$manifest.new"
        mv "$manifest.new" "$manifest"
        grep -q "^sha256 = $sha\$" "$manifest" || die "MANIFEST of $name has no [runc] sha256 line to update"
        if [ -f "$dir/DEBIAN/md5sums" ]; then
            (cd "$dir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
                xargs md5sum) >"$dir/DEBIAN/md5sums"
        fi
    fi
    dpkg-deb --root-owner-group -Zgzip -z1 --build "$dir" "$out/$name.deb" >/dev/null
    log "$name: k8s-nokmem $ver${what:+ ($what changed)}"
}
repack k8s-nokmem-v2 "$version+e2e2"
repack k8s-nokmem-v3 "$version+e2e3" runc
dpkg --compare-versions "$version+e2e3" gt "$version+e2e2" || die "version order broken"
