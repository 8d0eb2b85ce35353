#!/usr/bin/env bash
# Build the k8s-nokmem payload: static runc and kubelet built with the Go build tag
# `nokmem`, checked, with a MANIFEST per architecture. See --help.
set -euo pipefail

KN_PROG=build-payload
KN_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=scripts/lib/gobuild.sh
. "$KN_REPO/scripts/lib/gobuild.sh"

RUNC_TAGS=(seccomp netgo osusergo static_build nokmem)
KUBELET_TAGS=(selinux notest nokmem)

usage() {
    cat <<EOF
usage: scripts/build-payload.sh [--arch amd64|arm64|all] [--only runc|kubelet] [--out DIR]
                                [--kubernetes-src DIR] [--runc-src DIR] [--runc-commit SHA]
                                [--cache DIR] [--no-cache] [--go GO]

Builds the payload of the k8s-nokmem package: runc and kubelet, static, compiled with
the Go build tag 'nokmem' so that they never switch on cgroup v1 kernel-memory (kmem)
accounting (runc's libcontainer/cgroups/fs/kmem.go is replaced by kmem_disabled.go; in
kubelet that code is the runc copy under vendor/). Writes

  DIR/<arch>/runc, DIR/<arch>/kubelet, DIR/<arch>/MANIFEST   (INI: versions, sources
                                                             (.dsc sha256 or commit), Go,
                                                             tags, build command, the Debian
                                                             sources compiled in, size, sha256)

Reproducible: the same sources, Go and flags give the same bytes in any directory, with or
without the cache (-trimpath, -buildid=, GOAMD64=v1, dates from the source, no build time
in the MANIFEST).

Options:
  --arch A              amd64, arm64 or all (default: all)
  --only B              build only runc or only kubelet (default: both); the MANIFEST
                        keeps the other binary's section while that file is unchanged
  --out DIR             output directory (default: target/payload in the repository)
  --kubernetes-src DIR  build kubelet from a local Kubernetes tree instead of Debian's
  --runc-src DIR        build runc from a local runc tree instead of Debian's
  --runc-commit SHA     the commit of a --runc-src tree that is not a git checkout (an
                        unpacked release tarball): 'runc --version' and the MANIFEST show
                        it; for a git checkout it must be HEAD (default: git rev-parse HEAD)
  --cache DIR           sources, Go build cache and finished binaries
                        (default: \${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem})
  --no-cache            rebuild from scratch: do not read or write cached binaries and
                        use a throw-away Go build cache (downloaded sources are kept)
  --go GO               the go command (default: \$GO, else go)
  -h, --help            this help

Sources. By default both come from Debian's source packages, offline from the mirror
(needs a deb-src entry: scripts/install-deps.sh adds it; air-gapped, the tree unpacked
earlier in the cache is reused). Bookworm has runc 1.1.5, which no longer has any kmem
code (the tag is harmless), and kubernetes 1.20.5+really1.20.2, a full tree whose
vendor/ holds runc v1.0.0-rc92 with kmem.go: that is why kubelet needs the tag.
A local checkout of any version works too, e.g. upstream kubernetes v1.14.6 and runc
v1.0.0-rc9 as in the original write-up; both build in GOPATH mode:
  - Kubernetes 1.14 needs Go 1.12 (pass --go /path/to/go1.12/bin/go); 1.20 builds with
    bookworm's Go 1.19. Its version comes from 'git describe --tags' (override with
    KUBE_GIT_VERSION=v1.14.6).
  - runc v1.0.0-rc9 builds with Go >= 1.11 (its own vendor/); runc 1.1 from Debian uses
    the golang-github-* packages in /usr/share/gocode ('apt-get build-dep runc').
Go < 1.13 has no -trimpath (left out then); Go < 1.18 records no build tags in the
binary (then only its bytes are checked for kmem code).

How each binary is built (GOPATH mode, GO111MODULE=off, no module proxy):
  kubelet  CGO_ENABLED=0 GOARCH=<arch> go build -trimpath -tags=$(IFS=,; echo "${KUBELET_TAGS[*]}")
           -ldflags "-s -w -buildid= -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitVersion=v…"
  runc     CGO_ENABLED=1 (libseccomp, static glibc) -tags=$(IFS=,; echo "${RUNC_TAGS[*]}")
           -ldflags "-s -w -buildid= -extldflags -static -X main.version=… -X main.gitCommit=…";
           for a foreign arch CC=<triplet>-gcc PKG_CONFIG_LIBDIR=/usr/lib/<triplet>/pkgconfig
           (gcc-aarch64-linux-gnu, libseccomp-dev:arm64)

