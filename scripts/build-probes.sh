#!/usr/bin/env bash
# Build the cgroup probe (tests/probe) with and without the nokmem tag, for amd64 and
# arm64, against the runc libcontainer code vendored by Kubernetes. See --help.
set -euo pipefail

KN_PROG=build-probes
KN_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=scripts/lib/gobuild.sh
. "$KN_REPO/scripts/lib/gobuild.sh"

usage() {
    cat <<EOF
usage: scripts/build-probes.sh [--out DIR] [--arch amd64|arm64|all] [--kubernetes-src DIR]
                               [--cache DIR] [--no-cache] [--go GO]

Builds tests/probe, a small Go program that creates a pod-style v1 memory cgroup with
the runc libcontainer cgroups/fs code that Kubernetes vendors (runc v1.0.0-rc92 in
Debian's kubernetes 1.20 source), the way kubelet's cgroupfs driver does. Two builds per
architecture:

  DIR/<arch>/probe-kmem     no tags: links cgroups/fs/kmem.go and, for every memory
                            cgroup it creates, writes 1 then -1 to
                            memory.kmem.limit_in_bytes (switches kmem accounting on)
  DIR/<arch>/probe-nokmem   -tags nokmem: links kmem_disabled.go, never touches that file

Both are static (CGO_ENABLED=0). The script refuses to finish unless probe-kmem holds
kmem-enabling code (the string memory.kmem.limit_in_bytes and/or the file name
libcontainer/cgroups/fs/kmem.go in its pclntab) and probe-nokmem holds neither. Use
them as fixtures for 'k8s-nokmem inspect' and, as root on a cgroup v1 host, with
'strace -f -e trace=openat,openat2,write' (see tests/probe/README.md).

Options:
  --out DIR             output directory (default: \$OUT, else target/probes in the repo)
  --arch A              amd64, arm64 or all (default: all)
  --kubernetes-src DIR  a Kubernetes source tree with vendor/ (any version that vendors
                        runc rc6..rc93 cgroups/fs); default: Debian's source package
                        'kubernetes' from apt's deb-src (bookworm: 1.20.5+really1.20.2),
                        downloaded once into the cache
  --cache DIR           cache directory (default: \${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem})
  --no-cache            rebuild from scratch: do not read or write cached binaries, use a
                        throw-away Go build cache
  --go GO               the go command (default: \$GO, else go); Go >= 1.11 in GOPATH mode
  -h, --help            this help

Cache: a binary is reused when the sha256 of (probe sources, Kubernetes tree digest,
arch, tags, go version, script version) is unchanged; a cached run takes about a second,
a cold one about a minute. Exit status: 0 ok, 1 a build or a check failed, 2 usage or
environment error.

Example:
  scripts/build-probes.sh --arch amd64
  sudo strace -f -e trace=openat,openat2,write target/probes/amd64/probe-kmem \\
      --parent k8s-nokmem-test-\$\$ --name pod1 --remove
EOF
}

OUT_DIR=${OUT:-$KN_REPO/target/probes}
ARCHES=all
K8S_SRC_ARG=''
KN_CACHE=${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}
KN_NO_CACHE=0
KN_GO=${GO:-go}

while [ $# -gt 0 ]; do
    case "$1" in
    --out) need_arg "$@"; OUT_DIR=$2; shift 2 ;;
    --arch) need_arg "$@"; ARCHES=$2; shift 2 ;;
    --kubernetes-src) need_arg "$@"; K8S_SRC_ARG=$2; shift 2 ;;
    --cache) need_arg "$@"; KN_CACHE=$2; shift 2 ;;
    --no-cache) KN_NO_CACHE=1; shift ;;
    --go) need_arg "$@"; KN_GO=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case "$ARCHES" in
all) ARCHES="amd64 arm64" ;;
amd64 | arm64) ;;
*) die "--arch must be amd64, arm64 or all, not '$ARCHES'" ;;
esac
kn_need_go

t_start=$(date +%s)
KN_WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-probes.XXXXXX")
trap 'rm -rf "$KN_WORK"' EXIT
kn_prepare_cache
mkdir -p "$OUT_DIR"

if [ -n "$K8S_SRC_ARG" ]; then
    kn_local_source "$K8S_SRC_ARG"
else
    kn_debian_source kubernetes
fi
K8S_DIR=$KN_SRC_DIR
K8S_DIGEST=$KN_SRC_DIGEST
K8S_DESC=$KN_SRC_DESC
vendored=$K8S_DIR/vendor/github.com/opencontainers/runc/libcontainer/cgroups/fs
[ -f "$vendored/kmem.go" ] ||
    die "'$vendored/kmem.go' not found: this tree does not vendor a runc that enables kmem (rc6..rc93)"
