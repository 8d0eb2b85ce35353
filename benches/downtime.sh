#!/usr/bin/env bash
# Service downtime during `k8s-nokmem install` against a shell baseline doing the same swap
# by hand, on one booted systemd (the nspawn testbed of tests/common/nspawn.rs) in one run.
#
#   benches/downtime.sh [--runs N] [--helper PATH] [--show-log]
#
# Downtime = from the moment the first service leaves `active` (stop begins) to the moment
# the last one is `active` again, from systemd's own ActiveExitTimestampMonotonic and
# ActiveEnterTimestampMonotonic, so the measuring adds nothing. Services: stand-in
# kubelet.service (Type=simple) and docker.service (Type=notify, ready 0.2 s after start,
# checks that runc runs), as in tests/nspawn_swap.rs. --show-log prints the helper's last
# install log (its per-step times) and a `-vv` trace of one more install. Each run: baseline install, baseline
# revert, helper install, helper remove; medians over N runs (default 5), then the ratio.
# Baseline:
#   systemctl stop kubelet.service; systemctl stop docker.service
#   dpkg-divert --package k8s-nokmem --add --rename --divert P.distrib P   (runc, kubelet)
#   cp payload/runc /usr/sbin/runc; cp payload/kubelet /usr/bin/kubelet
#   systemctl start docker.service; systemctl start kubelet.service
#
# Needs root, the testbed root (scripts/testbed-root.sh) and a built helper (default
# target/release/k8s-nokmem, else target/debug/k8s-nokmem). Everything it creates (overlay
# mount, cgroups, container, temp dir) is removed on exit.
set -euo pipefail

runs=5
show_log=
repo=$(cd "$(dirname "$0")/.." && pwd)
helper=
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=${2:?--runs N}; shift ;;
        --helper) helper=${2:?--helper PATH}; shift ;;
        --show-log) show_log=1 ;;
        -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "downtime: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf 'downtime: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

[ "$(id -u)" -eq 0 ] || die "must run as root (systemd-nspawn, mounts, cgroups)"
root=$("$repo/scripts/testbed-root.sh" --print)
[ -f "$root/etc/k8s-nokmem-testbed" ] ||
    die "no testbed root at $root; build it with: sudo scripts/testbed-root.sh"
if [ -z "$helper" ]; then
    for h in "$repo/target/release/k8s-nokmem" "$repo/target/debug/k8s-nokmem"; do
        if [ -x "$h" ]; then helper=$h; break; fi
    done
fi
if [ -z "$helper" ] || [ ! -x "$helper" ]; then
    die "no helper binary; build it with: cargo build --release (or pass --helper PATH)"
fi
case "$helper" in *release*) ;; *) log "note: $helper is not a release build" ;; esac

tmp=$(mktemp -d /tmp/k8s-nokmem-bench.XXXXXX)
name=k8s-nokmem-bench-$$
cgroups=()
nspawn_pid=
mounted=

cleanup() {
    local rc=$?
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 300); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    [ -z "$mounted" ] || umount "$tmp/merged" 2>/dev/null || umount -l "$tmp/merged" || true
    local cg d
    for cg in "${cgroups[@]}"; do
        [ -d "$cg" ] || continue
        find "$cg" -depth -type d -print0 2>/dev/null | while IFS= read -r -d '' d; do
            rmdir "$d" 2>/dev/null || true
        done
    done
    rmdir "/run/systemd/nspawn/propagate/$name" 2>/dev/null || true
    rm -rf --one-file-system "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the container ---------------------------------------------------------------------
mkdir -p "$tmp"/{upper,work,merged,docker,share}
mount -t overlay overlay \
    -o "lowerdir=$root,upperdir=$tmp/upper,workdir=$tmp/work" "$tmp/merged"
mounted=1
m=$tmp/merged