Checks, before a MANIFEST is written (any failure: exit 1, naming the binary):
  - 'file' says statically linked, for the right machine;
  - no kmem: 'k8s-nokmem inspect --json FILE' (K8S_NOKMEM_BIN, default
    target/release/k8s-nokmem, rebuilt with cargo when missing or stale); until it has
    inspect --json: 'go version -m' shows -tags with nokmem and the bytes hold neither
    memory.kmem.limit_in_bytes nor libcontainer/cgroups/fs/kmem.go;
  - --version prints the expected version: natively, or for a foreign runc under
    qemu-user (qemu-aarch64-static); a foreign kubelet takes minutes under emulation, so
    its native twin from the same source and tags stands in. MANIFEST 'check' says which.

Cache: a binary is reused when the sha256 of (source digest: the .dsc sha256, or git
HEAD plus a hash of uncommitted changes; arch; tags; ldflags; go version; C compiler and
libseccomp for runc; this script's version) is unchanged. Cold: runc ~1 min, kubelet
~7 min per arch on 2 cores (1.3 GB RAM); cached: seconds. Progress and timings go to
stderr, the summary table to stdout.

Environment: GO, K8S_NOKMEM_CACHE, K8S_NOKMEM_BIN, KUBE_GIT_VERSION (local Kubernetes
tree only). Exit status: 0 ok, 1 a build or a check failed, 2 usage or environment error.

Examples:
  scripts/build-payload.sh                          # both, amd64 and arm64, from Debian
  scripts/build-payload.sh --arch arm64 --only runc
  scripts/build-payload.sh --only runc --runc-src ~/src/runc-1.0.0-rc9 \\
      --runc-commit d736ef14f0288d6993a1845745d6756cfc9ddd5a   # the v1.0.0-rc9 release tarball
  KUBE_GIT_VERSION=v1.14.6 scripts/build-payload.sh --go ~/go1.12/bin/go \\
      --kubernetes-src ~/src/kubernetes --runc-src ~/src/runc --out /tmp/payload
EOF
}

ARCHES=all
ONLY=''
OUT_DIR=$KN_REPO/target/payload
K8S_SRC_ARG=''
RUNC_SRC_ARG=''
RUNC_COMMIT_ARG=''
KN_CACHE=${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}
KN_NO_CACHE=0
KN_GO=${GO:-go}

while [ $# -gt 0 ]; do
    case "$1" in
    --arch) need_arg "$@"; ARCHES=$2; shift 2 ;;
    --only) need_arg "$@"; ONLY=$2; shift 2 ;;
    --out) need_arg "$@"; OUT_DIR=$2; shift 2 ;;
    --kubernetes-src) need_arg "$@"; K8S_SRC_ARG=$2; shift 2 ;;
    --runc-src) need_arg "$@"; RUNC_SRC_ARG=$2; shift 2 ;;
    --runc-commit) need_arg "$@"; RUNC_COMMIT_ARG=$2; shift 2 ;;
    --cache) need_arg "$@"; KN_CACHE=$2; shift 2 ;;
    --no-cache) KN_NO_CACHE=1; shift ;;
    --go) need_arg "$@"; KN_GO=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case "$ONLY" in
'') NAMES=(runc kubelet) ;;
runc | kubelet) NAMES=("$ONLY") ;;
*) die "--only must be runc or kubelet, not '$ONLY'" ;;
esac
if [ -n "$RUNC_COMMIT_ARG" ]; then
    [ -n "$RUNC_SRC_ARG" ] || die "--runc-commit needs --runc-src (Debian's runc is named by its version)"
    [[ $RUNC_COMMIT_ARG =~ ^[0-9a-f]{7,40}$ ]] ||
        die "--runc-commit must be a commit id (7 to 40 lowercase hex digits), not '$RUNC_COMMIT_ARG'"
