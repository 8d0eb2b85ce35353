# shellcheck shell=bash
# Shared by tests/e2e/run.sh and benches/upgrade-kills.sh: tear down the nspawn testbed that
# the Rust runner (tests/e2e/main.rs) booted, when the runner was killed before its Drop
# guards ran. The runner writes the testbed's directory and its own pid into
# WORK/testbed.env (dir=, pid=).
#
#   tb_reap WORK KEEP    kill the container, unmount it, remove its cgroups and directory
#                        (nothing when KEEP is 1)
tb_reap() {
    local work=$1 keep=$2 dir='' pid='' p cg
    if [ -f "$work/testbed.env" ]; then
        dir=$(sed -n 's/^dir=//p' "$work/testbed.env")
        pid=$(sed -n 's/^pid=//p' "$work/testbed.env")
    fi
    if [ -n "$dir" ] && [ -d "$dir" ] && [ "$keep" -eq 0 ]; then
        printf 'e2e: removing what the runner left behind: %s\n' "$dir" >&2
        for p in $(pgrep -f -- "-D $dir/merged" || true); do
            kill -KILL "$p" 2>/dev/null || true
        done
        sleep 1
        if mountpoint -q "$dir/merged"; then umount -l "$dir/merged" || true; fi
        if [ -n "$pid" ]; then
            find /sys/fs/cgroup -mindepth 2 -depth -type d -name "k8s-nokmem-tb-$pid-*" 2>/dev/null |
                while read -r cg; do
                    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
                done
        fi
        rm -rf --one-file-system "$dir"
    fi
}