GO_VERSION=$(kn_go_version)
TRIM=$(kn_trimpath_flag "$GO_VERSION")
PROBE_DIGEST=$(cd "$KN_REPO/tests/probe" && sha256sum -- *.go | sha256sum | awk '{print $1}')
log "kubernetes source: $K8S_DESC ($K8S_DIR); $GO_VERSION; cache $KN_CACHE"

# GOPATH mode: the probe sits inside k8s.io/kubernetes so that vendor/ resolves.
gopath=$KN_WORK/gopath
pkgdir=$gopath/src/k8s.io/kubernetes/k8s-nokmem-probe
mkdir -p "$pkgdir"
ln -s "$K8S_DIR/vendor" "$gopath/src/k8s.io/kubernetes/vendor"
cp "$KN_REPO"/tests/probe/*.go "$pkgdir/"

summary=()
for arch in $ARCHES; do
    kn_check_arch "$arch"
    mkdir -p "$OUT_DIR/$arch"
    for flavour in kmem nokmem; do
        label="[probe-$flavour $arch]"
        tags=''
        [ "$flavour" = nokmem ] && tags=nokmem
        out=$OUT_DIR/$arch/probe-$flavour
        key_text="script=$KN_SCRIPT_VERSION
what=probe
probe=$PROBE_DIGEST
source=$K8S_DIGEST
arch=$arch
tags=$tags
go=$GO_VERSION
ldflags=-s -w"
        key=$(kn_sha256_text "$key_text")
        t0=$(date +%s)
        if kn_cache_get "$key" probe "$out"; then
            how="cache hit"
        else
            (
                cd "$pkgdir"
                # shellcheck disable=SC2086  # $TRIM is one flag or nothing
                env GO111MODULE=off GOPATH="$gopath" GOFLAGS='' GOPROXY=off CGO_ENABLED=0 \
                    GOOS=linux GOARCH="$arch" GOCACHE="$(kn_gocache)" \
                    "$KN_GO" build $TRIM -tags "$tags" -ldflags '-s -w' -o "$out.tmp" .
            ) 2>"$KN_WORK/build.log" || {
                sed 's/^/  /' "$KN_WORK/build.log" >&2
                die "$label go build failed" 1
            }
            mv "$out.tmp" "$out"
            kn_cache_put "$key" "$key_text" probe "$out"
            how="built"
        fi
        kn_check_static "$out" "$arch" "$label"
        ev=$(kn_kmem_evidence "$out")
        kn_build_tags "$out"
        btags=$KN_BUILD_TAGS
        found="memory.kmem.limit_in_bytes x${ev% *}, libcontainer/cgroups/fs/kmem.go x${ev#* }, go version -m -tags='$btags'"
        if [ "$flavour" = kmem ]; then
            [ "$ev" != "0 0" ] || die "$label '$out' holds no kmem-enabling code ($found)" 1
            case ",$btags," in *,nokmem,*) die "$label '$out' was built with nokmem ($found)" 1 ;; esac
        else
            [ "$ev" = "0 0" ] || die "$label '$out' holds kmem-enabling code ($found)" 1
            case ",$btags," in *,nokmem,*) ;; *) [ -z "$btags" ] || die "$label no nokmem tag ($found)" 1 ;; esac
        fi
        verdict=''
        kn_inspect_init
        if [ -n "$KN_INSPECT_BIN" ]; then
            rc=0
            "$KN_INSPECT_BIN" inspect --json "$out" >"$KN_WORK/inspect.json" 2>&1 || rc=$?
            case "$flavour:$rc" in
            kmem:1 | nokmem:0) verdict="inspect agrees (exit $rc)" ;;
            *) verdict="inspect DISAGREES (exit $rc)"
               warn "$label k8s-nokmem inspect exits $rc: $(head -c 400 "$KN_WORK/inspect.json")" ;;
            esac
        fi
        log "$label $how in $(($(date +%s) - t0)) s: $found${verdict:+; $verdict}"
        summary+=("$(printf '%-6s %-13s %9s  %-8s %s' "$arch" "probe-$flavour" "$(kn_size "$out")" "${ev% *}/${ev#* }" "$out")")
    done
done

printf '%-6s %-13s %9s  %-8s %s\n' arch binary size kmem-ev path
printf '%s\n' "${summary[@]}"
log "done in $(($(date +%s) - t_start)) s (kmem-ev: memory.kmem.limit_in_bytes/fs/kmem.go occurrences)"
