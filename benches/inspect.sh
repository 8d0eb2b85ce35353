#!/usr/bin/env bash
# How fast is `k8s-nokmem inspect` on a ~100 MB Go binary, against `grep -c -a` reading
# the same file? Prints the median wall time of each and the ratio. See --help.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

usage() {
    cat <<EOF
usage: benches/inspect.sh [--runs N] [FILE]

Times 'k8s-nokmem inspect FILE' against the baseline 'grep -c -a memory.kmem.limit_in_bytes
FILE' (one pass over the bytes), each N times (default 7) after one warm-up run (so the
file is in the page cache), and prints the median of each, the ratio inspect/grep and
inspect's peak RSS.

FILE defaults to the payload kubelet (target/payload/amd64/kubelet, ~100 MB, built by
scripts/build-payload.sh). Without it, a real Go program of ~100 MB is built with
/usr/bin/go (Go code plus 100 MB of random bytes in a //go:embed variable) in a temp dir.

The helper is \$K8S_NOKMEM_BIN, else target/release/k8s-nokmem (built with
'cargo build --release' when missing). Record results in benches/README.md.
EOF
}

runs=7
file=''
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "inspect.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) file=$1; shift ;;
    esac
done

bin=${K8S_NOKMEM_BIN:-$top/target/release/k8s-nokmem}
if [ ! -x "$bin" ]; then
    echo "inspect.sh: building $bin (cargo build --release)" >&2
    (cd "$top" && cargo build --release --quiet)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-inspect.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ -z "$file" ] && [ -f "$top/target/payload/amd64/kubelet" ]; then
    file=$top/target/payload/amd64/kubelet
fi
if [ -z "$file" ]; then
    echo "inspect.sh: no kubelet in target/payload; building a 100 MB Go program" >&2
    pkg=$work/gopath/src/bench
    mkdir -p "$pkg"
    head -c 100000000 /dev/urandom >"$pkg/blob.bin"
    cat >"$pkg/main.go" <<'EOF'
package main

import (
	_ "embed"
	"fmt"
)

//go:embed blob.bin
var blob []byte

func main() { fmt.Println(len(blob)) }
EOF
    (cd "$pkg" && env GO111MODULE=off GOPATH="$work/gopath" GOFLAGS='' CGO_ENABLED=0 \
        /usr/bin/go build -ldflags '-s -w' -o "$work/big-go-program" .)
    rm -f "$pkg/blob.bin"
    file=$work/big-go-program
fi
[ -f "$file" ] || { echo "inspect.sh: '$file' is not a file" >&2; exit 2; }

# Wall time of one run in ms (exit status ignored: inspect exits 1 on a kmem binary,
# grep 1 when it finds nothing).
time_ms() {
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || true
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

bench() {
    time_ms "$@" >/dev/null # warm-up: page cache
    for _ in $(seq "$runs"); do time_ms "$@"; done | median
}

size=$(stat -c %s "$file")
inspect_ms=$(bench "$bin" inspect "$file")
grep_ms=$(bench grep -c -a memory.kmem.limit_in_bytes "$file")
rss_kb='?'
if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%M' -o "$work/rss" "$bin" inspect "$file" >/dev/null 2>&1 || true
    rss_kb=$(tail -n1 "$work/rss")
fi
ratio=$(awk -v a="$inspect_ms" -v b="$grep_ms" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')

echo "file:     $file ($((size / 1000000)) MB)"
echo "verdict:  $("$bin" inspect "$file" 2>&1 | head -n1 | sed "s|^$file: ||" | cut -c1-100)"
echo "inspect:  ${inspect_ms} ms (median of $runs, peak RSS ${rss_kb} KB)"
echo "grep -c:  ${grep_ms} ms (median of $runs)"
echo "ratio:    ${ratio} (inspect / grep)"
