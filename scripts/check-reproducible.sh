#!/usr/bin/env bash
# Build the k8s-nokmem .debs twice from this checkout and compare them byte for byte. The
# two builds differ in everything that must not matter (Debian's reproducible-builds
# practice): the directory, the files' mtimes (B's checkout is three days old), the umask,
# the time zone, the locale, the host name (a new UTS namespace; root only), the number of
# CPUs, and the time. On a difference it shows what differs with diffoscope and exits 1.
#
#   scripts/check-reproducible.sh                 the whole build, twice: each from an empty
#                                                 payload cache (the cache is a speed-up, never
#                                                 an input); ~2 x 25 min cold on 2 cores
#   scripts/check-reproducible.sh --skip-payload  the packaging only: the helper and cargo-deb,
#                                                 both builds from the payload in target/payload
#                                                 (scripts/build-deb.sh builds it); a few minutes
#
# Options: --arch amd64|arm64|all (default all), --keep (keep the build directories).
# Build A runs in this checkout with --skip-payload, else in a fresh copy; build B always
# runs in a fresh copy elsewhere (the checkout's commit plus its uncommitted changes),
# with the dependencies' compiled crates copied over under --skip-payload (our own crate
# is compiled again). Exit status: 0 identical, 1 different, 2 could not build.
set -euo pipefail

KN_PROG=check-reproducible
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/lib/common.sh"

arch=all
skip_payload=0
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=${2:?--arch needs amd64, arm64 or all}; shift 2 ;;
        --skip-payload) skip_payload=1; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done
case "$arch" in
    all) arches=(amd64 arm64) ;;
    amd64|arm64) arches=("$arch") ;;
    *) die "--arch '$arch': expected amd64, arm64 or all" ;;
esac

top=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$top"
command -v diffoscope >/dev/null || die "diffoscope not found; run: sudo scripts/install-deps.sh"
if [ "$skip_payload" -eq 1 ]; then
    for a in "${arches[@]}"; do
        [ -f "target/payload/$a/MANIFEST" ] ||
            die "no payload in target/payload/$a; build it first: scripts/build-deb.sh --arch $a"
    done
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/check-reproducible.XXXXXX")
cleanup() {
    if [ "$keep" -eq 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# copy_checkout DIR [AGE-DAYS]: the checkout's commit (a shared clone: the same commit
# time) plus its uncommitted changes and untracked files, in DIR; with AGE-DAYS every file
# is that many days old, as in a checkout made then.
copy_checkout() {
    local dir=$1 age=${2:-}
    git -c safe.directory="$top" clone -q --shared --no-checkout "$top" "$dir"
    git -C "$dir" checkout -q --detach "$(git -c safe.directory="$top" -C "$top" rev-parse HEAD)"
    git -c safe.directory="$top" -C "$top" ls-files -z --cached --others --exclude-standard |
        tar -C "$top" --null -T - --ignore-failed-read -c 2>/dev/null | tar -C "$dir" -x
    git -c safe.directory="$top" -C "$top" ls-files -z --deleted | (cd "$dir" && xargs -0 -r rm -f)
    if [ -n "$age" ]; then
        find "$dir" -path "$dir/.git" -prune -o -exec touch -h -d "@$(( $(date +%s) - age * 86400 ))" {} +
    fi
}

# seed_deps DIR: the compiled dependencies of the helper (host tools and both musl
# targets), so that build B compiles only our own crate again.
seed_deps() {
    local dir=$1 t
    mkdir -p "$dir/target"
    for t in release x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
        [ -d "target/$t" ] && cp -a "target/$t" "$dir/target/"
    done
    for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
        (cd "$dir" && cargo clean -q --release --target "$t" -p k8s-nokmem)
    done
}

# A locale other than C, to catch output that depends on it.
other_locale=$(locale -a 2>/dev/null | grep -v -E '^(C|POSIX)' | head -n1) || true
other_locale=${other_locale:-C.UTF-8}
cpus=$(nproc)

# build NAME DIR CACHE UMASK TZ LOCALE HOST CPUSET: scripts/build-deb.sh in DIR, varied.
build() {
    local name=$1 dir=$2 cache=$3 mask=$4 tz=$5 loc=$6 host=$7 cpuset=$8 args=() wrap=() t0
    args=(--arch "$arch")
    if [ "$skip_payload" -eq 1 ]; then
        args+=(--skip-payload)
    else
        args+=(-- --cache "$cache")
    fi
    if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
        wrap=(unshare --uts sh -c 'hostname "$0" && exec "$@"' "$host")
    fi
    if [ -n "$cpuset" ] && command -v taskset >/dev/null; then
        wrap=(taskset -c "$cpuset" "${wrap[@]}")
    fi
    log "build $name in $dir: umask $mask, TZ=$tz, LC_ALL=$loc, host name $host, CPUs ${cpuset:-all ($cpus)}${cache:+, empty cache $cache}"
    t0=$(date +%s)
    if ! (cd "$dir" && umask "$mask" && env TZ="$tz" LC_ALL="$loc" LANG="$loc" \
        "${wrap[@]}" scripts/build-deb.sh "${args[@]}") >"$work/$name.log" 2>&1; then
        tail -n 30 "$work/$name.log" >&2
        die "build $name failed (log: $work/$name.log; --keep keeps it)"
    fi
    log "build $name done in $(( $(date +%s) - t0 )) s"
}

b=$work/b/a/longer/path/k8s-nokmem
copy_checkout "$b" 3
if [ "$skip_payload" -eq 1 ]; then
    a=$top
    for x in "${arches[@]}"; do
        mkdir -p "$b/target/payload"
        cp -a "target/payload/$x" "$b/target/payload/"
    done
    seed_deps "$b"
    cache_a='' cache_b=''
else
    a=$work/a/k8s-nokmem
    copy_checkout "$a"
    cache_a=$work/cache-a cache_b=$work/cache-b
fi
# A: one CPU (when there are more), UTC, C, umask 022. B: all CPUs, another time zone and
# locale, umask 077, another host name, another directory, minutes later.
build A "$a" "$cache_a" 022 UTC C "$(if [ "$cpus" -gt 1 ]; then echo reproducible-a; else echo a; fi)" \
    "$(if [ "$cpus" -gt 1 ]; then echo 0; fi)"
mkdir -p "$work/out-a"
for x in "${arches[@]}"; do cp "$a"/target/debian/k8s-nokmem_*_"$x".deb "$work/out-a/"; done
build B "$b" "$cache_b" 077 Asia/Kathmandu "$other_locale" other-build-host ''

rc=0
for x in "${arches[@]}"; do
    da=$(ls "$work"/out-a/k8s-nokmem_*_"$x".deb)
    db=$(ls "$b"/target/debian/k8s-nokmem_*_"$x".deb)
    [ "$(basename "$da")" = "$(basename "$db")" ] || { log "$x: different names: $da $db"; rc=1; continue; }
    if cmp -s "$da" "$db"; then
        log "$x: identical: $(basename "$da") sha256 $(sha256sum "$da" | cut -d' ' -f1)"
    else
        log "$x: DIFFERENT: $(basename "$da") (A: $(sha256sum "$da" | cut -d' ' -f1), B: $(sha256sum "$db" | cut -d' ' -f1)); diffoscope:"
        diffoscope --no-progress --max-text-report-size 200000 --max-diff-block-lines 40 \
            --text - "$da" "$db" || true
        rc=1
    fi
done
if [ "$rc" -eq 0 ]; then
    log "reproducible: ${arches[*]}"
else
    keep=1
fi
exit "$rc"
