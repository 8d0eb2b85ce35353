#!/usr/bin/env bash
# Build the k8s-nokmem .debs (amd64 and arm64 by default) into target/debian/:
# the nokmem payload (scripts/build-payload.sh, cached), the static musl helper, and
# cargo-deb. On a fresh machine it first runs scripts/install-deps.sh (a no-op when up to date).
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/build-deb.sh [--arch amd64|arm64|all] [--revision N] [--skip-payload]
                            [-- BUILD-PAYLOAD-ARGS...]

Builds k8s-nokmem_<kubelet-version>+nokmem<helper-version>-<N>_<arch>.deb into target/debian/.

  --arch A         amd64, arm64 or all (default: all)
  --revision N     Debian revision (default: 1)
  --skip-payload   use the payload already in target/payload/<arch>/ (do not rebuild it)
  -- ARGS          passed to scripts/build-payload.sh, e.g.
                   -- --kubernetes-src ~/src/kubernetes --runc-src ~/src/runc

The package version names the kubelet it carries: a payload built from another kubelet
version gets that version, and a changelog entry saying so is generated.

Examples:
  scripts/build-deb.sh                       # both .debs, payload from Debian's sources
  scripts/build-deb.sh --arch arm64          # only the arm64 .deb
  scripts/build-deb.sh -- --kubernetes-src /srv/kubernetes   # another kubelet version
USAGE
}

log() { printf 'build-deb: %s\n' "$*" >&2; }
die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 2; }

arch=all
revision=1
skip_payload=0
payload_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=${2:?--arch needs amd64, arm64 or all}; shift 2 ;;
        --revision) revision=${2:?--revision needs a number}; shift 2 ;;
        --skip-payload) skip_payload=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; payload_args=("$@"); break ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done
case "$arch" in
    all) arches=(amd64 arm64) ;;
    amd64|arm64) arches=("$arch") ;;
    *) die "--arch '$arch': expected amd64, arm64 or all" ;;
esac

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
start=$(date +%s)

# What the build runs (Go, the cross compilers, cargo-deb, the musl targets): install-deps
# installs what is missing and returns at once when everything is there.
if [ "$(id -u)" -eq 0 ]; then
    scripts/install-deps.sh
else
    command -v cargo-deb >/dev/null || die "cargo-deb not found; run: sudo scripts/install-deps.sh"
fi

if [ "$skip_payload" -eq 0 ]; then
    for a in "${arches[@]}"; do
        log "payload for $a"
        scripts/build-payload.sh --arch "$a" --out target/payload "${payload_args[@]}"
    done
fi

manifest_value() { # FILE SECTION KEY
    awk -v s="[$2]" -v k="$3" '
        /^\[/ { in_s = ($0 == s) }
        in_s && $1 == k && $2 == "=" { sub(/^[^=]*=[ \t]*/, ""); print; exit }' "$1"
}

helper_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
kube_version=
for a in "${arches[@]}"; do
    m=target/payload/$a/MANIFEST
    [ -f "$m" ] || die "no payload manifest '$m'; run without --skip-payload"
    v=$(manifest_value "$m" kubelet version)
    [ -n "$v" ] || die "'$m' has no [kubelet] version"
    if [ -n "$kube_version" ] && [ "$v" != "$kube_version" ]; then
        die "payloads carry different kubelet versions ($kube_version, $v): build both from one source"
    fi
    kube_version=$v
done
deb_version="${kube_version}+nokmem${helper_version}-${revision}"
log "package version $deb_version"

# The changelog's newest entry must name the version being built.
mkdir -p target/debian-build
top_version=$(sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
if [ "$top_version" = "$deb_version" ]; then
    cp debian/changelog target/debian-build/changelog
else
    log "debian/changelog is at $top_version: adding an entry for $deb_version"
    {
        printf 'k8s-nokmem (%s) unstable; urgency=medium\n\n' "$deb_version"
        printf '  * Rebuilt with kubelet %s (see /usr/lib/k8s-nokmem/MANIFEST).\n\n' "$kube_version"
        printf ' -- %s  %s\n\n' "k8s-nokmem developers <k8s-nokmem@example.org>" "$(date -R)"
        cat debian/changelog
    } >target/debian-build/changelog
fi

for a in "${arches[@]}"; do
    case "$a" in
        amd64) triple=x86_64-unknown-linux-musl; variant=() ;;
        arm64) triple=aarch64-unknown-linux-musl; variant=(--variant arm64) ;;
    esac
    log "cargo deb for $a ($triple)"
    t0=$(date +%s)
    cargo deb --locked --target "$triple" "${variant[@]}" --deb-version "$deb_version" \
        --output target/debian/ >/dev/null
    log "built target/debian/k8s-nokmem_${deb_version}_${a}.deb in $(( $(date +%s) - t0 )) s"
done
log "done in $(( $(date +%s) - start )) s"
ls -l target/debian/*.deb >&2
