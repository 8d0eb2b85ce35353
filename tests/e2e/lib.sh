# shellcheck shell=bash disable=SC2034  # sets variables its callers read
# What the real-kernel boots under qemu share (tests/e2e/qemu.sh for amd64, tests/e2e/arm64.sh
# for arm64): the command line, a cached base root, this run's image, booting a guest until
# it powers off and collecting what it wrote. Source it after scripts/lib/common.sh (log,
# die); it keeps its state in qe_* variables and cleans up from the EXIT trap qe_start sets.
#
#   qe_args USAGE-FN "$@"               --keep, --base-only, --timeout SECONDS (default: the
#                                       qe_timeout set before), -h (USAGE-FN), one DEB:
#                                       qe_keep, qe_base_only, qe_timeout, qe_deb
#   qe_start NAME CACHE KEY-TEXT        qe_base=CACHE/<hash of KEY-TEXT>, qe_work (a fresh
#                                       temporary directory), the EXIT trap; starts qe_step's
#                                       clock
#   qe_step MSG...                      log MSG after the seconds since qe_start
#   qe_base_root HOST TTY WHAT BOOTSTRAP-FN
#                                       unless cached: BOOTSTRAP-FN ROOT DIR (WHAT, its output
#                                       in a log) builds the base root in ROOT (DIR: its
#                                       scratch directory), then hostname, empty machine-id,
#                                       fstab, no gettys; kept at qe_base, older keys (older
#                                       recipes) dropped
#   qe_overlay                          mount an overlay of qe_base/root on qe_merged
#   qe_install ROOT DEB                 chroot ROOT dpkg -i DEB (its output shown on failure)
#   qe_runner_unit ROOT SCRIPT TIMEOUT [AFTER]
#                                       a oneshot unit running SCRIPT at multi-user (after
#                                       the units AFTER too), then powering off whatever it
#                                       returns
#   qe_image SIZE                       qe_work/vmlinuz and initrd.img from the overlay, and
#                                       qe_work/root.img (SIZE, sparse, mkfs.ext4 -d) of it;
#                                       the overlay unmounted
#   qe_guest NAME DIR OUT-SIZE APPEND QEMU-ARGS...
#                                       boot QEMU-ARGS -append APPEND with a fresh OUT-SIZE
#                                       raw disk DIR/out.img last, until the guest powers off
#                                       (killed after qe_timeout s: qe_rc 124, else qemu's
#                                       status), then unpack the tar archive the guest wrote
#                                       on it into DIR/out; false (serial log tail printed)
#                                       when there is none or it lacks the guest's cmdline
#   qe_cmdline_is NAME DIR APPEND       DIR/out/cmdline (the guest's /proc/cmdline) is APPEND
#   qe_result NAME OK SECONDS           print `e2e: PASS|FAIL NAME (N s)`; false on FAIL

qe_keep=0
qe_base_only=0
qe_timeout=
qe_deb=
qe_t0=
qe_cache=
qe_base=
qe_work=
qe_rc=0
qe_qpid=
qe_building=
qe_merged=

qe_args() {
    local usage=$1
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
        --keep) qe_keep=1 ;;
        --base-only) qe_base_only=1 ;;
        --timeout) need_arg "$@"; qe_timeout=$2; shift ;;
        -h | --help) "$usage"; exit 0 ;;
        -*) die "unknown argument '$1' (try --help)" ;;
        *)
            [ -z "$qe_deb" ] || die "more than one .deb given (try --help)"
            qe_deb=$1
            ;;
        esac
        shift
    done
    case "$qe_timeout" in '' | *[!0-9]*) die "--timeout '$qe_timeout' is not a number of seconds" ;; esac
}

qe_start() {
    qe_t0=$(date +%s)
    qe_cache=$2
    qe_base=$qe_cache/$(printf '%s\n' "$3" | sha256sum | cut -c1-16)
    qe_work=$(mktemp -d "${TMPDIR:-/tmp}/k8s-nokmem-$1.XXXXXX")
    trap qe_cleanup EXIT
    trap 'exit 130' INT TERM
}

qe_step() { log "[$(($(date +%s) - qe_t0)) s] $*"; }

