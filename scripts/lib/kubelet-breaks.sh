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
# scripts/build-deb.sh sets the field on each built .deb: only its control member is
# rebuilt (same entries, order, modes and times); data.tar is kept byte for byte.
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

# A .deb is an ar archive (deb(5)): debian-binary, control.tar.*, data.tar.*. Only the
# control member is rebuilt; the others, headers included, are copied byte for byte, so
# the payload, its owners and its timestamps stay exactly as cargo-deb wrote them.
bytes() { # FILE OFFSET COUNT
    dd if="$1" bs=65536 iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none
}
trim() { local v=$1; printf '%s' "${v%%[ /]*}"; }

size=$(stat -c %s "$deb")
[ "$(bytes "$deb" 0 8)" = '!<arch>' ] || die "'$deb' is not a Debian package (no ar header)"
members=()
off=8
while [ "$off" -lt "$size" ]; do
    hdr=$(bytes "$deb" "$off" 60)
    members+=("$off:$(trim "${hdr:0:16}"):$(trim "${hdr:48:10}")")
    len=$(trim "${hdr:48:10}")
    off=$((off + 60 + len + len % 2))
done

control_off='' control_len='' control_name=''
for m in "${members[@]}"; do
    IFS=: read -r o name len <<<"$m"
    case "$name" in control.tar*) control_off=$o control_name=$name control_len=$len ;; esac
done
[ -n "$control_off" ] || die "'$deb' has no control.tar member"
case "$control_name" in
    control.tar.xz) unpack=(xz -dc) pack=(xz -c) ;;
    control.tar.gz) unpack=(gzip -dc) pack=(gzip -9nc) ;;
    control.tar) unpack=(cat) pack=(cat) ;;
    *) die "'$deb': control member '$control_name' is not xz, gzip or plain tar" ;;
esac

mkdir "$tmp/c"
bytes "$deb" $((control_off + 60)) "$control_len" | "${unpack[@]}" >"$tmp/control.tar"
tar -tf "$tmp/control.tar" >"$tmp/order"
tar -xf "$tmp/control.tar" -C "$tmp/c" --same-permissions
[ -f "$tmp/c/control" ] || die "'$deb' has no control file"
mtime=$(stat -c %Y "$tmp/c/control")
# Replace any Breaks field (and its continuation lines), then add ours after Depends
# (at the end when there is no Depends).
awk -v breaks="Breaks: $value" '
    /^Breaks:/ { skip = 1; next }
    skip && /^[ \t]/ { next }
    { skip = 0; print }
    /^Depends:/ { print breaks; done = 1 }
    END { if (!done) print breaks }' "$tmp/c/control" >"$tmp/control"
cat "$tmp/control" >"$tmp/c/control"
touch -d "@$mtime" "$tmp/c/control"
tar --format=gnu --numeric-owner --owner=0 --group=0 --no-recursion -C "$tmp/c" \
    -cf - -T "$tmp/order" | "${pack[@]}" >"$tmp/control.new"

new_len=$(stat -c %s "$tmp/control.new")
{
    printf '!<arch>\n'
    for m in "${members[@]}"; do
        IFS=: read -r o name len <<<"$m"
        if [ "$o" = "$control_off" ]; then
            hdr=$(bytes "$deb" "$o" 60)
            # name, mtime, uid, gid and mode as they were; the new size
            printf '%s%s%-10s`\n' "${hdr:0:16}" "${hdr:16:32}" "$new_len"
            cat "$tmp/control.new"
            [ $((new_len % 2)) -eq 0 ] || printf '\n'
        else
            bytes "$deb" "$o" $((60 + len + len % 2))
        fi
    done
} >"$tmp/new.deb"
got=$(dpkg-deb -f "$tmp/new.deb" Breaks) || die "rebuilt '$deb' does not read back"
[ "$got" = "$value" ] || die "rebuilt '$deb' reads Breaks: '$got'"
mv "$tmp/new.deb" "$deb"
printf 'kubelet-breaks: %s: Breaks: %s\n' "$deb" "$value" >&2
