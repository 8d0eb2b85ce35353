#!/usr/bin/env bash
# End-to-end on a booted arm64 node (issue 12 item 1): Debian bookworm arm64 with its own
# kernel under qemu-system-aarch64 (TCG), docker.io and the kmem-enabled "original" kubelet
# running a static pod; the k8s-nokmem arm64 .deb installed, checked, removed and purged
# with apt from a signed local repository, as an operator would. See --help.
set -euo pipefail

# Bump when the image recipe below changes: it keys the cached base root.
script_version=1
suite=bookworm
base_pkgs=linux-image-arm64,initramfs-tools,systemd,systemd-sysv,udev,kmod,dbus,docker.io,apparmor,busybox-static,procps,iproute2
# the modules the initrd needs to find the root disk on qemu's virt machine
initrd_modules="virtio_mmio virtio_pci virtio_blk ext4"
here=$(cd "$(dirname "$0")" && pwd -P)
top=$(cd "$here/../.." && pwd -P)
KN_PROG="e2e: arm64"
# shellcheck source=scripts/lib/common.sh
. "$top/scripts/lib/common.sh"
# shellcheck source=scripts/lib/mirror.sh
. "$top/scripts/lib/mirror.sh"
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"

usage() {
    cat <<'EOF'
usage: tests/e2e/arm64.sh [--keep] [--timeout SECONDS] [DEB]
       tests/e2e/arm64.sh --base-only

Boots Debian bookworm arm64 (linux-image-arm64, an initrd made in the arm64 root with
MODULES=list) under qemu-system-aarch64 -M virt -cpu max (TCG) twice, on one disk:

  boot 1  -append "... systemd.unified_cgroup_hierarchy=0"
          docker.io and the original kubelet (tests/e2e/build-kubelet-debs.sh --arch arm64)
          run a static pod; then `apt-get install k8s-nokmem` from a signed local repository
          (tests/e2e/repo.sh), and `k8s-nokmem verify --json`
  boot 2  -append "... systemd.unified_cgroup_hierarchy=0 cgroup.memory=nokmem"
          `k8s-nokmem verify --json`, `apt-get remove k8s-nokmem`, `apt-get purge k8s-nokmem`

A oneshot unit in the guest runs each step and writes what it saw as a tar archive onto a
second raw disk, then powers off; this script checks it and prints one line per assertion,
`e2e: PASS|FAIL arm64-<name> (N s)`, and the guest's `uname -m` (aarch64).

DEB is the k8s-nokmem arm64 .deb; default: the newest k8s-nokmem_*_arm64.deb in
$K8S_NOKMEM_DEB_DIR, else in target/debian (scripts/build-deb.sh --arch arm64 builds it).

The base root (mmdebstrap of the packages above, no .deb) is built once and cached under
${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}/qemu-arm64/<key>/ (key: script version, package
list, mirror); each run installs the original kubelet with `chroot dpkg -i` (qemu-user) into
an overlay over it, makes root.img from that (mkfs.ext4 -d) and boots a qcow2 overlay.

  --base-only        only build (or find) the cached base root, then exit: scripts/test.sh
                     runs this in the background while the payload compiles
  --keep             keep the work directory (serial logs, results, images)
  --timeout SECONDS  per boot; qemu is killed and the boot fails after it (default 900)

Exit status: 0 every assertion passed, 1 one failed, 2 something could not be built.
Needs root, mmdebstrap, qemu-system-arm (qemu-system-aarch64) and qemu-utils, qemu-user-static
(binfmt_misc, for the arm64 root), gcc-aarch64-linux-gnu, gpg, reprepro, mkfs.ext4, jq.
EOF
}

qe_timeout=900
qe_args usage "$@"
deb=$qe_deb
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap, chroot, mounts)"
need_tools mmdebstrap:mmdebstrap/$suite-backports qemu-system-aarch64:qemu-system-arm/$suite-backports \
    qemu-img:qemu-utils/$suite-backports qemu-aarch64-static:qemu-user-static \
    aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu mkfs.ext4:e2fsprogs jq:jq gpg:gnupg \
    reprepro:reprepro dpkg-deb:dpkg tar:tar
mirror=$(mirror) || die "no Debian mirror (set K8S_NOKMEM_MIRROR)"

if [ "$qe_base_only" -eq 1 ]; then
    :
