# shellcheck shell=bash disable=SC2034  # sets variables its callers read
# Shared shell functions for the Go builds (scripts/build-payload.sh, build-probes.sh,
# build-rc9.sh, tests/e2e/build-kubelet-debs.sh): scripts/lib/common.sh, Go/arch facts,
# Debian or local source trees, the build cache, and the checks a binary must pass before
# it is shipped. Source it after `set -euo pipefail`; it only
# defines functions and variables.
#
# Variables the caller sets before calling these functions:
#   KN_PROG       message prefix (e.g. build-payload; scripts/lib/common.sh)
#   KN_REPO       repository root
#   KN_CACHE      cache directory (sources, Go build cache, finished binaries)
#   KN_NO_CACHE   1: neither read nor write finished binaries, use a throw-away GOCACHE
#   KN_GO         the go command
#   KN_WORK       a private temporary directory the caller removes at exit

# Bump when a change to these scripts changes what gets built: it is part of every
# cache key, so old cached binaries are no longer used.
KN_SCRIPT_VERSION=3

# log, warn, die, need_arg, need_tools (KN_PROG is their prefix)
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---------------------------------------------------------------------------------
# Go and architectures

# kn_need_go: $KN_GO (GO, or --go) must be on PATH.
kn_need_go() {
    command -v "$KN_GO" >/dev/null || die "'$KN_GO' not found (apt-get install golang-go, or pass --go)"
}

kn_go_version() { "$KN_GO" version | awk '{print $3}'; }

# kn_go_at_least GOVERSION MINOR: true when GOVERSION (go1.19.8) is >= go1.MINOR.
kn_go_at_least() {
    local minor=${1#go1.}
    minor=${minor%%.*}
    minor=${minor%%[!0-9]*}
    [ -n "$minor" ] && [ "$minor" -ge "$2" ]
}

kn_host_arch() { "$KN_GO" env GOHOSTARCH; }

kn_check_arch() {
    case "$1" in
    amd64 | arm64) ;;
    *) die "unsupported architecture '$1' (supported: amd64, arm64)" ;;
    esac
}

# What `file` prints for the machine, the GNU triplet, the qemu-user binary.
kn_file_machine() { case "$1" in amd64) echo x86-64 ;; arm64) echo 'ARM aarch64' ;; esac; }
kn_triplet() { case "$1" in amd64) echo x86_64-linux-gnu ;; arm64) echo aarch64-linux-gnu ;; esac; }
kn_qemu() { case "$1" in amd64) echo qemu-x86_64-static ;; arm64) echo qemu-aarch64-static ;; esac; }

# kn_tags_flag GOVERSION TAG...: the value for `go build -tags`. Go >= 1.13 takes a
# comma list; older releases (k8s 1.14 needs Go 1.12) only a space-separated one.
kn_tags_flag() {
    local gv=$1
    shift
    local IFS=' '
    if kn_go_at_least "$gv" 13; then
        IFS=,
    fi
    printf '%s' "$*"
}

# -trimpath exists since Go 1.13.
kn_trimpath_flag() { if kn_go_at_least "$1" 13; then printf '%s' -trimpath; fi; }

kn_sha256() { sha256sum "$1" | awk '{print $1}'; }
kn_sha256_text() { printf '%s' "$1" | sha256sum | awk '{print $1}'; }
kn_size() { stat -c %s "$1"; }

