#!/usr/bin/env bash
# Benchmark: `k8s-nokmem verify` over generated container memory cgroup trees (1,000 and
# 10,000 containers by default) against `find ... -name memory.kmem.usage_in_bytes | xargs
# cat` over the same tree in the same run. Prints one line per size with the best of
# $RUNS wall times, the ratio and the time per container; the goal is >= 10x and linear.
#
#   benches/verify.sh [SIZES...]        e.g. benches/verify.sh 1000 10000 20000
#   BIN=target/release/k8s-nokmem RUNS=5 KEEP=1 benches/verify.sh
#
# The tree is regular files in a temp dir (cgroupfs cannot be populated by hand): per
# container 33 entries like a real cgroup v1 memory directory (the kmem files hold
# values, the others are empty), 4 containers per pod, pods spread over the
# burstable and besteffort QoS cgroups, as on a 4.4 node (verify reads slabinfo too).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)

bin=${BIN:-}
if [ -z "$bin" ]; then
    (cd "$here" && cargo build --release --quiet)
    bin="$here/target/release/k8s-nokmem"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/k8s-nokmem-verify-bench.XXXXXX")
cleanup() { if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi; }
trap cleanup EXIT

# the files of a cgroup v1 memory directory (Linux 4.4)
files=(cgroup.clone_children cgroup.event_control cgroup.procs memory.failcnt
    memory.force_empty memory.kmem.failcnt memory.kmem.limit_in_bytes
    memory.kmem.max_usage_in_bytes memory.kmem.slabinfo memory.kmem.tcp.failcnt
    memory.kmem.tcp.limit_in_bytes memory.kmem.tcp.max_usage_in_bytes
    memory.kmem.tcp.usage_in_bytes memory.kmem.usage_in_bytes memory.limit_in_bytes
    memory.max_usage_in_bytes memory.memsw.failcnt memory.memsw.limit_in_bytes
    memory.memsw.max_usage_in_bytes memory.memsw.usage_in_bytes
    memory.move_charge_at_immigrate memory.numa_stat memory.oom_control
    memory.pressure_level memory.soft_limit_in_bytes memory.stat memory.swappiness
    memory.usage_in_bytes memory.use_hierarchy notify_on_release tasks)

# generate NODE N: a node tree with N container cgroups
generate() {
    local node=$1 n=$2
    python3 - "$node" "$n" "${files[@]}" <<'PY'
import os, sys
node, n, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
header = ("slabinfo - version: 2.1\n# name            <active_objs> <num_objs> <objsize> <objperslab>"
          " <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs>"
          " <num_slabs> <sharedavail>\n")
mem = os.path.join(node, "sys/fs/cgroup/memory")
def cg(d):
    os.makedirs(d, exist_ok=True)
    for f in files:
        with open(os.path.join(d, f), "w") as fh:
            if f == "memory.kmem.usage_in_bytes":
                fh.write("0\n")
            elif f == "memory.kmem.slabinfo":
                fh.write(header)
dirs = 0
for d in ["", "kubepods", "kubepods/burstable", "kubepods/besteffort"]:
    cg(os.path.join(mem, d)); dirs += 1
for c in range(n):
    qos = "burstable" if (c // 4) % 2 == 0 else "besteffort"
    pod = os.path.join(mem, "kubepods", qos, "pod%08x-6ec5-4e8c-9b9e-2f0b1e2f3a4b" % (c // 4))
    if c % 4 == 0:
        cg(pod); dirs += 1
    cg(os.path.join(pod, "%064x" % (c * 2654435761))); dirs += 1
os.makedirs(os.path.join(node, "proc/self"), exist_ok=True)
with open(os.path.join(node, "proc/self/mountinfo"), "w") as fh:
    fh.write("30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory\n")
with open(os.path.join(node, "proc/cgroups"), "w") as fh:
    fh.write("#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t5\t%d\t1\n" % (dirs + 100))
with open(os.path.join(node, "proc/cmdline"), "w") as fh:
    fh.write("BOOT_IMAGE=/boot/vmlinuz-4.4.0-131-generic ro\n")
PY
}

# best wall time in microseconds of RUNS runs of a command (after one warm-up run)
best_us() {
    local best='' t0 t1 us i
    "$@" >/dev/null 2>&1 || true
    for ((i = 0; i < runs; i++)); do
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || true
        t1=$(date +%s%N)
        us=$(( (t1 - t0) / 1000 ))
        if [ -z "$best" ] || [ "$us" -lt "$best" ]; then best=$us; fi
    done
    echo "$best"
}

# the pipeline from the issue, as an operator would type it (names are hex: no -print0)
# shellcheck disable=SC2038
baseline() { find "$1/sys/fs/cgroup/memory" -name memory.kmem.usage_in_bytes | xargs cat >/dev/null; }
# as a 4.4 node (usage, and slabinfo where usage is 0) and as a >= 4.6 node (usage only)
verify() {
    "$bin" verify --json --root "$1/root" --proc-root "$1/proc" --cgroup-root "$1/sys/fs/cgroup" \
        --kernel-release "${2:-4.4.0-131-generic}"
}
verify46() { verify "$1" 5.4.0-150-generic; }

printf 'k8s-nokmem %s, %s, best of %d runs (warm cache)\n' \
    "$("$bin" --version | cut -d' ' -f2)" "$(uname -r)" "$runs"
printf '%10s %10s %14s %8s %16s %14s %8s\n' containers verify_ms find_xargs_ms ratio verify_us/cgroup verify_4.6_ms ratio_4.6
for n in "${sizes[@]}"; do
    node="$work/n$n"
    generate "$node" "$n"
    mkdir -p "$node/root"
    # the tree must verify ok and count every container
    checked=$(verify "$node" | python3 -c 'import json,sys; r=json.load(sys.stdin); print([c for c in r["checks"] if c["name"]=="cgroup-kmem"][0]["evidence"]["checked"])')
    [ "$checked" -ge "$n" ] || { echo "verify checked $checked cgroups, want >= $n" >&2; exit 1; }
    v=$(best_us verify "$node")
    b=$(best_us baseline "$node")
    w=$(best_us verify46 "$node")
    awk -v n="$n" -v v="$v" -v b="$b" -v w="$w" 'BEGIN { printf "%10d %10.1f %14.1f %7.1fx %16.2f %14.1f %7.1fx\n", n, v/1000, b/1000, b/v, v/n, w/1000, b/w }'
    [ -n "${KEEP:-}" ] || rm -rf "$node"
done