fi
kn_need_go
HOST_ARCH=$(kn_host_arch)
case "$ARCHES" in
# The host architecture first: a foreign kubelet is checked through its native twin.
all) ARCHES="$HOST_ARCH $(printf '%s\n' amd64 arm64 | grep -vx "$HOST_ARCH" | tr '\n' ' ')" ;;
amd64 | arm64) ;;
*) die "--arch must be amd64, arm64 or all, not '$ARCHES'" ;;
esac
need_tools file sha256sum

T_START=$(date +%s)
KN_WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-payload.XXXXXX")
trap 'rm -rf "$KN_WORK"' EXIT
kn_prepare_cache
GO_VERSION=$(kn_go_version)
TRIM=$(kn_trimpath_flag "$GO_VERSION")
log "$GO_VERSION, host $HOST_ARCH, cache $KN_CACHE$([ "$KN_NO_CACHE" = 1 ] && echo ' (--no-cache)'), out $OUT_DIR"

# Per "<arch>/<name>": what the MANIFEST and the summary need.
declare -A M_VERSION M_VOUT M_SOURCE M_TAGS M_CHECK M_KMEM M_HOW M_COMMIT M_SRCID M_BUILD M_BUILT_USING

# ---------------------------------------------------------------------------------
# Sources (resolved once, when first needed)

# source_id: the MANIFEST lines that name the source just resolved exactly: the .dsc and
# its sha256 (Debian), or nothing (a checkout's commit has its own line).
source_id() {
    if [ -n "$KN_SRC_DSC" ]; then
        printf 'source_dsc = %s\nsource_sha256 = %s' "$KN_SRC_DSC" "$KN_SRC_DSC_SHA256"
    fi
}

# source_built_using: the Built-Using entry of a Debian source package, or nothing.
source_built_using() {
    if [ -n "$KN_SRC_PKG" ]; then printf '%s (= %s)' "$KN_SRC_PKG" "$KN_SRC_DEBVER"; fi
}

RUNC_READY=''
runc_source() {
    [ -n "$RUNC_READY" ] && return 0
    if [ -n "$RUNC_SRC_ARG" ]; then kn_local_source "$RUNC_SRC_ARG"; else kn_debian_source runc; fi
    RUNC_DIR=$KN_SRC_DIR RUNC_DIGEST=$KN_SRC_DIGEST RUNC_DESC=$KN_SRC_DESC
    RUNC_SRCID=$(source_id) RUNC_SRC_USING=$(source_built_using)
    [ -f "$RUNC_DIR/VERSION" ] && [ -f "$RUNC_DIR/main.go" ] ||
        die "'$RUNC_DIR' does not look like a runc tree (no VERSION or main.go)"
    RUNC_VERSION=$(tr -d ' \n' <"$RUNC_DIR/VERSION")
    if [ -n "$KN_SRC_DEBVER" ]; then
        # As Debian's own build does: the Debian version stands for the commit.
        RUNC_COMMIT="debian-$KN_SRC_DEBVER"
    elif [ -n "$KN_SRC_COMMIT" ]; then
        case "$KN_SRC_COMMIT" in
        "$RUNC_COMMIT_ARG"*) ;;
        *) die "--runc-commit $RUNC_COMMIT_ARG is not the checkout's HEAD ($KN_SRC_COMMIT)
  note: leave --runc-commit out for a git checkout, or check out $RUNC_COMMIT_ARG" ;;
        esac
        RUNC_COMMIT=$KN_SRC_COMMIT
        [ "$KN_SRC_DIRTY" = 1 ] && RUNC_COMMIT="$RUNC_COMMIT-dirty"
    elif [ -n "$RUNC_COMMIT_ARG" ]; then
        RUNC_COMMIT=$RUNC_COMMIT_ARG
    else
        RUNC_COMMIT=unknown
        warn "[runc] '$RUNC_DIR' is not a git checkout: 'runc --version' says commit: unknown
  note: pass --runc-commit SHA (the tree's upstream commit)"
    fi
    log "[runc] source $RUNC_DESC ($RUNC_DIR), version $RUNC_VERSION, commit $RUNC_COMMIT"
    RUNC_READY=1
}