# kn_built_using FILE...: the Debian source packages, with their exact versions, that own
# FILEs (Debian Policy 7.8 Built-Using entries: "golang-1.19 (= 1.19.8-2)"), one per line,
# sorted; a file no package owns (a toolchain or a tree outside dpkg) is left out.
kn_built_using() {
    [ $# -gt 0 ] || return 0
    local owners f paths=()
    # dpkg knows a file by the path its package ships: try it without '..' and resolved.
    for f in "$@"; do
        paths+=("$(realpath -s -m "$f")" "$(realpath -m "$f")")
    done
    # "pkg[:arch]: /path" (or "pkg1, pkg2: /dir"); diversion notes are skipped.
    owners=$(LC_ALL=C dpkg-query -S "${paths[@]}" 2>/dev/null |
        awk -F': ' '!/^diversion by/ && NF >= 2 {n = split($1, p, ", "); for (i = 1; i <= n; i++) print p[i]}' |
        LC_ALL=C sort -u) || true
    [ -n "$owners" ] || return 0
    # shellcheck disable=SC2086  # one package name per word
    LC_ALL=C dpkg-query -W -f='${source:Package} (= ${source:Version})\n' $owners | LC_ALL=C sort -u
}

# kn_go_built_using: the Built-Using entry of the Go toolchain (its compiler and standard
# library are compiled in), or nothing for a Go outside dpkg (--go ~/go1.12/bin/go).
kn_go_built_using() {
    local go
    go=$(readlink -f "$(command -v "$KN_GO")") || return 0
    kn_built_using "$go"
}

# kn_join_lines SEP: stdin's non-empty lines joined with SEP.
kn_join_lines() { awk -v sep="$1" 'NF { out = out (n++ ? sep : "") $0 } END { print out }'; }

# ---------------------------------------------------------------------------------
# Source trees. Each kn_*_source function sets:
#   KN_SRC_DIR     absolute path of the tree
#   KN_SRC_DIGEST  what the cache key uses for the tree
#   KN_SRC_DESC    the MANIFEST `source` value
#   KN_SRC_DEBVER  the Debian version (Debian sources only)
#   KN_SRC_COMMIT  git commit (local git checkouts only)
#   KN_SRC_DIRTY   1 when a local checkout has changes
#   KN_SRC_EPOCH   a timestamp of the source (changelog or commit), for build dates
#   KN_SRC_DSC, KN_SRC_DSC_SHA256   the .dsc file name and its sha256 (Debian sources only)
#   KN_SRC_PKG     the Debian source package name (Debian sources only)
# KN_SRC_DESC names the source without the directory it sits in (the MANIFEST ships it,
# and a build elsewhere must give the same bytes); KN_SRC_DIR is logged instead.

kn_reset_source() {
    KN_SRC_DIR='' KN_SRC_DIGEST='' KN_SRC_DESC='' KN_SRC_DEBVER='' KN_SRC_COMMIT=''
    KN_SRC_DIRTY=0 KN_SRC_EPOCH='' KN_SRC_DSC='' KN_SRC_DSC_SHA256='' KN_SRC_PKG=''
}

# kn_debian_source PKG: the source package PKG from apt's deb-src entries, downloaded
# and unpacked once into $KN_CACHE/src/PKG-VERSION and reused while apt offers the same
# .dsc (same sha256).
kn_debian_source() {
    local pkg=$1 srcdir="$KN_CACHE/src" uris line dsc sha ver dir stamp
    kn_reset_source
    # --print-uris answers from apt's lists, without network.
    uris=$(cd / && LC_ALL=C apt-get source --print-uris "$pkg" 2>/dev/null) || uris=''
    line=$(grep -E "^'[^']+' ${pkg}_[^ ]+\\.dsc [0-9]+ SHA256:[0-9a-f]{64}\$" <<<"$uris" | head -n1) || true
    if [ -z "$line" ]; then
        # Air-gapped or no deb-src: the newest tree unpacked earlier still serves.
        stamp=$(find "$srcdir" -maxdepth 1 -name "$pkg-*.unpacked" -printf '%T@ %p\n' 2>/dev/null |
            sort -rn | head -n1 | cut -d' ' -f2-) || true
        if [ -z "$stamp" ]; then
            die "apt knows no source package '$pkg' (no deb-src entry, or apt lists not updated)
  note: run 'sudo scripts/install-deps.sh' (adds /etc/apt/sources.list.d/k8s-nokmem-src.sources and runs apt-get update)
  note: or build from a local checkout with --$pkg-src DIR"
        fi
        warn "apt knows no source package '$pkg'; using the tree unpacked earlier: ${stamp%.unpacked}"
        dsc=$(sed -n 's/^dsc=//p' "$stamp")
        sha=$(sed -n 's/^dsc_sha256=//p' "$stamp")
        dir=${stamp%.unpacked}
    else
        dsc=$(awk '{print $2}' <<<"$line")
        sha=$(awk '{print $4}' <<<"$line")
        sha=${sha#SHA256:}
        dir="$srcdir/$pkg-${dsc#"${pkg}"_}"
        dir=${dir%.dsc}
        if ! grep -qx "dsc_sha256=$sha" "$dir.unpacked" 2>/dev/null || [ ! -d "$dir" ]; then
            kn_debian_fetch "$pkg" "$dsc" "$sha" "$dir"
        fi
    fi
    ver=${dsc#"${pkg}"_}
    KN_SRC_DIR=$dir
    KN_SRC_DEBVER=${ver%.dsc}
    KN_SRC_DIGEST="dsc-sha256:$sha"
    KN_SRC_DESC="debian:$pkg=$KN_SRC_DEBVER"
    KN_SRC_PKG=$pkg KN_SRC_DSC=$dsc KN_SRC_DSC_SHA256=$sha
    KN_SRC_EPOCH=$(dpkg-parsechangelog -l "$dir/debian/changelog" -STimestamp 2>/dev/null) || KN_SRC_EPOCH=''
}

kn_debian_fetch() {
    local pkg=$1 dsc=$2 sha=$3 dir=$4 srcdir="$KN_CACHE/src" t0 got ver
    t0=$(date +%s)
    mkdir -p "$srcdir"
    ver=${dsc#"${pkg}"_}
    ver=${ver%.dsc}
    log "[source $pkg] apt-get source --download-only $pkg=$ver into $srcdir"
    if ! (cd "$srcdir" && apt-get source --download-only -qq "$pkg=$ver") \
        >"$KN_WORK/apt-source-$pkg.log" 2>&1; then
        sed 's/^/  /' "$KN_WORK/apt-source-$pkg.log" >&2
        die "failed to download source package '$pkg' with apt-get source
  note: the Debian mirror must be reachable once; later runs reuse $srcdir"
    fi
    got=$(kn_sha256 "$srcdir/$dsc")
    [ "$got" = "$sha" ] || die "downloaded '$srcdir/$dsc' has sha256 $got, apt lists say $sha" 1
    rm -rf "$dir.tmp" "$dir"
    if ! dpkg-source --no-check -x "$srcdir/$dsc" "$dir.tmp" >"$KN_WORK/dpkg-source-$pkg.log" 2>&1; then
        sed 's/^/  /' "$KN_WORK/dpkg-source-$pkg.log" >&2
        die "failed to unpack '$srcdir/$dsc' with dpkg-source -x" 1
    fi
    mv "$dir.tmp" "$dir"
    printf 'dsc=%s\ndsc_sha256=%s\n' "$dsc" "$sha" >"$dir.unpacked"
    log "[source $pkg] unpacked $dir in $(($(date +%s) - t0)) s"
}

# kn_local_source DIR: a local tree (any version). A git checkout is identified by its
# HEAD plus a hash of its uncommitted changes and untracked files; any other directory
# by a hash of every file's name, size and mtime.
kn_local_source() {
    local dir
    kn_reset_source
    [ -d "$1" ] || die "source directory '$1' does not exist"
    dir=$(cd "$1" && pwd -P)
    KN_SRC_DIR=$dir
    if git -C "$dir" rev-parse --verify -q HEAD >/dev/null 2>&1; then
        local changes
        KN_SRC_COMMIT=$(git -C "$dir" rev-parse HEAD)
        KN_SRC_EPOCH=$(git -C "$dir" log -1 --format=%ct HEAD)
        changes=$({
            git -C "$dir" diff HEAD --binary
            git -C "$dir" ls-files -z --others --exclude-standard |
                (cd "$dir" && xargs -0 -r sha256sum)
        } | sha256sum | awk '{print $1}')
        if [ -n "$(git -C "$dir" status --porcelain --untracked-files=normal | head -n1)" ]; then
            KN_SRC_DIRTY=1
        fi
        KN_SRC_DIGEST="git:$KN_SRC_COMMIT:$changes"
        KN_SRC_DESC="git:$KN_SRC_COMMIT"
        if [ "$KN_SRC_DIRTY" = 1 ]; then
            KN_SRC_DESC="$KN_SRC_DESC-dirty"
            warn "'$dir' has uncommitted changes; the MANIFEST says -dirty"
        fi
    else
        warn "'$dir' is not a git checkout: it is identified by file names, sizes and mtimes"
        KN_SRC_DIGEST="dir:$(cd "$dir" && find . -type f -printf '%P\t%s\t%T@\n' | LC_ALL=C sort | sha256sum | awk '{print $1}')"
        KN_SRC_DESC="dir:$(basename "$dir"):${KN_SRC_DIGEST#dir:}"
        # Not the build's time: SOURCE_DATE_EPOCH, else the newest file's mtime (an
        # unpacked release tarball keeps its files' times), so a rebuild gives the same bytes.
        KN_SRC_EPOCH=${SOURCE_DATE_EPOCH:-$(find "$dir" -type f -printf '%T@\n' | sort -n | tail -n1 | cut -d. -f1)}
    fi
}

# ---------------------------------------------------------------------------------
# Build cache: $KN_CACHE/bin/<sha256 of the key text>/{<name>,key.txt,sha256}.

# kn_cache_get KEYHASH NAME DEST: copy a cached binary to DEST; false on a miss.
kn_cache_get() {
    local entry="$KN_CACHE/bin/$1"
    [ "$KN_NO_CACHE" = 1 ] && return 1
    [ -f "$entry/$2" ] && [ -f "$entry/sha256" ] || return 1
    if [ "$(kn_sha256 "$entry/$2")" != "$(cat "$entry/sha256")" ]; then
        warn "cache entry '$entry' is corrupt; rebuilding"
        rm -rf "$entry"
        return 1
    fi
    cp "$entry/$2" "$3.tmp" && mv "$3.tmp" "$3"
}

# kn_cache_put KEYHASH KEYTEXT NAME FILE
kn_cache_put() {
    local entry="$KN_CACHE/bin/$1" tmp
    [ "$KN_NO_CACHE" = 1 ] && return 0
    mkdir -p "$KN_CACHE/bin"
    tmp=$(mktemp -d "$KN_CACHE/bin/.tmp.XXXXXX")
    cp "$4" "$tmp/$3"
    printf '%s\n' "$2" >"$tmp/key.txt"
    kn_sha256 "$4" >"$tmp/sha256"
    rm -rf "$entry"
    mv "$tmp" "$entry" 2>/dev/null || rm -rf "$tmp"
}

# kn_gocache: the GOCACHE to build with (kept in the cache dir; fresh with --no-cache).
kn_gocache() {
    if [ "$KN_NO_CACHE" = 1 ]; then
        echo "$KN_WORK/go-build"
    else
        echo "$KN_CACHE/go-build"
    fi
}

# kn_gopath_link GOPATH IMPORT_PATH TREE: make TREE importable as IMPORT_PATH in GOPATH.
kn_gopath_link() {
    if [ ! -e "$1/src/$2" ]; then
        mkdir -p "$(dirname "$1/src/$2")"
        ln -s "$3" "$1/src/$2"
    fi
}

# Every package that holds kubelet's version variables in some Kubernetes release
# (1.14: pkg/version and client-go; 1.15+: component-base). In GOPATH mode the vendored
# ones carry the vendor/ prefix: without it `-X` is silently ignored.
KN_KUBE_VERSION_PKGS=(
    k8s.io/kubernetes/vendor/k8s.io/component-base/version
    k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version
    k8s.io/kubernetes/pkg/version
)

# kn_kubelet_ldflags GITVERSION MAJOR MINOR TREESTATE BUILDDATE [COMMIT]: the -ldflags value
# that makes `kubelet --version` tell the truth (stripped: -s -w).
kn_kubelet_ldflags() {
    local flags="-s -w" pkg
    for pkg in "${KN_KUBE_VERSION_PKGS[@]}"; do
        flags+=" -X $pkg.gitVersion=$1 -X $pkg.gitMajor=$2"
        flags+=" -X $pkg.gitMinor=$3 -X $pkg.gitTreeState=$4"
        flags+=" -X $pkg.buildDate=$5"
        [ -z "${6:-}" ] || flags+=" -X $pkg.gitCommit=$6"
    done
    printf '%s' "$flags"
}

kn_prepare_cache() {
    mkdir -p "$KN_CACHE" 2>/dev/null && [ -w "$KN_CACHE" ] ||
        die "cache directory '$KN_CACHE' is not writable
  note: pass --cache DIR or set K8S_NOKMEM_CACHE, or run as root"
}

# ---------------------------------------------------------------------------------
# Checks

# kn_check_static FILE ARCH LABEL: `file` must say statically linked and the right machine.
kn_check_static() {
    local desc machine
    desc=$(file -b "$1")
    machine=$(kn_file_machine "$2")
    case "$desc" in
    *"statically linked"*) ;;
    *) die "$3: '$1' is not statically linked: $desc" 1 ;;
    esac
    case "$desc" in
    *", $machine,"*) ;;
    *) die "$3: '$1' is not a $2 ($machine) binary: $desc" 1 ;;
    esac
}