put() { # put PATH MODE < content
    mkdir -p "$(dirname "$m$1")"
    cat >"$m$1"
    chmod "$2" "$m$1"
}
put /usr/bin/kubelet 0755 <<'EOF'
#!/bin/sh
# stand-in kubelet (original)
exec sleep 1000001
EOF
put /etc/systemd/system/kubelet.service 0644 <<'EOF'
[Unit]
Description=stand-in kubelet
After=docker.service
StartLimitIntervalSec=0

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
EOF
put /usr/local/bin/stand-in-dockerd 0755 <<'EOF'
#!/bin/sh
# stand-in dockerd: needs a working runc, ready after a moment
/usr/sbin/runc --version >/dev/null || { echo 'stand-in dockerd: runc does not run' >&2; exit 1; }
sleep 0.2
systemd-notify --ready
exec sleep 1000002
EOF
put /etc/systemd/system/docker.service 0644 <<'EOF'
[Unit]
Description=stand-in docker
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=all
ExecStart=/usr/local/bin/stand-in-dockerd

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$m/etc/systemd/system/multi-user.target.wants"
for u in kubelet.service docker.service; do
    ln -sf "/etc/systemd/system/$u" "$m/etc/systemd/system/multi-user.target.wants/$u"
done
for u in docker.socket containerd.service; do ln -sf /dev/null "$m/etc/systemd/system/$u"; done
put /usr/lib/k8s-nokmem/kubelet 0755 <<'EOF'
#!/bin/sh
# nokmem stand-in kubelet (payload)
exec sleep 2000001
EOF
put /usr/lib/k8s-nokmem/runc 0755 <<'EOF'
#!/bin/sh
# nokmem stand-in runc (payload)
echo 'runc version 1.1.5+nokmem'
EOF
manifest_entry() { # NAME VERSION TAGS
    local f=$m/usr/lib/k8s-nokmem/$1
    printf '[%s]\nfile = %s\nversion = %s\nsource = bench\ngo = go1.19.8\ntags = %s\narch = amd64\nsize = %s\nsha256 = %s\n\n' \
        "$1" "$1" "$2" "$3" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
}
{
    printf '[payload]\narch = amd64\nbuilt = 2026-11-28T00:00:00Z\n\n'
    manifest_entry runc 1.1.5 "seccomp nokmem"
    manifest_entry kubelet 1.20.2 "selinux notest nokmem"
} | put /usr/lib/k8s-nokmem/MANIFEST 0644
printf '[runc]\npath = /usr/sbin/runc\n' | put /etc/k8s-nokmem/k8s-nokmem.conf 0644
put /usr/sbin/k8s-nokmem 0755 <"$helper"
put /usr/local/bin/baseline-install 0755 <<'EOF'
#!/bin/sh
set -e
systemctl stop kubelet.service
systemctl stop docker.service
for p in /usr/sbin/runc /usr/bin/kubelet; do
    dpkg-divert --quiet --package k8s-nokmem --add --rename --divert "$p.distrib" "$p"
done
cp /usr/lib/k8s-nokmem/runc /usr/sbin/runc
cp /usr/lib/k8s-nokmem/kubelet /usr/bin/kubelet
systemctl start docker.service
systemctl start kubelet.service
EOF
put /usr/local/bin/baseline-revert 0755 <<'EOF'
#!/bin/sh
set -e
systemctl stop kubelet.service docker.service
for p in /usr/sbin/runc /usr/bin/kubelet; do
    rm -f "$p"
    dpkg-divert --quiet --package k8s-nokmem --remove --rename --divert "$p.distrib" "$p"
done
systemctl start docker.service kubelet.service
EOF
put /usr/local/bin/downtime-ms 0755 <<'EOF'
#!/bin/sh
# first ActiveExit to last ActiveEnter (monotonic µs) of kubelet and docker, in ms
systemctl show -p ActiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic \
    kubelet.service docker.service |
    awk -F= '/^ActiveExit/ { if (!x || $2 < x) x = $2 }
             /^ActiveEnter/ { if ($2 > e) e = $2 }
             END { printf "%.1f\n", (e - x) / 1000 }'
EOF

# a child cgroup of our own in every hierarchy (cpuset initialised from its parent)
while IFS=: read -r hid ctrls path; do
    mnt=
    while read -r _dev point fstype opts _rest; do
        if [ "$hid" = 0 ]; then
            [ "$fstype" = cgroup2 ] && { mnt=$point; break; }
        elif [ "$fstype" = cgroup ]; then
            ok=1
            for c in ${ctrls//,/ }; do
                case ",$opts," in *",$c,"*) ;; *) ok= ;; esac
            done
            [ -n "$ok" ] && { mnt=$point; break; }
        fi
    done </proc/self/mounts
    [ -n "$mnt" ] || continue
    parent=$mnt${path%/}
    dir=$parent/$name
    mkdir "$dir"
    cgroups+=("$dir")
    if [ -f "$parent/cpuset.cpus" ]; then
        cat "$parent/cpuset.cpus" >"$dir/cpuset.cpus"
        cat "$parent/cpuset.mems" >"$dir/cpuset.mems"
    fi
