#!/usr/bin/env bash
# Later versions of a built k8s-nokmem .deb, for the upgrade scenarios of the e2e test:
#
#   tests/e2e/make-variants.sh DEB OUTDIR
#
# writes OUTDIR/k8s-nokmem-v1.deb (DEB itself), OUTDIR/k8s-nokmem-v2.deb (version
# <v>+e2e2, the same payload: an upgrade must restart nothing) and OUTDIR/k8s-nokmem-v3.deb
# (version <v>+e2e3, runc changed: 16 bytes appended to the ELF, MANIFEST sha256/size and
# DEBIAN/md5sums updated: an upgrade must restart docker.service only),
# OUTDIR/k8s-nokmem-v4.deb (version <v>+e2e4, runc changed another way and the shipped
# conffile /etc/k8s-nokmem/k8s-nokmem.conf changed: a release that unattended-upgrades holds
# back on a node whose conffile was edited) and OUTDIR/k8s-nokmem-v5.deb (version <v>+e2e5,
# v4's payload, the conffile changed again).
set -euo pipefail

KN_PROG=e2e-variants
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/../../scripts/lib/common.sh"
[ $# -eq 2 ] || die "usage: $0 DEB OUTDIR"
deb=$1 out=$2
[ -f "$deb" ] || die "no such .deb: '$deb'"
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/e2e-variants.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

version=$(dpkg-deb -f "$deb" Version)
cp "$deb" "$out/k8s-nokmem-v1.deb"

# repack VARIANT NEWVERSION [RUNC_MARK [CONF_LINE]]: unpack DEB, set the version; append
# RUNC_MARK (a line) to runc (MANIFEST sha256/size updated) and CONF_LINE to the shipped
# conffile when given (DEBIAN/md5sums updated for every file it lists).
repack() {
    local name=$1 ver=$2 mark=${3:-} conf=${4:-} dir=$tmp/$1 manifest size sha what=''
    dpkg-deb -R "$deb" "$dir"
    sed -i "s/^Version: .*/Version: $ver/" "$dir/DEBIAN/control"
    if [ -n "$mark" ]; then
        printf '%s\n' "$mark" >>"$dir/usr/lib/k8s-nokmem/runc"
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
        what=runc
    fi
    if [ -n "$conf" ]; then
        grep -qx /etc/k8s-nokmem/k8s-nokmem.conf "$dir/DEBIAN/conffiles" ||
            die "$deb does not list /etc/k8s-nokmem/k8s-nokmem.conf in DEBIAN/conffiles"
        printf '%s\n' "$conf" >>"$dir/etc/k8s-nokmem/k8s-nokmem.conf"
        what="${what:+$what, }conffile"
    fi
    if [ -n "$what" ] && [ -f "$dir/DEBIAN/md5sums" ]; then
        (cd "$dir" && cut -d' ' -f3- DEBIAN/md5sums | xargs -d '\n' md5sum) >"$dir/DEBIAN/md5sums.new"
        mv "$dir/DEBIAN/md5sums.new" "$dir/DEBIAN/md5sums"
    fi
    dpkg-deb --root-owner-group -Zgzip -z1 --build "$dir" "$out/$name.deb" >/dev/null
    log "$name: k8s-nokmem $ver${what:+ ($what changed)}"
}
repack k8s-nokmem-v2 "$version+e2e2"
repack k8s-nokmem-v3 "$version+e2e3" k8s-nokmem-e2e3
repack k8s-nokmem-v4 "$version+e2e4" k8s-nokmem-e2e4 '# k8s-nokmem e2e4: this release changed the conffile'
repack k8s-nokmem-v5 "$version+e2e5" k8s-nokmem-e2e4 '# k8s-nokmem e2e5: this release changed the conffile again'
for v in 3 4 5; do
    dpkg --compare-versions "$version+e2e$v" gt "$version+e2e$((v - 1))" ||
        die "version order broken: $version+e2e$v <= $version+e2e$((v - 1))"
done