qe_base_root() {
    local host=$1 tty=$2 what=$3 bootstrap=$4 key r u
    key=$(basename "$qe_base")
    if [ -f "$qe_base/complete" ]; then
        qe_step "base root cached: $qe_base (built $(cat "$qe_base/complete"))"
        return 0
    fi
    qe_step "building the base root $qe_base ($what; cold, some minutes)"
    mkdir -p "$qe_cache"
    qe_building=$(mktemp -d "$qe_cache/.build.XXXXXX")
    r=$qe_building/root
    "$bootstrap" "$r" "$qe_building" >"$qe_building/bootstrap.log" 2>&1 || {
        tail -n 30 "$qe_building/bootstrap.log" >&2
        die "$what into $r failed (log above)"
    }
    echo "$host" >"$r/etc/hostname"
    : >"$r/etc/machine-id"
    printf '/dev/vda / ext4 rw 0 1\n' >"$r/etc/fstab"
    # nothing reads the console: no gettys
    for u in "serial-getty@$tty.service" getty@tty1.service getty.target; do
        ln -sf /dev/null "$r/etc/systemd/system/$u"
    done
    rm -rf "$r/var/cache/apt/archives"/*.deb "$r/var/lib/apt/lists"/*_Packages
    ls "$r"/boot/vmlinuz-* "$r"/boot/initrd.img-* >/dev/null 2>&1 ||
        die "no kernel or initrd in $r/boot after $what"
    rm -rf --one-file-system "$qe_base"
    mv "$qe_building" "$qe_base"
    qe_building=
    date -u +%FT%TZ >"$qe_base/complete"
    # older keys are older recipes
    find "$qe_cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" ! -name '.build.*' \
        -exec rm -rf --one-file-system {} +
    qe_step "base root built"
}

qe_overlay() {
    local w=$qe_work
    mkdir -p "$w/upper" "$w/ovlwork" "$w/merged"
    mount -t overlay overlay -o "lowerdir=$qe_base/root,upperdir=$w/upper,workdir=$w/ovlwork" "$w/merged" ||
        die "mount -t overlay on $w/merged failed"
    qe_merged=$w/merged
}

qe_install() {
    local r=$1 deb=$2 name
    name=$(basename "$deb")
    cp "$deb" "$r/tmp/$name"
    chroot "$r" dpkg -i "/tmp/$name" >"$qe_work/dpkg.log" 2>&1 || {
        cat "$qe_work/dpkg.log" >&2
        die "chroot dpkg -i $name failed (output above)"
    }
    rm -f "$r/tmp/$name"
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

qe_image() {
    local m=$qe_merged kernel initrd
    kernel=$(find "$m/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
    initrd=$(find "$m/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n1)
    cp "$kernel" "$qe_work/vmlinuz"
    cp "$initrd" "$qe_work/initrd.img"
    qe_step "mkfs.ext4 -d ($1 sparse root.img; kernel $(basename "$kernel"))"
    mkfs.ext4 -q -F -L root -d "$m" "$qe_work/root.img" "$1" >/dev/null || die "mkfs.ext4 -d $m failed"
    umount "$m"
}

qe_guest() {
    local name=$1 dir=$2 size=$3 append=$4 i
    shift 4
    mkdir -p "$dir/out"
    truncate -s "$size" "$dir/out.img"
    qe_step "$name: booting (-append \"$append\", timeout $qe_timeout s)"
    qe_rc=0
    "$@" -append "$append" -drive "file=$dir/out.img,format=raw,if=virtio" \
        -nodefaults -no-reboot -display none -monitor none -serial "file:$dir/serial.log" \
        >"$dir/qemu.log" 2>&1 &
    qe_qpid=$!
    for ((i = 0; i < qe_timeout; i++)); do
        kill -0 "$qe_qpid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$qe_qpid" 2>/dev/null; then
        kill -KILL "$qe_qpid" 2>/dev/null || true
        wait "$qe_qpid" 2>/dev/null || true
        qe_qpid=
        log "$name: no poweroff after $qe_timeout s: qemu killed; serial log tail:"
        tail -n 40 "$dir/serial.log" >&2 || true
        qe_rc=124
    else
        wait "$qe_qpid" || qe_rc=$?
        qe_qpid=
        if [ "$qe_rc" -ne 0 ]; then
            log "$name: qemu exited $qe_rc:"
            cat "$dir/qemu.log" >&2
        fi
    fi
    if ! tar -C "$dir/out" -xf "$dir/out.img" 2>"$dir/tar.err" || [ ! -f "$dir/out/cmdline" ]; then
        log "$name: the guest wrote no results on its second disk; serial log tail:"
        tail -n 40 "$dir/serial.log" >&2 || true
        return 1
    fi
}

qe_cmdline_is() {
    local got
    got=$(cat "$2/out/cmdline")
    [ "$got" = "$3" ] || {
        log "$1: guest /proc/cmdline is '$got', expected '$3'"
        return 1
    }
}

qe_result() {
    if [ "$2" -eq 1 ]; then
        echo "e2e: PASS $1 ($3 s)"
    else
        echo "e2e: FAIL $1 ($3 s)"
        return 1
    fi
}

# the EXIT trap: kill qemu, unmount, remove what the run made (qe_work kept with --keep);
# the script's exit status stays
qe_cleanup() {
    local rc=$? m
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
    if [ -z "$qe_work" ]; then
        :
    elif [ "$qe_keep" -eq 1 ]; then
        log "kept $qe_work"
    else
        rm -rf --one-file-system "$qe_work"
    fi
    exit "$rc"
}
