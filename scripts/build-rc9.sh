#!/usr/bin/env bash
# Build runc v1.0.0-rc9, the runc of the original write-up, with and without nokmem, for
# tests/rc9.rs. See --help.
set -euo pipefail

KN_PROG=build-rc9
KN_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=scripts/lib/gobuild.sh
. "$KN_REPO/scripts/lib/gobuild.sh"

RC9_TAG=v1.0.0-rc9
RC9_VERSION=1.0.0-rc9
# The upstream commit of the tag (a release tarball has no .git to say it).
RC9_COMMIT=d736ef14f0288d6993a1845745d6756cfc9ddd5a
RC9_UPSTREAM=https://github.com/opencontainers/runc
# runc's own `make static` tags, without nokmem: the kmem-enabling test subject.
KMEM_TAGS=(seccomp netgo osusergo static_build)

usage() {
    cat <<EOF
usage: scripts/build-rc9.sh [--src DIR|TARBALL] [--commit SHA] [--out DIR] [--arch amd64|arm64|all]
                            [--cache DIR] [--go GO]

Builds runc $RC9_VERSION (upstream tag $RC9_TAG, commit $RC9_COMMIT), the runc that
Docker 18.09 nodes run and that the original write-up swaps in, twice:

  OUT/nokmem/<arch>/runc, MANIFEST  scripts/build-payload.sh --runc-src TREE --only runc
                                    (tags seccomp netgo osusergo static_build nokmem, every
                                    payload check; amd64 and arm64)
  OUT/kmem/amd64/runc               the same tree with runc's own static tags
                                    (${KMEM_TAGS[*]}): kmem accounting on, a test
                                    subject for tests/rc9.rs, never a payload

The source is the first of:
  1. --src, else \$K8S_NOKMEM_RUNC_RC9_SRC: a git checkout at $RC9_TAG, an unpacked
     release tree, or the release tarball (.tar.gz, unpacked once into the cache);
  2. <repo>/../shared/sources/runc-$RC9_TAG.tar.gz (the project's CI has it there);
  3. git clone --depth 1 -b $RC9_TAG $RC9_UPSTREAM (into the cache, once).
A tree that is not a git checkout is taken to be commit $RC9_COMMIT (override with
--commit); its VERSION file must say $RC9_VERSION.

Options:
  --src P        the runc $RC9_TAG tree or tarball (see above)
  --commit SHA   the commit of a tree that is not a git checkout
  --out DIR      output directory (default: target/rc9 in the repository)
  --arch A       arches of the nokmem build: amd64, arm64 or all (default: all); the kmem
                 build is for the host only
  --cache DIR    (default: \${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem})
  --go GO        the go command (default: \$GO, else go; Debian 12's Go 1.19 builds rc9 in
                 GOPATH mode with its vendor/)
  -h, --help     this help

Cached like the payload (a changed tree, Go or C toolchain rebuilds): cold ~70 s per
build on 2 cores, cached a few seconds. Environment: K8S_NOKMEM_BIN (the helper whose
'inspect --json' checks the nokmem build; see build-payload.sh). Exit status: 0 ok, 1 a
build or a check failed, 2 usage or environment error (e.g. no source found).
EOF
}

SRC_ARG=${K8S_NOKMEM_RUNC_RC9_SRC:-}
SRC_FROM=K8S_NOKMEM_RUNC_RC9_SRC
COMMIT_ARG=''
OUT_DIR=$KN_REPO/target/rc9
ARCH_ARG=all
KN_CACHE=${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}
KN_NO_CACHE=0
KN_GO=${GO:-go}

while [ $# -gt 0 ]; do
    case "$1" in
    --src) need_arg "$@"; SRC_ARG=$2; SRC_FROM=--src; shift 2 ;;
    --commit) need_arg "$@"; COMMIT_ARG=$2; shift 2 ;;
    --out) need_arg "$@"; OUT_DIR=$2; shift 2 ;;
    --arch) need_arg "$@"; ARCH_ARG=$2; shift 2 ;;
    --cache) need_arg "$@"; KN_CACHE=$2; shift 2 ;;
    --go) need_arg "$@"; KN_GO=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done
kn_need_go
T_START=$(date +%s)
KN_WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-rc9.XXXXXX")
trap 'rm -rf "$KN_WORK"' EXIT
kn_prepare_cache
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd -P)

# unpack_tarball FILE: unpack once into $KN_CACHE/src/runc-rc9-<sha256>/ (kept, so the
# tree's file mtimes, and with them its cache digest, stay the same); sets TREE.
unpack_tarball() {
    local sha dir top
    sha=$(kn_sha256 "$1")
    dir="$KN_CACHE/src/runc-$RC9_TAG-${sha:0:16}"
    if [ ! -f "$dir.unpacked" ]; then
        log "unpacking $1 into $dir"
        rm -rf "$dir" "$dir.tmp"
        mkdir -p "$dir.tmp"
        tar -xzf "$1" -C "$dir.tmp" || die "cannot unpack '$1' (tar -xzf failed)" 1
        mv "$dir.tmp" "$dir"
        printf 'tarball=%s\nsha256=%s\n' "$1" "$sha" >"$dir.unpacked"
    fi
    # The release tarball holds one top directory (runc-1.0.0-rc9/).
    top=$(find "$dir" -mindepth 1 -maxdepth 1 -type d)
    if [ "$(wc -l <<<"$top")" != 1 ] || [ ! -f "$top/VERSION" ]; then
        die "'$1' does not hold one runc tree (expected runc-$RC9_VERSION/VERSION)"
    fi
    TREE=$top
}

# use_source PATH: a tree or a tarball.
use_source() {
    case "$1" in
    *.tar.gz | *.tgz) unpack_tarball "$1" ;;
    *) TREE=$1 ;;
    esac
}