# kn_kmem_evidence FILE: prints "N1 N2": how many times the bytes hold
# memory.kmem.limit_in_bytes and libcontainer/cgroups/fs/kmem.go (pclntab file name).
kn_kmem_evidence() {
    local a b
    a=$(grep -c -a -F 'memory.kmem.limit_in_bytes' "$1") || a=0
    b=$(grep -c -a -F 'libcontainer/cgroups/fs/kmem.go' "$1") || b=0
    echo "$a $b"
}

# kn_build_tags FILE: the -tags= value `go version -m` shows (Go >= 1.18 builds), or
# nothing; KN_HAS_BUILD_SETTINGS=1 when the binary records build settings at all (so
# that no -tags line means "built without tags").
kn_build_tags() {
    local info
    info=$("$KN_GO" version -m "$1" 2>/dev/null) || info=''
    KN_HAS_BUILD_SETTINGS=0
    if awk '$1 == "build" && $2 ~ /^GOOS=/ {found = 1} END {exit !found}' <<<"$info"; then
        KN_HAS_BUILD_SETTINGS=1
    fi
    KN_BUILD_TAGS=$(awk '$1 == "build" && $2 ~ /^-tags=/ {sub(/^-tags=/, "", $2); print $2}' <<<"$info")
}

# kn_has_inspect BIN: BIN's `inspect` takes --json and a FILE (the first stub took neither).
kn_has_inspect() { "$1" inspect --help 2>/dev/null | grep -q -e '--json'; }

