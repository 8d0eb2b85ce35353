#!/usr/bin/env bash
# End-to-end check on a real Debian kernel (issue 6 item 4): boot bookworm's linux-image-amd64
# under qemu-system-x86_64 (TCG) with the k8s-nokmem .deb installed, once with
# cgroup.memory=nokmem and once without, and check what k8s-nokmem-verify.service reports for
# kernel-kmem. See --help.
set -euo pipefail

# Bump when the image recipe below changes: it keys the cached base root.
script_version=1
base_pkgs=linux-image-amd64,systemd-sysv,udev,kmod,initramfs-tools
suite=bookworm
# shellcheck source=scripts/lib/mirror.sh
. "$(dirname "$0")/../../scripts/lib/mirror.sh"
mirror=$(mirror)  # the mirror apt uses here; K8S_NOKMEM_MIRROR overrides

usage() {
    cat <<'EOF'
usage: tests/e2e/qemu.sh [--keep] [--timeout SECONDS] DEB

Boots Debian bookworm's own kernel (linux-image-amd64) under qemu-system-x86_64 -accel tcg
-cpu max twice, with DEB (the k8s-nokmem amd64 .deb) installed in the image:
  qemu-nokmem-boot   -append "... systemd.unified_cgroup_hierarchy=0 cgroup.memory=nokmem"
                     k8s-nokmem-verify.service must report kernel-kmem ok, action none
  qemu-default-boot  -append "... systemd.unified_cgroup_hierarchy=0"
                     k8s-nokmem-verify.service must report kernel-kmem problem, action
                     operator (no grub in the image: no reboot requested)
and checks that the guest's /proc/cmdline is the one set (also as verify.json's evidence), the
verify unit's exit status (0, 1) and the root memory cgroup's memory.kmem.usage_in_bytes
(0 with nokmem, > 0 without). In each boot a oneshot unit
(k8s-nokmem-qemu-e2e.service) starts k8s-nokmem-verify.service itself (rather than waiting
for its timer), then writes /proc/cmdline, /run/k8s-nokmem/verify.json and
`journalctl -u k8s-nokmem-verify` as a tar archive onto a second raw disk, and powers off.

The base root (debootstrap of the packages above, no .deb) is built once and cached under
${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}/qemu/<key>/ (key: script version and package
list); each run installs DEB with `chroot dpkg -i` into an overlayfs upper layer over it,
makes root.img from that (mkfs.ext4 -d) and boots a qcow2 overlay of it per boot.

  --keep             keep the work directory (serial logs, results, images)
  --timeout SECONDS  per boot; qemu is killed and the boot fails after it (default 360)

Prints `e2e: PASS|FAIL <name> (N s)` per boot. Exit status: 0 both passed, 1 a boot failed,
2 something could not be built. Needs root, debootstrap, qemu-system-x86 and qemu-utils
(from bookworm-backports, scripts/install-deps.sh), mkfs.ext4, jq. Every qemu process,
mount and temporary directory is removed at the end, also on failure.
EOF
}

keep=0
boot_timeout=360
deb=
while [ $# -gt 0 ]; do
    case "$1" in
    --keep) keep=1 ;;
    --timeout)
        [ $# -ge 2 ] || { echo "e2e: --timeout needs a value (try --help)" >&2; exit 2; }
        boot_timeout=$2
        shift
        ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "e2e: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    *)
        [ -z "$deb" ] || { echo "e2e: more than one .deb given (try --help)" >&2; exit 2; }
        deb=$1
        ;;
    esac
    shift
done

log() { printf 'e2e: qemu: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
[ -n "$deb" ] || die "no .deb given (usage: tests/e2e/qemu.sh DEB; try --help)"
[ -f "$deb" ] || die "'$deb' does not exist (scripts/build-deb.sh --arch amd64 builds it)"
case "$boot_timeout" in '' | *[!0-9]*) die "--timeout '$boot_timeout' is not a number of seconds" ;; esac
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, mounts)"
for t in debootstrap qemu-system-x86_64 qemu-img mkfs.ext4 jq dpkg-deb tar; do
    command -v "$t" >/dev/null || die "'$t' not found (run scripts/install-deps.sh)"