done </proc/self/cgroup

procs=()
for cg in "${cgroups[@]}"; do procs+=("$cg/cgroup.procs"); done
# shellcheck disable=SC2016 # $$ and $1 belong to the inner shell
SYSTEMD_NSPAWN_API_VFS_WRITABLE=1 sh -c \
    'while [ "$1" != -- ]; do echo $$ >"$1" || exit 97; shift; done; shift; exec "$@"' sh \
    "${procs[@]}" -- systemd-nspawn -D "$m" --machine="$name" -b --register=no --keep-unit \
    --private-network --system-call-filter=@keyring --capability=all --console=read-only \
    --bind="$tmp/docker:/var/lib/docker" --bind="$tmp/share:/mnt/share" \
    </dev/null >"$tmp/nspawn.log" 2>&1 &
nspawn_pid=$!

leader=
for _ in $(seq 500); do
    kids=$(cat /proc/"$nspawn_pid"/task/*/children 2>/dev/null || true)
    for pid in $kids; do
        nspid=$(awk '/^NSpid:/ { print $NF }' "/proc/$pid/status" 2>/dev/null || true)
        if [ "$nspid" = 1 ]; then leader=$pid; break 2; fi
    done
    kill -0 "$nspawn_pid" 2>/dev/null || { tail -n 20 "$tmp/nspawn.log" >&2; die "systemd-nspawn exited"; }
    sleep 0.02
done
[ -n "$leader" ] || die "no container PID 1 appeared"

inside() { nsenter -t "$leader" -a -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C "$@"; }
for _ in $(seq 100); do
    state=$(inside systemctl is-system-running --wait 2>/dev/null || true)
    case "$state" in running | degraded) break ;; esac
    sleep 0.1
done
case "$state" in running | degraded) ;; *) die "the container did not boot ($state)" ;; esac
log "booted (PID 1 = $leader); $runs runs"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
median() { sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m }'; }
timed() { # timed CMD...: runs inside, prints wall ms
    local t0 t1 out
    t0=$(now_ms)
    out=$(inside "$@" 2>&1) || { printf '%s\n' "$out" >&2; die "'$*' failed"; }
    t1=$(now_ms)
    printf '%s\n' "$out" >"$tmp/last.log"
    echo $((t1 - t0))
}

: >"$tmp/base" ; : >"$tmp/helper" ; : >"$tmp/base.wall" ; : >"$tmp/helper.wall"
for i in $(seq "$runs"); do
    timed baseline-install >>"$tmp/base.wall"
    inside downtime-ms >>"$tmp/base"
    timed baseline-revert >/dev/null
    timed k8s-nokmem install >>"$tmp/helper.wall"
    cp "$tmp/last.log" "$tmp/install.log"
    inside downtime-ms >>"$tmp/helper"
    timed k8s-nokmem remove >/dev/null
    log "run $i: downtime baseline $(tail -n1 "$tmp/base") ms, helper $(tail -n1 "$tmp/helper") ms"
done

if [ -n "$show_log" ]; then
    printf -- '--- last k8s-nokmem install\n'
    cat "$tmp/install.log"
    printf -- '--- one more, with -vv (D-Bus trace)\n'
    inside env RUST_LOG=k8s_nokmem=trace k8s-nokmem install 2>&1 | sed -n '/stop .kubelet/,/start .kubelet.service.: ok/p' || true
    inside k8s-nokmem remove >/dev/null 2>&1
fi

b=$(median <"$tmp/base"); h=$(median <"$tmp/helper")
bw=$(median <"$tmp/base.wall"); hw=$(median <"$tmp/helper.wall")
printf 'service downtime (first stop to last active), median of %s runs:\n' "$runs"
printf '  baseline (systemctl/dpkg-divert/cp): %8.1f ms   (wall %s ms)\n' "$b" "$bw"
printf '  k8s-nokmem install:                  %8.1f ms   (wall %s ms)\n' "$h" "$hw"
awk -v b="$b" -v h="$h" 'BEGIN { printf "  ratio helper/baseline: %.2f; helper overhead: %+.1f ms\n", h / b, h - b }'
printf '  all runs (ms): baseline %s; helper %s\n' "$(paste -sd' ' "$tmp/base")" "$(paste -sd' ' "$tmp/helper")"