elif [ -z "$deb" ]; then
    for d in "${K8S_NOKMEM_DEB_DIR:-}" "$top/target/debian"; do
        [ -n "$d" ] || continue
        deb=$(find "$d" -maxdepth 1 -name 'k8s-nokmem_*_arm64.deb' -printf '%T@ %p\n' 2>/dev/null |
            sort -rn | head -n1 | cut -d' ' -f2-) || true
        [ -z "$deb" ] || break
    done
    [ -n "$deb" ] || die "no k8s-nokmem_*_arm64.deb in ${K8S_NOKMEM_DEB_DIR:+$K8S_NOKMEM_DEB_DIR or }$top/target/debian: run scripts/build-deb.sh --arch arm64"
fi
if [ "$qe_base_only" -eq 0 ]; then
    [ -f "$deb" ] || die "'$deb' does not exist (scripts/build-deb.sh --arch arm64 builds it)"
    [ "$(dpkg-deb -f "$deb" Architecture)" = arm64 ] || die "'$deb' is not an arm64 package"
    deb=$(realpath "$deb")
fi

qe_start arm64 "${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}/qemu-arm64" \
    "v$script_version $suite $base_pkgs $initrd_modules $mirror"
work=$qe_work

# arm64 binaries in the root (mmdebstrap's maintainer scripts, chroot dpkg) run under
# qemu-user through binfmt_misc, as scripts/testbed-root.sh sets it up
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    [ -e /proc/sys/fs/binfmt_misc/register ] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
        die "cannot mount binfmt_misc: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"
    /lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf ||
        die "cannot register qemu-aarch64 with binfmt_misc (apt-get install qemu-user-static)"
fi