shared="$KN_REPO/../shared/sources/runc-$RC9_TAG.tar.gz"
clone="$KN_CACHE/src/runc-$RC9_TAG.git"
if [ -n "$SRC_ARG" ]; then
    [ -e "$SRC_ARG" ] || die "$SRC_FROM '$SRC_ARG' does not exist"
    use_source "$SRC_ARG"
elif [ -f "$shared" ]; then
    use_source "$(cd "$(dirname "$shared")" && pwd -P)/$(basename "$shared")"
elif [ -d "$clone/.git" ] || {
    log "cloning $RC9_UPSTREAM at $RC9_TAG into $clone"
    rm -rf "$clone.tmp"
    mkdir -p "$(dirname "$clone")"
    git clone -q --depth 1 -b "$RC9_TAG" "$RC9_UPSTREAM" "$clone.tmp" >"$KN_WORK/clone.log" 2>&1 &&
        mv "$clone.tmp" "$clone"
}; then
    TREE=$clone
else
    sed 's/^/  /' "$KN_WORK/clone.log" >&2
    die "no runc $RC9_TAG source: tried
  1. K8S_NOKMEM_RUNC_RC9_SRC (or --src): not set
  2. $shared: not found
  3. git clone --depth 1 -b $RC9_TAG $RC9_UPSTREAM: failed (above)
  note: download the release tree and run: K8S_NOKMEM_RUNC_RC9_SRC=/path/to/runc-$RC9_TAG.tar.gz scripts/build-rc9.sh"
fi
TREE=$(cd "$TREE" && pwd -P)
version=$(tr -d ' \n' <"$TREE/VERSION" 2>/dev/null) || version=''
[ "$version" = "$RC9_VERSION" ] ||
    die "'$TREE' is not runc $RC9_VERSION (its VERSION says '$version')"
commit_args=()
if ! git -C "$TREE" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    commit_args=(--runc-commit "${COMMIT_ARG:-$RC9_COMMIT}")
elif [ -n "$COMMIT_ARG" ]; then
    commit_args=(--runc-commit "$COMMIT_ARG")
fi

# 1. The nokmem build: the payload builder with all its checks and its MANIFEST.
log "nokmem build: scripts/build-payload.sh --runc-src $TREE ${commit_args[*]} --only runc --arch $ARCH_ARG"
"$KN_REPO/scripts/build-payload.sh" --runc-src "$TREE" "${commit_args[@]}" --only runc \
    --arch "$ARCH_ARG" --out "$OUT_DIR/nokmem" --cache "$KN_CACHE" --go "$KN_GO" >&2

# 2. The kmem build (host arch): the same source and ldflags, runc's own static tags.
arch=$(kn_host_arch)
label="[runc-kmem $arch]"
kn_local_source "$TREE"
commit=$(sed -n 's/^commit = //p' "$OUT_DIR/nokmem/$arch/MANIFEST" 2>/dev/null | head -n1)
[ -n "$commit" ] || commit=$(sed -n 's/^commit = //p' "$OUT_DIR/nokmem/"*/MANIFEST | head -n1)
GO_VERSION=$(kn_go_version)
TRIM=$(kn_trimpath_flag "$GO_VERSION")
cc=${CC:-gcc}
seccomp=$(pkg-config --modversion libseccomp 2>/dev/null) ||
    die "$label libseccomp not found by pkg-config (apt-get install libseccomp-dev)"
ldflags="-s -w -extldflags -static -X main.version=$RC9_VERSION -X main.gitCommit=$commit"
key_text="script=$KN_SCRIPT_VERSION
what=runc-kmem-test-subject
source=$KN_SRC_DIGEST
arch=$arch
tags=${KMEM_TAGS[*]}
ldflags=$ldflags
go=$GO_VERSION
cc=$("$cc" --version | head -n1)
libseccomp=$seccomp"
key=$(kn_sha256_text "$key_text")
out=$OUT_DIR/kmem/$arch/runc
mkdir -p "$(dirname "$out")"
t0=$(date +%s)
if kn_cache_get "$key" runc "$out.tmp"; then
    how="cache hit"
else
    log "$label building ($KN_SRC_DESC, tags ${KMEM_TAGS[*]})"
    gopath=$KN_WORK/gopath
    kn_gopath_link "$gopath" github.com/opencontainers/runc "$TREE"
    # shellcheck disable=SC2086  # $TRIM is one flag or nothing
    if ! env GO111MODULE=off GOPATH="$gopath" GOFLAGS='' GOPROXY=off GOCACHE="$(kn_gocache)" \
        CGO_ENABLED=1 GOOS=linux GOARCH="$arch" CC="$cc" \
        "$KN_GO" build $TRIM -tags "$(kn_tags_flag "$GO_VERSION" "${KMEM_TAGS[@]}")" \
        -ldflags "$ldflags" -o "$out.tmp" github.com/opencontainers/runc >"$KN_WORK/kmem.log" 2>&1; then
        tail -n 40 "$KN_WORK/kmem.log" | sed 's/^/  /' >&2
        die "$label go build failed" 1
    fi
    kn_cache_put "$key" "$key_text" runc "$out.tmp"
    how="built"
fi
mv "$out.tmp" "$out"
kn_check_static "$out" "$arch" "$label"
ev=$(kn_kmem_evidence "$out")
[ "${ev% *}" != 0 ] || die "$label '$out' holds no memory.kmem.limit_in_bytes: not the kmem subject" 1
log "$label $how in $(($(date +%s) - t0)) s: $out (kmem evidence $ev)"
log "done in $(($(date +%s) - T_START)) s: $OUT_DIR/nokmem/*/runc, $out"