K8S_READY=''
k8s_source() {
    [ -n "$K8S_READY" ] && return 0
    local v
    if [ -n "$K8S_SRC_ARG" ]; then kn_local_source "$K8S_SRC_ARG"; else kn_debian_source kubernetes; fi
    K8S_DIR=$KN_SRC_DIR K8S_DIGEST=$KN_SRC_DIGEST K8S_DESC=$KN_SRC_DESC
    K8S_SRCID=$(source_id) K8S_SRC_USING=$(source_built_using)
    [ -d "$K8S_DIR/cmd/kubelet" ] && [ -d "$K8S_DIR/vendor" ] ||
        die "'$K8S_DIR' does not look like a Kubernetes tree with vendor/ (no cmd/kubelet or vendor)"
    K8S_COMMIT='' K8S_TREE=archive
    if [ -n "${KUBE_GIT_VERSION:-}" ]; then
        K8S_GITVERSION=$KUBE_GIT_VERSION
    elif [ -n "$KN_SRC_DEBVER" ]; then
        # 1.20.5+really1.20.2-1.1+deb12u1 -> 1.20.2
        v=${KN_SRC_DEBVER#*:}
        v=${v%-*}
        v=${v##*+really}
        K8S_GITVERSION="v${v%%+*}"
    elif [ -n "$KN_SRC_COMMIT" ]; then
        K8S_GITVERSION=$(git -C "$K8S_DIR" describe --tags --match 'v[0-9]*' --abbrev=14 HEAD 2>/dev/null) ||
            die "cannot tell the Kubernetes version of '$K8S_DIR' (git describe --tags found no tag)
  note: set KUBE_GIT_VERSION, e.g. KUBE_GIT_VERSION=v1.14.6"
    else
        die "cannot tell the Kubernetes version of '$K8S_DIR'; set KUBE_GIT_VERSION, e.g. v1.14.6"
    fi
    if [ -n "$KN_SRC_COMMIT" ]; then
        K8S_COMMIT=$KN_SRC_COMMIT K8S_TREE=clean
        if [ "$KN_SRC_DIRTY" = 1 ]; then
            K8S_TREE=dirty
            [ -n "${KUBE_GIT_VERSION:-}" ] || K8S_GITVERSION="$K8S_GITVERSION-dirty"
        fi
    fi
    [[ $K8S_GITVERSION =~ ^v([0-9]+)\.([0-9]+) ]] ||
        die "Kubernetes version '$K8S_GITVERSION' is not vMAJOR.MINOR…"
    K8S_MAJOR=${BASH_REMATCH[1]} K8S_MINOR=${BASH_REMATCH[2]}
    # The source's date, never the build's: kubelet --version prints it.
    KN_SRC_EPOCH=${KN_SRC_EPOCH:-${SOURCE_DATE_EPOCH:-}}
    [ -n "$KN_SRC_EPOCH" ] ||
        die "cannot tell the date of '$K8S_DIR' (no debian/changelog or commit); set SOURCE_DATE_EPOCH"
    K8S_BUILDDATE=$(date -u -d "@$KN_SRC_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
    log "[kubelet] source $K8S_DESC ($K8S_DIR), version $K8S_GITVERSION"
    K8S_READY=1
}

# ---------------------------------------------------------------------------------
# Builds. build_<name> ARCH OUT: make OUT (from the cache or by compiling); sets
# BUILD_HOW ("cache hit" or "built").

run_build() { # LABEL LOG CMD...: run a build command, show its log on failure
    local label=$1 log=$2
    shift 2
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" | sed 's/^/  /' >&2
        die "$label go build failed (full log: $log)" 1
    fi
}

# runc_library_files GOPATH ENV... -- GO-LIST-ARGS: one Go file of each package runc
# imports from outside its own tree and Go's standard library (Debian's runc takes them
# from /usr/share/gocode), for kn_built_using.
runc_library_files() {
    local gopath=$1 env=() dir
    shift
    while [ "$1" != -- ]; do env+=("$1"); shift; done
    shift
    env "${env[@]}" "$KN_GO" list -deps "$@" -f '{{if not .Standard}}{{.Dir}}{{end}}' \
        github.com/opencontainers/runc 2>/dev/null | while read -r dir; do
        case "$dir" in "$gopath"/* | "$RUNC_DIR"/* | '') continue ;; esac
        find "$dir" -maxdepth 1 -type f -name '*.go' -print -quit
    done
}

build_runc() {
    local arch=$1 out=$2 label="[runc $1]" cc pkgcfg='' gopath gocodes ldflags key_text key seccomp built_using
    runc_source
    if [ "$arch" = "$HOST_ARCH" ]; then
        cc=${CC:-gcc}
    else
        cc="$(kn_triplet "$arch")-gcc"
        pkgcfg="/usr/lib/$(kn_triplet "$arch")/pkgconfig"
    fi
    command -v "$cc" >/dev/null ||
        die "$label C compiler '$cc' not found (scripts/install-deps.sh installs gcc-aarch64-linux-gnu)"
    seccomp=$(if [ -n "$pkgcfg" ]; then export PKG_CONFIG_LIBDIR=$pkgcfg; fi
        pkg-config --modversion libseccomp 2>/dev/null) ||
        die "$label libseccomp for $arch not found by pkg-config (apt-get install libseccomp-dev:$arch)"
    # -buildid= and -trimpath: no build ID or build path in the bytes (reproducible).
    ldflags="-s -w -buildid= -extldflags -static -X main.version=$RUNC_VERSION -X main.gitCommit=$RUNC_COMMIT"
    gopath=$KN_WORK/gopath-runc
    kn_gopath_link "$gopath" github.com/opencontainers/runc "$RUNC_DIR"
    gocodes=$gopath
    [ -d /usr/share/gocode/src ] && gocodes="$gopath:/usr/share/gocode"
    local goenv=(GO111MODULE=off GOPATH="$gocodes" GOFLAGS='' GOPROXY=off GOCACHE="$(kn_gocache)"
        CGO_ENABLED=1 GOOS=linux GOARCH="$arch" GOAMD64=v1 CC="$cc" ${pkgcfg:+PKG_CONFIG_LIBDIR="$pkgcfg"})
    local tags
    tags=$(kn_tags_flag "$GO_VERSION" "${RUNC_TAGS[@]}")
    # What is compiled in, each named by its Debian source package and exact version: Go,
    # runc, the Go libraries from /usr/share/gocode, and the static C libraries. Part of the
    # cache key: a newer library means another binary, never a stale cached one.
    local libs=()
    mapfile -t libs < <(runc_library_files "$gopath" "${goenv[@]}" -- -tags "$tags")
    built_using=$(
        {
            printf '%s\n' "$RUNC_SRC_USING"
            kn_go_built_using
            kn_built_using "$("$cc" -print-file-name=libc.a)" "$("$cc" -print-libgcc-file-name)" \
                "$(if [ -n "$pkgcfg" ]; then export PKG_CONFIG_LIBDIR=$pkgcfg; fi
                    pkg-config --variable=libdir libseccomp)/libseccomp.a" "${libs[@]}"
        } | LC_ALL=C sort -u | kn_join_lines ', '
    )
    M_BUILD[$arch/runc]="${goenv[*]:5:5} go build $TRIM -tags=$tags -ldflags='$ldflags'"
    M_BUILT_USING[$arch/runc]=$built_using
    key_text="script=$KN_SCRIPT_VERSION
built_using=$built_using
what=runc
source=$RUNC_DIGEST
arch=$arch
tags=${RUNC_TAGS[*]}
ldflags=$ldflags
go=$GO_VERSION
cc=$("$cc" --version | head -n1)
libseccomp=$seccomp"
    key=$(kn_sha256_text "$key_text")
    if kn_cache_get "$key" runc "$out"; then
        BUILD_HOW="cache hit"
        return 0
    fi
    log "$label building ($RUNC_DESC, tags ${RUNC_TAGS[*]}, CC=$cc)"
    # shellcheck disable=SC2086  # $TRIM is one flag or nothing
    run_build "$label" "$KN_WORK/runc-$arch.log" \
        env "${goenv[@]}" "$KN_GO" build $TRIM -tags "$tags" \
        -ldflags "$ldflags" -o "$out" github.com/opencontainers/runc
    kn_cache_put "$key" "$key_text" runc "$out"
    BUILD_HOW="built"
}

build_kubelet() {
    local arch=$1 out=$2 label="[kubelet $1]" gopath ldflags key_text key built_using tags
    k8s_source
    # -buildid= and -trimpath: no build ID or build path in the bytes (reproducible).
    ldflags="$(kn_kubelet_ldflags "$K8S_GITVERSION" "$K8S_MAJOR" "$K8S_MINOR" "$K8S_TREE" \
        "$K8S_BUILDDATE" "$K8S_COMMIT") -buildid="
    gopath=$KN_WORK/gopath-k8s
    kn_gopath_link "$gopath" k8s.io/kubernetes "$K8S_DIR"
    local goenv=(GO111MODULE=off GOPATH="$gopath" GOFLAGS='' GOPROXY=off GOCACHE="$(kn_gocache)"
        CGO_ENABLED=0 GOOS=linux GOARCH="$arch" GOAMD64=v1)
    tags=$(kn_tags_flag "$GO_VERSION" "${KUBELET_TAGS[@]}")
    # Compiled in: Go and the Kubernetes tree (its vendor/ included; GOPATH is that tree only).
    built_using=$({ printf '%s\n' "$K8S_SRC_USING"; kn_go_built_using; } | LC_ALL=C sort -u | kn_join_lines ', ')
    M_BUILD[$arch/kubelet]="${goenv[*]:5:4} go build $TRIM -tags=$tags -ldflags='$ldflags'"
    M_BUILT_USING[$arch/kubelet]=$built_using
    key_text="script=$KN_SCRIPT_VERSION
built_using=$built_using
what=kubelet
source=$K8S_DIGEST
arch=$arch
tags=${KUBELET_TAGS[*]}
ldflags=$ldflags
go=$GO_VERSION"
    key=$(kn_sha256_text "$key_text")
    if kn_cache_get "$key" kubelet "$out"; then
        BUILD_HOW="cache hit"
        return 0
    fi
    log "$label building ($K8S_DESC, tags ${KUBELET_TAGS[*]}; ~7 min cold on 2 cores)"
    # shellcheck disable=SC2086  # $TRIM is one flag or nothing
    run_build "$label" "$KN_WORK/kubelet-$arch.log" \
        env "${goenv[@]}" "$KN_GO" build $TRIM -tags "$tags" \
        -ldflags "$ldflags" -o "$out" k8s.io/kubernetes/cmd/kubelet
    kn_cache_put "$key" "$key_text" kubelet "$out"
    BUILD_HOW="built"
}

# build_and_check NAME ARCH: build into $KN_WORK/bin/ARCH/NAME and run every check.
build_and_check() {
    local name=$1 arch=$2 id="$2/$1" label="[$1 $2]" out t0 want
    out=$KN_WORK/bin/$arch/$name
    [ -f "$out" ] && return 0 # already done (a twin)
    mkdir -p "$KN_WORK/bin/$arch"
    t0=$(date +%s)
    "build_$name" "$arch" "$out.tmp"
    mv "$out.tmp" "$out"
    M_HOW[$id]="$BUILD_HOW ($(($(date +%s) - t0)) s)"
    if [ "$BUILD_HOW" = built ]; then
        log "$label built in $(($(date +%s) - t0)) s"
    else
        log "$label cache hit"
    fi
    kn_check_static "$out" "$arch" "$label"
    kn_check_nokmem "$out" "$label"
    M_KMEM[$id]=$KN_KMEM_HOW
    if [ "$name" = runc ]; then
        M_VERSION[$id]=$RUNC_VERSION M_SOURCE[$id]=$RUNC_DESC M_TAGS[$id]="${RUNC_TAGS[*]}"
        M_COMMIT[$id]=$RUNC_COMMIT M_SRCID[$id]=$RUNC_SRCID
        want="runc version $RUNC_VERSION"
    else
        M_VERSION[$id]=${K8S_GITVERSION#v} M_SOURCE[$id]=$K8S_DESC M_TAGS[$id]="${KUBELET_TAGS[*]}"
        M_COMMIT[$id]=$K8S_COMMIT M_SRCID[$id]=$K8S_SRCID
        want="Kubernetes $K8S_GITVERSION"
    fi
    if [ "$name" = kubelet ] && [ "$arch" != "$HOST_ARCH" ]; then
        build_and_check kubelet "$HOST_ARCH"
        M_VOUT[$id]=${M_VOUT[$HOST_ARCH/kubelet]}
        M_CHECK[$id]="--version of its $HOST_ARCH twin (same source and tags; $arch under qemu-user takes minutes)"
    else
        kn_run_version "$out" "$arch"
        M_VOUT[$id]=$KN_VERSION_LINE
        M_CHECK[$id]=$KN_CHECK_HOW
        [ "$KN_VERSION_LINE" = "$want" ] ||
            die "$label '$out --version' says '$KN_VERSION_LINE', expected '$want' (ldflags -X not applied?)" 1
        if [ "$name" = runc ] && ! grep -qxF "commit: $RUNC_COMMIT" <<<"$KN_VERSION_OUT"; then
            die "$label '$out --version' does not say 'commit: $RUNC_COMMIT': $KN_VERSION_OUT" 1
        fi
    fi
    log "$label checks ok: static $arch; kmem: $KN_KMEM_HOW; ${M_CHECK[$id]}: ${M_VOUT[$id]}"
}

# manifest_section NAME ARCH FILE: the INI section for one binary.
manifest_section() {
    local name=$1 arch=$2 file=$3 id="$2/$1"
    cat <<EOF
[$name]
file = $name
version = ${M_VERSION[$id]}
version_output = ${M_VOUT[$id]}
source = ${M_SOURCE[$id]}${M_SRCID[$id]:+
${M_SRCID[$id]}}${M_COMMIT[$id]:+
commit = ${M_COMMIT[$id]}}
go = $GO_VERSION
tags = ${M_TAGS[$id]}
build = ${M_BUILD[$id]}
built_using = ${M_BUILT_USING[$id]}
arch = $arch
size = $(kn_size "$file")
sha256 = $(kn_sha256 "$file")
kmem = safe
check = ${M_CHECK[$id]}
EOF
}

# kept_section NAME DIR: the existing MANIFEST's section for NAME, printed only when
# DIR/NAME still has the sha256 it records.
kept_section() {
    local name=$1 dir=$2 text sha
    [ -f "$dir/MANIFEST" ] && [ -f "$dir/$name" ] || return 1
    text=$(awk -v s="[$name]" '/^\[/ {on = ($0 == s)} on' "$dir/MANIFEST")
    sha=$(sed -n 's/^sha256 = //p' <<<"$text")
    [ -n "$sha" ] && [ "$sha" = "$(kn_sha256 "$dir/$name")" ] || return 1
    printf '%s\n' "$text" | sed '/^[[:space:]]*$/d'
}

# install_arch ARCH: copy the checked binaries to OUT/ARCH and write its MANIFEST.
install_arch() {
    local arch=$1 dest=$OUT_DIR/$1 name kept s others=() sections=()
    mkdir -p "$dest"
    for name in runc kubelet; do
        if [[ " ${NAMES[*]} " == *" $name "* ]]; then
            cp "$KN_WORK/bin/$arch/$name" "$dest/.$name.tmp"
            mv "$dest/.$name.tmp" "$dest/$name"
            sections+=("$(manifest_section "$name" "$arch" "$dest/$name")")
        elif kept="$(kept_section "$name" "$dest")"; then
            sections+=("$kept")
            others+=("$name")
        else
            warn "[$arch] $dest/MANIFEST has no [$name] section: build it too (without --only) for a complete payload"
        fi
    done
    {
        printf '; k8s-nokmem payload manifest, written by scripts/build-payload.sh\n'
        # No build time: the same sources and flags give the same MANIFEST (reproducible).
        printf '[payload]\narch = %s\n' "$arch"
        for s in "${sections[@]}"; do
            printf '\n%s\n' "$s"
        done
    } >"$dest/.MANIFEST.tmp"
    mv "$dest/.MANIFEST.tmp" "$dest/MANIFEST"
    log "[$arch] wrote $dest/MANIFEST${others[*]:+ (kept the unchanged ${others[*]} section)}"
}

for arch in $ARCHES; do
    kn_check_arch "$arch"
    for name in "${NAMES[@]}"; do
        build_and_check "$name" "$arch"
    done
    install_arch "$arch"
done

printf '%-6s %-8s %-8s %10s  %-16s %-24s %-26s %s\n' arch binary version size result kmem-check run-check path
for arch in $ARCHES; do
    for name in "${NAMES[@]}"; do
        printf '%-6s %-8s %-8s %10s  %-16s %-24.24s %-26.26s %s\n' "$arch" "$name" "${M_VERSION[$arch/$name]}" \
            "$(kn_size "$OUT_DIR/$arch/$name")" "${M_HOW[$arch/$name]}" "${M_KMEM[$arch/$name]}" \
            "${M_CHECK[$arch/$name]}" "$OUT_DIR/$arch/$name"
    done
done
log "done in $(($(date +%s) - T_START)) s"