# kn_inspect_init: sets KN_INSPECT_BIN to the k8s-nokmem helper to use for `inspect`,
# or to nothing when no helper with an `inspect` subcommand is available (then the
# fallback check runs). Builds the helper once when it is missing.
KN_INSPECT_TRIED=''
KN_INSPECT_BIN=''
kn_inspect_init() {
    if [ -z "$KN_INSPECT_TRIED" ]; then
        KN_INSPECT_TRIED=1
        local bin=${K8S_NOKMEM_BIN:-$KN_REPO/target/release/k8s-nokmem}
        # The repository's own helper is (re)built when missing or older than `inspect
        # --json FILE`; an explicit K8S_NOKMEM_BIN is used as it is.
        if [ -z "${K8S_NOKMEM_BIN:-}" ] && [ -f "$KN_REPO/Cargo.toml" ] &&
            ! { [ -x "$bin" ] && kn_has_inspect "$bin"; }; then
            log "building the helper for 'inspect': cargo build --release (log $KN_WORK/cargo.log)"
            if ! (cd "$KN_REPO" && cargo build --release) >"$KN_WORK/cargo.log" 2>&1; then
                warn "cargo build --release failed (tail of the log follows); using the fallback kmem check"
                tail -n 5 "$KN_WORK/cargo.log" | sed 's/^/  /' >&2
            fi
        fi
        if [ -n "${K8S_NOKMEM_BIN:-}" ] && [ ! -x "$bin" ]; then
            die "K8S_NOKMEM_BIN='$bin' is not an executable"
        fi
        if [ -x "$bin" ] && kn_has_inspect "$bin"; then
            KN_INSPECT_BIN=$bin
            log "kmem check: '$bin inspect --json'"
        else
            log "kmem check: fallback (go version -m tags contain nokmem, and no memory.kmem.limit_in_bytes / libcontainer/cgroups/fs/kmem.go in the bytes): '$bin' has no 'inspect --json FILE' yet"
        fi
    fi
}