done
deb=$(realpath "$deb")

t0=$(date +%s)
cache=${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}/qemu
key=$(printf 'v%s %s %s %s\n' "$script_version" "$suite" "$base_pkgs" "$mirror" | sha256sum | cut -c1-16)
base=$cache/$key
work=$(mktemp -d "${TMPDIR:-/tmp}/k8s-nokmem-qemu.XXXXXX")
building=
qpid=

cleanup() {
    local rc=$?
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
        log "killing qemu (pid $qpid)"
        kill -KILL "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
    fi
    if mountpoint -q "$work/merged" 2>/dev/null; then umount "$work/merged" || umount -l "$work/merged" || true; fi
    if [ -n "$building" ] && [ -d "$building" ]; then
        for m in "$building/proc" "$building/sys" "$building/dev"; do
            if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" || true; fi
        done
        rm -rf --one-file-system "$building"
    fi
    if [ "$keep" -eq 1 ]; then
        log "kept $work"
    else
        rm -rf --one-file-system "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { log "[$(($(date +%s) - t0)) s] $*"; }

# --- the cached base root ------------------------------------------------------------------
if [ ! -f "$base/complete" ]; then
    step "building the base root $base (debootstrap $suite: $base_pkgs; cold, some minutes)"
    mkdir -p "$cache"
    building=$(mktemp -d "$cache/.build.XXXXXX")
    debootstrap --variant=minbase --include="$base_pkgs" "$suite" "$building/root" "$mirror" \
        >"$building/debootstrap.log" 2>&1 || {
        tail -n 30 "$building/debootstrap.log" >&2
        die "debootstrap $suite into $building/root failed (log above)"
    }
    r=$building/root
    echo qemu-e2e >"$r/etc/hostname"
    : >"$r/etc/machine-id"
    printf '/dev/vda / ext4 rw 0 1\n' >"$r/etc/fstab"
    # nothing reads the console: no gettys
    for u in serial-getty@ttyS0.service getty@tty1.service getty.target; do
        ln -sf /dev/null "$r/etc/systemd/system/$u"
    done
    rm -rf "$r/var/cache/apt/archives"/*.deb "$r/var/lib/apt/lists"/*_Packages
    ls "$r"/boot/vmlinuz-* "$r"/boot/initrd.img-* >/dev/null 2>&1 ||
        die "no kernel or initrd in $r/boot after debootstrap"
    rm -rf "$base"
    mv "$building" "$base"
    building=
    date -u +%FT%TZ >"$base/complete"
    # older keys are older recipes
    find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" ! -name '.build.*' \
        -exec rm -rf --one-file-system {} +
    step "base root built"
else
    step "base root cached: $base (built $(cat "$base/complete"))"
fi

# --- this run's image: the .deb in an overlay over the base root ---------------------------
step "installing $(basename "$deb") into an overlay of the base root"
mkdir -p "$work/upper" "$work/ovlwork" "$work/merged"
mount -t overlay overlay -o "lowerdir=$base/root,upperdir=$work/upper,workdir=$work/ovlwork" \
    "$work/merged" || die "mount -t overlay on $work/merged failed"
m=$work/merged
cp "$deb" "$m/tmp/k8s-nokmem.deb"
chroot "$m" dpkg -i /tmp/k8s-nokmem.deb >"$work/dpkg.log" 2>&1 || {
    cat "$work/dpkg.log" >&2
    die "chroot dpkg -i $(basename "$deb") failed (output above)"
}
rm -f "$m/tmp/k8s-nokmem.deb"
# no pods on this node: do not wait up to 2 min after boot for pod cgroups
sed -i 's/^\[verify\]$/[verify]\nboot-wait = 1s/' "$m/etc/k8s-nokmem/k8s-nokmem.conf"

cat >"$m/usr/local/sbin/k8s-nokmem-qemu-e2e" <<'GUEST'
#!/bin/sh
# Runs in the guest: the verify unit, then the results as a tar archive on /dev/vdb.
out=$(mktemp -d)
cat /proc/cmdline >"$out/cmdline"
uname -r >"$out/uname"
rc=0
systemctl start k8s-nokmem-verify.service || rc=$?
echo "$rc" >"$out/verify-unit-rc"
cp /run/k8s-nokmem/verify.json "$out/" || true
journalctl -b --no-pager -u k8s-nokmem-verify.service >"$out/verify.journal" 2>&1 || true
cat /sys/fs/cgroup/memory/memory.kmem.usage_in_bytes >"$out/root-kmem-usage" 2>&1 || true
cut -d" " -f1 /proc/uptime >"$out/uptime"
tar -C "$out" -cf /dev/vdb . && sync
echo "k8s-nokmem-qemu-e2e: results written (verify unit exit $rc)"
GUEST
chmod 755 "$m/usr/local/sbin/k8s-nokmem-qemu-e2e"
cat >"$m/etc/systemd/system/k8s-nokmem-qemu-e2e.service" <<'UNIT'
[Unit]
Description=k8s-nokmem qemu e2e: run k8s-nokmem-verify.service, write the results, power off
After=basic.target systemd-journald.service k8s-nokmem-verify.service
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/k8s-nokmem-qemu-e2e
StandardOutput=journal+console
TimeoutStartSec=20min

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/k8s-nokmem-qemu-e2e.service \
    "$m/etc/systemd/system/multi-user.target.wants/k8s-nokmem-qemu-e2e.service"

kernel=$(find "$m/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
initrd=$(find "$m/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n1)
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
step "mkfs.ext4 -d (4G sparse root.img; kernel $(basename "$kernel"))"
mkfs.ext4 -q -F -L root -d "$m" "$work/root.img" 4G >/dev/null || die "mkfs.ext4 -d $m failed"
umount "$m"

# --- the boots ------------------------------------------------------------------------------
fails=0

boot() {
    local name=$1 params=$2 want=$3 want_rc=$4 want_action=$5 b="$work/$1" tb i rc=0 ok=1 got cmdline
    tb=$(date +%s)
    mkdir -p "$b/out"
    qemu-img create -q -f qcow2 -b "$work/root.img" -F raw "$b/root.qcow2"
    truncate -s 16M "$b/out.img"
    local append="console=ttyS0 root=/dev/vda rw $params"
    step "$name: booting (-append \"$append\", timeout $boot_timeout s)"
    qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 1024 -nodefaults -no-reboot \
        -display none -monitor none -serial "file:$b/serial.log" \
        -kernel "$work/vmlinuz" -initrd "$work/initrd.img" -append "$append" \
        -drive "file=$b/root.qcow2,format=qcow2,if=virtio" \
        -drive "file=$b/out.img,format=raw,if=virtio" \
        >"$b/qemu.log" 2>&1 &
    qpid=$!
    for ((i = 0; i < boot_timeout; i++)); do
        kill -0 "$qpid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$qpid" 2>/dev/null; then
        kill -KILL "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
        qpid=
        log "$name: no poweroff after $boot_timeout s: qemu killed; serial log tail:"
        tail -n 40 "$b/serial.log" >&2 || true
        echo "e2e: FAIL $name ($(($(date +%s) - tb)) s)"
        return 1
    fi
    wait "$qpid" || rc=$?
    qpid=
    [ "$rc" -eq 0 ] || { log "$name: qemu exited $rc:"; cat "$b/qemu.log" >&2; ok=0; }
    if ! tar -C "$b/out" -xf "$b/out.img" 2>"$b/tar.err" || [ ! -f "$b/out/cmdline" ]; then
        log "$name: the guest wrote no results on its second disk; serial log tail:"
        tail -n 40 "$b/serial.log" >&2 || true
        echo "e2e: FAIL $name ($(($(date +%s) - tb)) s)"
        return 1
    fi
    cmdline=$(cat "$b/out/cmdline")
    if [ "$cmdline" != "$append" ]; then
        log "$name: guest /proc/cmdline is '$cmdline', expected '$append'"
        ok=0
    fi
    if [ -f "$b/out/verify.json" ]; then
        got=$(jq -r '[.checks[] | select(.name == "kernel-kmem")][0] | "\(.status)\t\(.summary // "")"' \
            "$b/out/verify.json") || got="unreadable"
        log "$name: guest $(cat "$b/out/uname"), verify unit exit $(cat "$b/out/verify-unit-rc"), kernel-kmem: $got"
        if [ "${got%%$'\t'*}" != "$want" ]; then
            log "$name: kernel-kmem is '${got%%$'\t'*}', expected '$want'; journalctl -u k8s-nokmem-verify:"
            cat "$b/out/verify.journal" >&2
            ok=0
        fi
        # what puts the fix in effect: nothing after a nokmem boot; without the parameter
        # and without grub in the image (direct kernel boot) an operator's edit, no reboot
        got=$(jq -r '"\(.action)\t\(.reboot_required.required)\t\(.reboot_required.reason)"' \
            "$b/out/verify.json") || got="unreadable"
        log "$name: action $got"
        if [ "${got%%$'\t'*}" != "$want_action" ] || [ "$(cut -f2 <<<"$got")" != "false" ]; then
            log "$name: action/reboot_required is '$got', expected '$want_action' and false"
            ok=0
        fi
        jcmd=$(jq -r '[.checks[] | select(.name == "kernel-kmem")][0].evidence.cmdline // ""' \
            "$b/out/verify.json")
        if [ "$jcmd" != "$append" ]; then
            log "$name: verify.json's kernel-kmem evidence has cmdline '$jcmd', expected '$append'"
            ok=0
        fi
    else
        log "$name: no /run/k8s-nokmem/verify.json in the guest; journalctl -u k8s-nokmem-verify:"
        cat "$b/out/verify.journal" >&2 || true
        ok=0
    fi
    local unit_rc kmem
    unit_rc=$(cat "$b/out/verify-unit-rc" 2>/dev/null || echo '?')
    if [ "$unit_rc" != "$want_rc" ]; then
        log "$name: systemctl start k8s-nokmem-verify.service exited $unit_rc, expected $want_rc"
        ok=0
    fi
    # the kernel's own account: the root memory cgroup's kmem usage reads 0 only with nokmem
    kmem=$(cat "$b/out/root-kmem-usage" 2>/dev/null || echo '?')
    log "$name: /sys/fs/cgroup/memory/memory.kmem.usage_in_bytes = $kmem"
    case "$want:$kmem" in
    ok:0 | problem:[1-9]*) ;;
    *) log "$name: root memory.kmem.usage_in_bytes '$kmem' does not fit kernel-kmem $want"; ok=0 ;;
    esac
    log "$name: journal: $(grep -m1 'kernel-kmem' "$b/out/verify.journal" | sed 's/^.*k8s-nokmem\[[0-9]*\]: *//')"
    log "$name: results written $(cat "$b/out/uptime" 2>/dev/null || echo '?') s after the kernel started"
    if [ "$ok" -eq 1 ]; then
        echo "e2e: PASS $name ($(($(date +%s) - tb)) s)"
    else
        echo "e2e: FAIL $name ($(($(date +%s) - tb)) s)"
        return 1
    fi
}

boot qemu-nokmem-boot "systemd.unified_cgroup_hierarchy=0 cgroup.memory=nokmem" ok 0 none || fails=$((fails + 1))
boot qemu-default-boot "systemd.unified_cgroup_hierarchy=0" problem 1 operator || fails=$((fails + 1))

step "done: $fails of 2 boots failed"
[ "$fails" -eq 0 ] || exit 1
