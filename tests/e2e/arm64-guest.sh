#!/bin/sh
# Runs in the arm64 guest of tests/e2e/arm64.sh (as /usr/local/sbin/k8s-nokmem-arm64-e2e,
# a oneshot unit at multi-user that powers off after it): the operator's steps of one boot,
# chosen by the kernel command line, and what they left, as a tar archive on /dev/vdb.
#   without cgroup.memory=nokmem  the node with the original kubelet and a static pod, then
#                                 apt-get install k8s-nokmem, verify --json
#   with cgroup.memory=nokmem     verify --json, apt-get remove, apt-get purge
# It records; tests/e2e/arm64.sh judges. Every wait is bounded.
set -u
out=$(mktemp -d)
export DEBIAN_FRONTEND=noninteractive
APT="apt-get -o DPkg::Lock::Timeout=120 -y"
POD=e2e-sleeper

say() {
    echo "k8s-nokmem-arm64-e2e: $*"
    echo "$(cut -d' ' -f1 /proc/uptime) $*" >>"$out/steps"
}
finish() {
    journalctl -b --no-pager -u docker.service -u kubelet.service -u k8s-nokmem-verify.service \
        2>&1 | tail -n 5000 >"$out/journal"
    tar -C "$out" -cf /dev/vdb . && sync
}
trap finish EXIT
# the unit's TimeoutStartSec ends it with SIGTERM: still write what was seen
trap 'exit 143' TERM
fail() {
    say "FAILED: $*"
    exit 1
}
# wait_for SECS CMD...: until CMD succeeds
wait_for() {
    n=$1
    shift
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -lt "$n" ] || return 1
        sleep 1
    done
}
active() { systemctl is-active -q docker.service && systemctl is-active -q kubelet.service; }
pod_id() { docker ps -q --filter status=running --filter "name=k8s_sleeper_$POD-testbed_"; }
pod_running() { [ -n "$(pod_id)" ]; }
pod_other_than() { id=$(pod_id) && [ -n "$id" ] && [ "$id" != "$1" ]; }
units() {
    for u in docker.service kubelet.service; do
        echo "$u $(systemctl show -p MainPID --value "$u") $(systemctl show -p ActiveEnterTimestampMonotonic --value "$u")"
    done
}
kubelet_exe() { # SUFFIX
    pid=$(systemctl show -p MainPID --value kubelet.service)
    readlink "/proc/$pid/exe" >"$out/kubelet-exe"
    sha256sum "/proc/$pid/exe" | cut -d' ' -f1 >"$out/kubelet-exe.sha256"
}
verify() {
    k8s-nokmem verify --json >"$out/verify.json" 2>"$out/verify.err"
    echo $? >"$out/verify.rc"
    say "k8s-nokmem verify --json: exit $(cat "$out/verify.rc")"
}

cat /proc/cmdline >"$out/cmdline"
uname -m >"$out/uname-m"
uname -r >"$out/uname-r"
say "up: $(uname -m) $(uname -r)"

if ! grep -qw 'cgroup.memory=nokmem' /proc/cmdline; then
    # --- boot 1: the node as it was, then apt-get install k8s-nokmem -----------------------
    wait_for 300 systemctl is-active -q docker.service || fail "docker.service not active"
    say "docker active"
    img=$(mktemp -d)
    mkdir -p "$img/pause" "$img/bb/bin"
    cp /usr/local/share/k8s-nokmem-e2e/pause "$img/pause/pause"
    cp /bin/busybox "$img/bb/bin/busybox"
    for a in sh sleep; do ln -s busybox "$img/bb/bin/$a"; done
    tar -C "$img/pause" -c . | docker import --change 'ENTRYPOINT ["/pause"]' - k8s.gcr.io/pause:3.2 >/dev/null ||
        fail "docker import pause"
    tar -C "$img/bb" -c . | docker import --change 'CMD ["/bin/sh"]' - busybox:e2e >/dev/null ||
        fail "docker import busybox"
    rm -rf "$img"
    say "images imported"
    # Guaranteed QoS: a memory limit on the pod cgroup
    cat >/etc/kubernetes/manifests/$POD.yaml <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $POD
  namespace: default
spec:
  hostNetwork: true
  containers:
  - name: sleeper
    image: busybox:e2e
    imagePullPolicy: Never
    command: ["/bin/sleep", "1000000"]
    resources:
      limits: {cpu: 100m, memory: 64Mi}
      requests: {cpu: 100m, memory: 64Mi}