# kn_check_nokmem FILE LABEL: refuse (exit 1) unless FILE cannot enable kmem. Sets
# KN_KMEM_HOW to the check that ran.
kn_check_nokmem() {
    local file=$1 label=$2 bin rc=0 out tags ev
    kn_inspect_init
    bin=$KN_INSPECT_BIN
    if [ -n "$bin" ]; then
        out=$("$bin" inspect --json "$file" 2>"$KN_WORK/inspect.err") || rc=$?
        case $rc in
        0) KN_KMEM_HOW="k8s-nokmem inspect" ;;
        1) # The one-line human verdict names the evidence; the JSON stays in the work dir.
            printf '%s\n' "$out" >"$KN_WORK/inspect.json"
            die "$label: '$file' enables kmem accounting: $("$bin" inspect "$file" 2>&1 | head -n 3)" 1 ;;
        2) die "$label: k8s-nokmem inspect cannot read '$file' as a Go binary: $(cat "$KN_WORK/inspect.err") $out" 1 ;;
        *) die "$label: k8s-nokmem inspect '$file' failed (exit $rc): $(cat "$KN_WORK/inspect.err")" 1 ;;
        esac
        return 0
    fi
    kn_build_tags "$file"
    tags=$KN_BUILD_TAGS
    if [ "$KN_HAS_BUILD_SETTINGS" = 1 ]; then
        case ",$tags," in
        *,nokmem,*) ;;
        *) die "$label: '$file' was built without the nokmem tag (go version -m: -tags='$tags')" 1 ;;
        esac
    else
        warn "$label: '$file' records no build tags (built by Go < 1.18?); only its bytes are checked"
    fi
    ev=$(kn_kmem_evidence "$file")
    if [ "$ev" != "0 0" ]; then
        die "$label: '$file' holds kmem-enabling code (memory.kmem.limit_in_bytes x${ev% *}, libcontainer/cgroups/fs/kmem.go x${ev#* })" 1
    fi
    KN_KMEM_HOW="fallback: go version -m tags${tags:+ (-tags=$tags)} + no kmem strings"
}

# kn_run_version FILE ARCH: run FILE --version, natively or under qemu-user; sets
# KN_VERSION_LINE (the first line of the output), KN_VERSION_OUT (all of it) and KN_CHECK_HOW.
kn_run_version() {
    local file=$1 arch=$2 out qemu
    if [ "$arch" = "$(kn_host_arch)" ]; then
        KN_CHECK_HOW="--version natively"
        out=$(timeout 120 "$file" --version 2>&1) || die "'$file --version' failed: $out" 1
    else
        qemu=$(kn_qemu "$arch")
        command -v "$qemu" >/dev/null || die "$qemu not found (apt-get install qemu-user-static)"
        KN_CHECK_HOW="--version under $qemu"
        out=$(timeout 300 "$qemu" "$file" --version 2>&1) || die "'$qemu $file --version' failed: $out" 1
    fi
    KN_VERSION_LINE=${out%%$'\n'*}
    KN_VERSION_OUT=$out
}