# --- the cached base root ------------------------------------------------------------------
bootstrap() { # ROOT DIR
    # Before the kernel is unpacked: an initrd with only what finds the root disk
    # (MODULES=dep cannot see the guest's hardware from a chroot; MODULES=most takes
    # ~25 min under qemu-user).
    cat >"$2/essential-hook.sh" <<EOF
#!/bin/sh
set -e
mkdir -p "\$1/etc/initramfs-tools/conf.d" "\$1/etc/initramfs-tools/hooks"
echo MODULES=list >"\$1/etc/initramfs-tools/conf.d/k8s-nokmem-e2e"
cat >"\$1/etc/initramfs-tools/hooks/k8s-nokmem-e2e" <<'HOOK'
#!/bin/sh
[ "\$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
for m in $initrd_modules; do force_load "\$m"; done
HOOK
chmod 755 "\$1/etc/initramfs-tools/hooks/k8s-nokmem-e2e"
EOF
    mmdebstrap --arch=arm64 --variant=apt --include="$base_pkgs" \
        --essential-hook="sh $2/essential-hook.sh \"\$1\"" "$suite" "$1" "$mirror"
}
qe_base_root arm64-e2e ttyAMA0 "mmdebstrap --arch=arm64 $suite: $base_pkgs" bootstrap
[ "$qe_base_only" -eq 0 ] || exit 0

# --- what the guest installs ---------------------------------------------------------------
qe_step "original kubelet arm64 .deb (tests/e2e/build-kubelet-debs.sh --arch arm64, cached)"
debs=$("$here/build-kubelet-debs.sh" --arch arm64) || die "tests/e2e/build-kubelet-debs.sh --arch arm64 failed"
kubelet_deb=$debs/kubelet_1.20.2-e2e1_arm64.deb
[ -f "$kubelet_deb" ] || die "no $kubelet_deb after tests/e2e/build-kubelet-debs.sh --arch arm64"

qe_step "pause binary for arm64"
aarch64-linux-gnu-gcc -static -Os -Wall -Wextra -Werror -o "$work/pause" "$here/images/pause.c" ||
    die "aarch64-linux-gnu-gcc -static failed on tests/e2e/images/pause.c (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"

qe_step "signed local repository with $(basename "$deb")"
# README's repository (reprepro): both in the component of their kubelet minor, 1.20
"$here/repo.sh" init "$work/repo" >/dev/null
"$here/repo.sh" publish "$work/repo" kubelet-1.20 "$deb" "$kubelet_deb"
rm -rf "$work/repo/gnupg"
# what the payload must be, from the .deb's own MANIFEST
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/k8s-nokmem/MANIFEST >"$work/MANIFEST" ||
    die "no usr/lib/k8s-nokmem/MANIFEST in $deb"
manifest_sha() { # SECTION
    awk -v s="[$1]" '/^\[/ { in_s = ($0 == s) } in_s && $1 == "sha256" { print $3; exit }' "$work/MANIFEST"
}
want_kubelet=$(manifest_sha kubelet)
want_runc=$(manifest_sha runc)
{ [ -n "$want_kubelet" ] && [ -n "$want_runc" ]; } || die "MANIFEST of $deb has no [kubelet]/[runc] sha256"

# --- this run's image ----------------------------------------------------------------------
qe_step "node image: the base root + the original kubelet, the repository, the scenario"
qe_overlay
m=$qe_merged
qe_install "$m" "$kubelet_deb"
# no network in the guest: the local repository is apt's only source
rm -f "$m/etc/apt/sources.list" "$m"/etc/apt/sources.list.d/*
mkdir -p "$m/srv" "$m/etc/apt/keyrings" "$m/usr/local/share/k8s-nokmem-e2e"
cp -a "$work/repo" "$m/srv/k8s-nokmem-e2e-repo"
cp "$work/repo/e2e-archive-keyring.gpg" "$m/etc/apt/keyrings/k8s-nokmem-e2e.gpg"
echo 'deb [signed-by=/etc/apt/keyrings/k8s-nokmem-e2e.gpg] file:/srv/k8s-nokmem-e2e-repo stable kubelet-1.20' \
    >"$m/etc/apt/sources.list.d/k8s-nokmem-e2e.list"
cp "$work/pause" "$m/usr/local/share/k8s-nokmem-e2e/pause"
cp "$here/arm64-guest.sh" "$m/usr/local/sbin/k8s-nokmem-arm64-e2e"
chmod 755 "$m/usr/local/sbin/k8s-nokmem-arm64-e2e"
qe_runner_unit "$m" /usr/local/sbin/k8s-nokmem-arm64-e2e "$((qe_timeout - 60))s"
qe_image 8G
qemu-img create -q -f qcow2 -b "$work/root.img" -F raw "$work/root.qcow2"

# --- the boots -----------------------------------------------------------------------------
fails=0
boot_secs=()
# boot NAME PARAMS: one boot of the node's disk; the results land in $work/NAME/out
boot() {
    local name=$1 b=$work/$1 tb rc=0 append
    append="console=ttyAMA0 root=/dev/vda rootfstype=ext4 rw $2"
    tb=$(date +%s)
    qe_guest "$name" "$b" 64M "$append" \
        qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -accel tcg,thread=multi -smp 2 -m 2048 \
        -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
        -drive "file=$work/root.qcow2,format=qcow2,if=virtio" || rc=$?
    boot_secs+=("$name $(($(date +%s) - tb))")
    qe_step "$name: qemu ended ($qe_rc) after $(($(date +%s) - tb)) s"
    [ "$rc" -eq 0 ] || return 1
    log "$name: guest steps (seconds since its kernel started):"
    sed 's/^/e2e: arm64:   /' "$b/out/steps" >&2 || true
    qe_cmdline_is "$name" "$b" "$append"
}

# check NAME CONDITION-RESULT DETAIL: one assertion line
check() {
    local name=$1 ok=$2
    shift 2
    [ $# -eq 0 ] || log "arm64-$name: $*"
    qe_result "arm64-$name" "$ok" "$(($(date +%s) - qe_t0))" || fails=$((fails + 1))
}
# the sha256 the guest recorded for PATH in FILE
sha_of() { awk -v p="$2" '$2 == p { print $1 }' "$1"; }
kmem_check() { # VERIFY-JSON: "status<TAB>fix"
    jq -r '[.checks[] | select(.name == "kernel-kmem")][0] | "\(.status)\t\(.fix // "")"' "$1" 2>/dev/null ||
        echo "unreadable"
}

b1=$work/boot1-default/out
b2=$work/boot2-nokmem/out
boot1_ok=1
boot boot1-default "systemd.unified_cgroup_hierarchy=0" || boot1_ok=0
boot2_ok=1
if [ "$boot1_ok" -eq 1 ] && [ -f "$b1/done" ]; then
    boot boot2-nokmem "systemd.unified_cgroup_hierarchy=0 cgroup.memory=nokmem" || boot2_ok=0
else
    log "boot 1 did not finish its steps (last: $(tail -n1 "$b1/steps" 2>/dev/null || echo none)): no second boot"
    boot2_ok=0
fi

# --- assertions ----------------------------------------------------------------------------
machine=$(cat "$b1/uname-m" 2>/dev/null || echo '?')
echo "e2e: arm64: guest uname -m: $machine ($(cat "$b1/uname-r" 2>/dev/null || echo '?'))"
ok=0; [ "$machine" = aarch64 ] && ok=1
check guest-aarch64 "$ok" "uname -m '$machine'"

ok=0
orig_kubelet=$(sha_of "$b1/orig.sha256" /usr/bin/kubelet 2>/dev/null) || true
orig_runc=$(sha_of "$b1/orig.sha256" /usr/sbin/runc 2>/dev/null) || true
[ -s "$b1/pod-before" ] && [ -n "$orig_kubelet" ] && [ -n "$orig_runc" ] && ok=1
check original-node "$ok" "before: kubelet $(head -c 12 <<<"$orig_kubelet") runc $(head -c 12 <<<"$orig_runc"), static pod container $(cat "$b1/pod-before" 2>/dev/null)"

ok=0
[ "$(cat "$b1/apt-install.rc" 2>/dev/null)" = 0 ] &&
    grep -q '^install ok installed' "$b1/status-install" 2>/dev/null && ok=1
[ "$ok" -eq 1 ] || { log "apt-get install k8s-nokmem:"; cat "$b1/apt-install.log" >&2 2>/dev/null || true; }
check apt-install "$ok" "$(cat "$b1/status-install" 2>/dev/null)"

ok=0
grep -qx 'diversion of /usr/bin/kubelet to /usr/bin/kubelet.distrib by k8s-nokmem' "$b1/diversions-install" 2>/dev/null &&
    grep -qx 'diversion of /usr/sbin/runc to /usr/sbin/runc.distrib by k8s-nokmem' "$b1/diversions-install" && ok=1
check diversions "$ok" "$(grep -c k8s-nokmem "$b1/diversions-install" 2>/dev/null) diversions by k8s-nokmem"

ok=0
s=$b1/install.sha256
if [ -f "$s" ] && [ "$(sha_of "$s" /usr/bin/kubelet)" = "$want_kubelet" ] &&
    [ "$(sha_of "$s" /usr/lib/k8s-nokmem/kubelet)" = "$want_kubelet" ] &&
    [ "$(sha_of "$s" /usr/sbin/runc)" = "$want_runc" ] &&
    [ "$(sha_of "$s" /usr/lib/k8s-nokmem/runc)" = "$want_runc" ] &&
    [ "$(sha_of "$s" /usr/bin/kubelet.distrib)" = "$orig_kubelet" ] &&
    [ "$(sha_of "$s" /usr/sbin/runc.distrib)" = "$orig_runc" ] &&
    cmp -s "$b1/MANIFEST" "$work/MANIFEST"; then
    ok=1
fi
[ "$ok" -eq 1 ] || { log "sha256 after install (MANIFEST: kubelet $want_kubelet, runc $want_runc):"; cat "$s" >&2 2>/dev/null || true; }
check payload-in-place "$ok" "/usr/bin/kubelet, /usr/sbin/runc = MANIFEST sha256 (kubelet $(head -c 12 <<<"$want_kubelet"), runc $(head -c 12 <<<"$want_runc")); originals at .distrib"

ok=0
[ "$(tr '\n' ' ' <"$b1/active-install" 2>/dev/null)" = "active active " ] &&
    ! cmp -s "$b1/units-before" "$b1/units-install" && ok=1
check services-restarted "$ok" "docker, kubelet: $(tr '\n' ' ' <"$b1/active-install" 2>/dev/null); before: $(tr '\n' ' ' <"$b1/units-before" 2>/dev/null); after: $(tr '\n' ' ' <"$b1/units-install" 2>/dev/null)"

ok=0
[ "$(cat "$b1/kubelet-exe" 2>/dev/null)" = /usr/bin/kubelet ] &&
    [ "$(cat "$b1/kubelet-exe.sha256" 2>/dev/null)" = "$want_kubelet" ] && ok=1
check running-kubelet-payload "$ok" "/proc/PID/exe -> $(cat "$b1/kubelet-exe" 2>/dev/null), sha256 $(head -c 12 "$b1/kubelet-exe.sha256" 2>/dev/null)"

# the pod's new container: started after the install restarted docker (the swap comes
# first), by an exec of /usr/sbin/runc (the kernel's sched_process_exec event, CLOCK_MONOTONIC)
# later than docker's restart, while /usr/sbin/runc had the payload's bytes
ok=0
pa=$(cat "$b1/pod-after" 2>/dev/null || true)
docker_up=$(awk '$1 == "docker.service" { print $3 }' "$b1/units-install" 2>/dev/null || true)
execs=$(awk -v after="${docker_up:-0}" '/sched_process_exec:/ && /filename=\/usr\/sbin\/runc / {
        for (i = 1; i <= NF; i++) if ($(i + 1) == "sched_process_exec:") { ts = $i; sub(/:$/, "", ts) }
        if (ts * 1000000 > after) n++ } END { print n + 0 }' "$b1/runc-execs" 2>/dev/null || echo 0)
if [ -n "$pa" ] && [ "$pa" != "$(cat "$b1/pod-before")" ] && [ "${execs:-0}" -gt 0 ] &&
    [ "$(cat "$b1/runc-at-pod.sha256" 2>/dev/null)" = "$want_runc" ]; then
    ok=1
fi
check pod-by-payload-runc "$ok" "container $(cat "$b1/pod-before" 2>/dev/null) -> $pa; ${execs:-0} execs of /usr/sbin/runc after docker's restart at ${docker_up:-?} us, its sha256 then $(head -c 12 "$b1/runc-at-pod.sha256" 2>/dev/null)"

ok=0
got=$(kmem_check "$b1/verify.json")
if [ "${got%%$'\t'*}" = problem ] && grep -q 'cgroup.memory=nokmem' <<<"${got#*$'\t'}" &&
    [ "$(cat "$b1/verify.rc" 2>/dev/null)" = 1 ]; then
    ok=1
fi
[ "$ok" -eq 1 ] || { log "verify --json (exit $(cat "$b1/verify.rc" 2>/dev/null)):"; cat "$b1/verify.json" >&2 2>/dev/null || true; }
check verify-default-boot "$ok" "kernel-kmem: ${got/$'\t'/; fix: }"

ok=0
got=$(kmem_check "$b2/verify.json")
[ "${got%%$'\t'*}" = ok ] && ok=1
[ "$ok" -eq 1 ] || { log "verify --json (exit $(cat "$b2/verify.rc" 2>/dev/null)):"; cat "$b2/verify.json" >&2 2>/dev/null || true; }
check verify-nokmem-boot "$ok" "kernel-kmem: ${got%%$'\t'*} (verify exit $(cat "$b2/verify.rc" 2>/dev/null), status $(jq -r .status "$b2/verify.json" 2>/dev/null)); root memory.kmem.usage_in_bytes $(cat "$b2/root-kmem-usage" 2>/dev/null)"

ok=0
s=$b2/remove.sha256
if [ "$(cat "$b2/apt-remove.rc" 2>/dev/null)" = 0 ] && [ -f "$s" ] &&
    [ "$(sha_of "$s" /usr/bin/kubelet)" = "$orig_kubelet" ] &&
    [ "$(sha_of "$s" /usr/sbin/runc)" = "$orig_runc" ] &&
    ! grep -q k8s-nokmem "$b2/diversions-remove" &&
    [ ! -s "$b2/distrib-left" ] &&
    [ "$(tr '\n' ' ' <"$b2/active-remove")" = "active active " ] &&
    [ "$(cat "$b2/kubelet-exe.sha256")" = "$orig_kubelet" ] && [ -s "$b2/pod-remove" ]; then
    ok=1
fi
[ "$ok" -eq 1 ] || { log "apt-get remove k8s-nokmem:"; cat "$b2/apt-remove.log" "$s" "$b2/diversions-remove" >&2 2>/dev/null || true; }
check apt-remove "$ok" "originals back byte for byte, no diversion, docker and kubelet $(tr '\n' ' ' <"$b2/active-remove" 2>/dev/null)(running kubelet $(head -c 12 "$b2/kubelet-exe.sha256" 2>/dev/null)), pod $(cat "$b2/pod-remove" 2>/dev/null)"

ok=0
if [ "$(cat "$b2/apt-purge.rc" 2>/dev/null)" = 0 ] && [ -f "$b2/purge-left" ] && [ ! -s "$b2/purge-left" ] &&
    [ ! -s "$b2/status-purge" ] && [ -f "$b2/done" ]; then
    ok=1
fi
[ "$ok" -eq 1 ] || { log "left after apt-get purge:"; cat "$b2/purge-left" "$b2/status-purge" "$b2/apt-purge.log" >&2 2>/dev/null || true; }
check apt-purge "$ok" "left: $(wc -l <"$b2/purge-left" 2>/dev/null) paths"

[ "$boot1_ok" -eq 1 ] && [ "$boot2_ok" -eq 1 ] || fails=$((fails + 1))
qe_step "done: ${boot_secs[*]:-no boots} s; $fails failed"
[ "$fails" -eq 0 ] || exit 1