EOF
    systemctl start kubelet.service
    wait_for 600 pod_running || fail "static pod $POD not running under the original kubelet"
    pod_id >"$out/pod-before"
    say "static pod running: $(cat "$out/pod-before")"
    sha256sum /usr/bin/kubelet /usr/sbin/runc >"$out/orig.sha256"
    units >"$out/units-before"
    # every exec of a runc from here on, by the kernel's own account
    t=/sys/kernel/tracing
    [ -d $t/events ] || t=/sys/kernel/debug/tracing
    # timestamps in CLOCK_MONOTONIC, as systemd's ActiveEnterTimestampMonotonic
    echo mono >$t/trace_clock
    echo 'filename ~ "*runc*"' >$t/events/sched/sched_process_exec/filter
    echo 1 >$t/events/sched/sched_process_exec/enable
    echo >$t/trace

    # this scenario checks the restart: the default (apply = auto) restarts nothing on a
    # >= 4.6 kernel; the drop-in goes before the purge check
    mkdir -p /etc/k8s-nokmem/conf.d
    printf '[services]\napply = restart\n' >/etc/k8s-nokmem/conf.d/10-e2e-restart.conf
    $APT update >"$out/apt-update.log" 2>&1
    $APT install k8s-nokmem >"$out/apt-install.log" 2>&1
    echo $? >"$out/apt-install.rc"
    say "apt-get install k8s-nokmem: exit $(cat "$out/apt-install.rc")"
    dpkg-query -W -f='${Status} ${Version}\n' k8s-nokmem >"$out/status-install" 2>&1
    dpkg-divert --list >"$out/diversions-install"
    sha256sum /usr/bin/kubelet /usr/sbin/runc /usr/bin/kubelet.distrib /usr/sbin/runc.distrib \
        /usr/lib/k8s-nokmem/kubelet /usr/lib/k8s-nokmem/runc >"$out/install.sha256" 2>&1
    cp /usr/lib/k8s-nokmem/MANIFEST "$out/" 2>/dev/null
    wait_for 300 active
    for u in docker.service kubelet.service; do systemctl is-active "$u"; done >"$out/active-install"
    units >"$out/units-install"
    kubelet_exe
    say "kubelet runs $(cat "$out/kubelet-exe")"
    wait_for 600 pod_other_than "$(cat "$out/pod-before")" || say "no new container of $POD"
    pod_id >"$out/pod-after"
    sha256sum /usr/sbin/runc | cut -d' ' -f1 >"$out/runc-at-pod.sha256"
    cat $t/trace >"$out/runc-execs"
    echo 0 >$t/events/sched/sched_process_exec/enable
    say "pod container now $(cat "$out/pod-after")"
    verify
    touch "$out/done"
else
    # --- boot 2, with cgroup.memory=nokmem: verify, remove, purge --------------------------
    wait_for 600 active || say "docker/kubelet not active"
    wait_for 600 pod_running || say "static pod $POD not running after the reboot"
    say "static pod running: $(pod_id)"
    verify
    cat /sys/fs/cgroup/memory/memory.kmem.usage_in_bytes >"$out/root-kmem-usage" 2>&1
    cp /var/lib/dpkg/info/k8s-nokmem.list "$out/k8s-nokmem.list" 2>/dev/null

    $APT remove k8s-nokmem >"$out/apt-remove.log" 2>&1
    echo $? >"$out/apt-remove.rc"
    say "apt-get remove k8s-nokmem: exit $(cat "$out/apt-remove.rc")"
    sha256sum /usr/bin/kubelet /usr/sbin/runc >"$out/remove.sha256" 2>&1
    dpkg-divert --list >"$out/diversions-remove"
    ls -d /usr/bin/kubelet.distrib /usr/sbin/runc.distrib >"$out/distrib-left" 2>/dev/null
    wait_for 300 active
    for u in docker.service kubelet.service; do systemctl is-active "$u"; done >"$out/active-remove"
    kubelet_exe
    wait_for 600 pod_running && pod_id >"$out/pod-remove"
    say "after remove: kubelet $(cat "$out/kubelet-exe"), pod $(cat "$out/pod-remove" 2>/dev/null)"

    rm -f /etc/k8s-nokmem/conf.d/10-e2e-restart.conf
    rmdir /etc/k8s-nokmem/conf.d 2>/dev/null || true
    $APT purge k8s-nokmem >"$out/apt-purge.log" 2>&1
    echo $? >"$out/apt-purge.rc"
    say "apt-get purge k8s-nokmem: exit $(cat "$out/apt-purge.rc")"
    dpkg-query -W -f='${Status} ${Version}\n' k8s-nokmem >"$out/status-purge" 2>/dev/null
    {
        for p in /etc/k8s-nokmem /var/lib/k8s-nokmem /run/k8s-nokmem /usr/lib/k8s-nokmem \
            /usr/sbin/k8s-nokmem /lib/systemd/system/k8s-nokmem-verify.service \
            /lib/systemd/system/k8s-nokmem-verify.timer /usr/bin/kubelet.distrib /usr/sbin/runc.distrib \
            /etc/systemd/system/timers.target.wants/k8s-nokmem-verify.timer \
            /etc/systemd/system/multi-user.target.wants/k8s-nokmem-verify.service \
            /var/lib/systemd/deb-systemd-helper-enabled/k8s-nokmem-verify.timer.dsh-also; do
            if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi
        done
        # every regular file the package listed
        while read -r f; do
            if [ -f "$f" ] && [ ! -d "$f" ]; then echo "$f"; fi
        done <"$out/k8s-nokmem.list"
        # any name of ours anywhere (the test's own files are k8s-nokmem-e2e / -arm64-e2e)
        find / /run -xdev -path "$out" -prune -o \( -name '*k8s-nokmem*' -o -name '*.distrib' \) -print 2>/dev/null |
            grep -v -e 'k8s-nokmem-e2e' -e 'k8s-nokmem-arm64-e2e'
    } | sort -u >"$out/purge-left"
    [ -s "$out/k8s-nokmem.list" ] || echo "(k8s-nokmem.list was empty before purge)" >>"$out/purge-left"
    say "left after purge: $(wc -l <"$out/purge-left") paths"
    touch "$out/done"
fi
