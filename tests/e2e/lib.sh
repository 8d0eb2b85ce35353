# shellcheck shell=bash
# Shared pieces of the real-kernel boots under qemu (tests/e2e/qemu.sh for amd64,
# tests/e2e/arm64.sh for arm64). Source it after defining log() and die(); it keeps its
# state in qe_* variables and cleans up in qe_cleanup (call it from the EXIT trap).
#
#   qe_base_ready BASE                  true when the cached base root BASE is complete
#   qe_base_begin CACHE                 qe_building=a fresh build directory under CACHE
#   qe_prepare_root ROOT HOST TTY       hostname, empty machine-id, fstab, no gettys
#   qe_base_finish CACHE KEY            move qe_building to CACHE/KEY, stamp it, drop
#                                       older keys (older recipes)
#   qe_overlay LOWER DIR                mount an overlay of LOWER on DIR/merged (upper in DIR)
#   qe_runner_unit ROOT SCRIPT TIMEOUT [AFTER]
#                                       a oneshot unit running SCRIPT at multi-user (after
#                                       the units AFTER too), then powering off whatever it
#                                       returns
#   qe_boot NAME TIMEOUT LOGDIR QEMU-ARGS...
#                                       run qemu (-serial file:LOGDIR/serial.log) until it
#                                       powers off; 0 when it did, 124 when killed after
#                                       TIMEOUT s (serial log tail printed), else qemu's status
#   qe_results IMG DIR                  unpack the tar archive the guest wrote on IMG
#   qe_result NAME OK SECONDS           print `e2e: PASS|FAIL NAME (N s)`; false on FAIL
#   qe_cleanup KEEP WORK                kill qemu, unmount, remove what the run made

qe_qpid=
qe_building=
qe_merged=

qe_base_ready() { [ -f "$1/complete" ]; }

qe_base_begin() {
    mkdir -p "$1"
    qe_building=$(mktemp -d "$1/.build.XXXXXX")
}

qe_prepare_root() {
    local r=$1 u
    echo "$2" >"$r/etc/hostname"
    : >"$r/etc/machine-id"
    printf '/dev/vda / ext4 rw 0 1\n' >"$r/etc/fstab"
    # nothing reads the console: no gettys
    for u in "serial-getty@$3.service" getty@tty1.service getty.target; do
        ln -sf /dev/null "$r/etc/systemd/system/$u"
    done
    rm -rf "$r/var/cache/apt/archives"/*.deb "$r/var/lib/apt/lists"/*_Packages
}

qe_base_finish() {
    local cache=$1 key=$2
    rm -rf --one-file-system "${cache:?}/$key"
    mv "$qe_building" "$cache/$key"
    qe_building=
    date -u +%FT%TZ >"$cache/$key/complete"
    # older keys are older recipes
    find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" ! -name '.build.*' \
        -exec rm -rf --one-file-system {} +
}

qe_overlay() {
    mkdir -p "$2/upper" "$2/ovlwork" "$2/merged"
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/ovlwork" "$2/merged" ||
        die "mount -t overlay on $2/merged failed"
    qe_merged=$2/merged
}

qe_runner_unit() {
    local r=$1 script=$2 timeout=$3 after=${4:-} name
    name=$(basename "$script")
    cat >"$r/etc/systemd/system/$name.service" <<UNIT
[Unit]
Description=k8s-nokmem e2e: run $script, write the results, power off
After=basic.target systemd-journald.service${after:+ $after}
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=$script
StandardOutput=journal+console
TimeoutStartSec=$timeout

[Install]
WantedBy=multi-user.target
UNIT
    ln -sf "/etc/systemd/system/$name.service" \
        "$r/etc/systemd/system/multi-user.target.wants/$name.service"
}

qe_boot() {
    local name=$1 timeout=$2 dir=$3 i rc=0
    shift 3
    "$@" -nodefaults -no-reboot -display none -monitor none -serial "file:$dir/serial.log" \
        >"$dir/qemu.log" 2>&1 &
    qe_qpid=$!
    for ((i = 0; i < timeout; i++)); do
        kill -0 "$qe_qpid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$qe_qpid" 2>/dev/null; then
        kill -KILL "$qe_qpid" 2>/dev/null || true
        wait "$qe_qpid" 2>/dev/null || true
        qe_qpid=
        log "$name: no poweroff after $timeout s: qemu killed; serial log tail:"
        tail -n 40 "$dir/serial.log" >&2 || true
        return 124
    fi
    wait "$qe_qpid" || rc=$?
    qe_qpid=
    if [ "$rc" -ne 0 ]; then
        log "$name: qemu exited $rc:"
        cat "$dir/qemu.log" >&2
    fi
    return "$rc"
}

qe_results() {
    mkdir -p "$2"
    tar -C "$2" -xf "$1" 2>"$2.tar.err"
}

qe_result() {
    if [ "$2" -eq 1 ]; then
        echo "e2e: PASS $1 ($3 s)"
    else
        echo "e2e: FAIL $1 ($3 s)"
        return 1
    fi
}

qe_cleanup() {
    local keep=$1 work=$2 m
    if [ -n "$qe_qpid" ] && kill -0 "$qe_qpid" 2>/dev/null; then
        log "killing qemu (pid $qe_qpid)"
        kill -KILL "$qe_qpid" 2>/dev/null || true
        wait "$qe_qpid" 2>/dev/null || true
    fi
    if [ -n "$qe_merged" ] && mountpoint -q "$qe_merged" 2>/dev/null; then
        umount "$qe_merged" || umount -l "$qe_merged" || true
    fi
    if [ -n "$qe_building" ] && [ -d "$qe_building" ]; then
        for m in "$qe_building"/root/proc "$qe_building"/root/sys "$qe_building"/root/dev; do
            if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" || true; fi
        done
        rm -rf --one-file-system "$qe_building"
    fi
    if [ "$keep" -eq 1 ]; then
        log "kept $work"
    else
        rm -rf --one-file-system "$work"
    fi
}
