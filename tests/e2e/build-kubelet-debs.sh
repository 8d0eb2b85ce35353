#!/usr/bin/env bash
# Build the "original" kubelet packages for the end-to-end test: the kmem-enabled kubelet
# from Debian's kubernetes source (the same tree and ldflags as the payload, WITHOUT the
# nokmem tag), packaged as a local .deb named 'kubelet' that installs /usr/bin/kubelet and
# kubelet.service, in two versions (the second one is the "kubelet package upgraded
# underneath" case). See --help.
set -euo pipefail

KN_PROG=e2e-kubelet
KN_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
# shellcheck source=scripts/lib/gobuild.sh
. "$KN_REPO/scripts/lib/gobuild.sh"

# The payload's kubelet tags minus nokmem: this kubelet switches kmem on (vendored runc
# rc92 libcontainer/cgroups/fs/kmem.go).
KUBELET_TAGS=(selinux notest)
# Package version -> the version the binary reports. The first is what Debian's source
# really is; the second is the same code claiming the next minor release: the "kubelet
# package upgraded underneath the diversion" case (verify compares major.minor).
PKG_VERSIONS=(1.20.2-e2e1 1.21.0-e2e1)
DEB_REVISION_SCRIPT=2 # bump when the package layout below changes

usage() {
    cat <<EOF
usage: tests/e2e/build-kubelet-debs.sh [--arch amd64|arm64] [--out DIR] [--cache DIR] [--go GO]

Builds, for amd64 (the default):
  DIR/kubelet_1.20.2-e2e1_amd64.deb   kubelet v1.20.2 (kmem-enabled), kubelet.service
  DIR/kubelet_1.21.0-e2e1_amd64.deb   the same code built to report v1.21.0
and for --arch arm64 (cross-compiled, GOARCH=arm64 CGO_ENABLED=0; the arm64 guest of
tests/e2e/arm64.sh has no upgrade-underneath case):
  DIR/kubelet_1.20.2-e2e1_arm64.deb
and prints DIR. The kubelet is Debian's kubernetes source (apt deb-src, as
scripts/build-payload.sh uses it) built with -tags $(IFS=,; echo "${KUBELET_TAGS[*]}"): no nokmem,
so it writes memory.kmem.limit_in_bytes for every memory cgroup it creates. The script
refuses a binary without that code. Binaries are cached like the payload's (same Go
build cache: after the payload build only a re-link, ~15 s each); the .debs are rebuilt
only when a binary or this script changes.

The unit runs kubelet standalone (no API server): static pods from
/etc/kubernetes/manifests, cgroupfs driver, docker runtime (dockershim), swap allowed;
extra flags from KUBELET_EXTRA_ARGS in /etc/default/kubelet.

Options:
  --arch A      amd64 or arm64 (default: amd64)
  --out DIR     default: \${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}/e2e/debs
  --cache DIR   default: \${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}
  --go GO       default: \$GO, else go
EOF
}

KN_CACHE=${K8S_NOKMEM_CACHE:-/var/cache/k8s-nokmem}
KN_NO_CACHE=0
KN_GO=${GO:-go}
OUT_DIR=''
ARCH=amd64
while [ $# -gt 0 ]; do
    case "$1" in
    --arch) need_arg "$@"; ARCH=$2; shift 2 ;;
    --out) need_arg "$@"; OUT_DIR=$2; shift 2 ;;
    --cache) need_arg "$@"; KN_CACHE=$2; shift 2 ;;
    --go) need_arg "$@"; KN_GO=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done
OUT_DIR=${OUT_DIR:-$KN_CACHE/e2e/debs}
kn_need_go
need_tools dpkg-deb

T_START=$(date +%s)
KN_WORK=$(mktemp -d "${TMPDIR:-/tmp}/e2e-kubelet.XXXXXX")
trap 'rm -rf "$KN_WORK"' EXIT
kn_prepare_cache
mkdir -p "$OUT_DIR"
GO_VERSION=$(kn_go_version)
TRIM=$(kn_trimpath_flag "$GO_VERSION")
case "$ARCH" in
amd64) [ "$(kn_host_arch)" = amd64 ] || die "the end-to-end test runs on amd64 hosts only (host is $(kn_host_arch))" ;;
arm64) PKG_VERSIONS=("${PKG_VERSIONS[0]}") ;;
*) die "--arch '$ARCH': expected amd64 or arm64" ;;
esac

kn_debian_source kubernetes
K8S_DIR=$KN_SRC_DIR
if [ ! -d "$K8S_DIR/cmd/kubelet" ] || [ ! -d "$K8S_DIR/vendor" ]; then
    die "'$K8S_DIR' does not look like a Kubernetes tree with vendor/"
fi
K8S_BUILDDATE=$(date -u -d "@${KN_SRC_EPOCH:-0}" +%Y-%m-%dT%H:%M:%SZ)
log "source $KN_SRC_DESC ($K8S_DIR), $GO_VERSION, tags ${KUBELET_TAGS[*]}"

# build_kubelet GITVERSION OUT: the kmem-enabled kubelet reporting GITVERSION.
build_kubelet() {
    local gv=$1 out=$2 ldflags key_text key gopath t0 major minor
    [[ $gv =~ ^v([0-9]+)\.([0-9]+)\. ]] || die "bad version '$gv'"
    major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
    ldflags=$(kn_kubelet_ldflags "$gv" "$major" "$minor" archive "$K8S_BUILDDATE")
    key_text="script=$KN_SCRIPT_VERSION
what=kubelet-original-e2e
source=$KN_SRC_DIGEST
arch=$ARCH
tags=${KUBELET_TAGS[*]}
ldflags=$ldflags
go=$GO_VERSION"
    key=$(kn_sha256_text "$key_text")
    if kn_cache_get "$key" kubelet "$out"; then
        log "[kubelet $gv] cache hit"
        return 0
    fi
    t0=$(date +%s)
    log "[kubelet $gv] building (a re-link when the payload's Go build cache is warm; ~7 min cold)"
    gopath=$KN_WORK/gopath
    kn_gopath_link "$gopath" k8s.io/kubernetes "$K8S_DIR"
    # shellcheck disable=SC2086  # $TRIM is one flag or nothing
    if ! env GO111MODULE=off GOPATH="$gopath" GOFLAGS='' GOPROXY=off GOCACHE="$(kn_gocache)" \
        CGO_ENABLED=0 GOOS=linux GOARCH="$ARCH" \
        "$KN_GO" build $TRIM -tags "$(kn_tags_flag "$GO_VERSION" "${KUBELET_TAGS[@]}")" \
        -ldflags "$ldflags" -o "$out" k8s.io/kubernetes/cmd/kubelet >"$KN_WORK/build.log" 2>&1; then
        tail -n 40 "$KN_WORK/build.log" | sed 's/^/  /' >&2
        die "[kubelet $gv] go build failed" 1
    fi
    log "[kubelet $gv] built in $(($(date +%s) - t0)) s"
    kn_cache_put "$key" "$key_text" kubelet "$out"
}

# check_kubelet FILE GITVERSION: static, kmem-enabling, reports the version.
check_kubelet() {
    local file=$1 gv=$2 ev out
    kn_check_static "$file" "$ARCH" "[kubelet $gv]"
    ev=$(kn_kmem_evidence "$file")
    case "$ev" in
    0\ * | *\ 0) die "[kubelet $gv] '$file' should enable kmem but its bytes hold memory.kmem.limit_in_bytes x${ev% *}, libcontainer/cgroups/fs/kmem.go x${ev#* } (expected both > 0)" 1 ;;
    esac
    if [ "$ARCH" != "$(kn_host_arch)" ]; then
        # a 100 MB Go binary takes minutes under qemu-user, and `go version -m` omits
        # -ldflags of a -trimpath build: the -X value must be in its bytes
        grep -q -a -F "$gv" "$file" ||
            die "[kubelet $gv] '$file' does not hold the string '$gv' (its -X ...gitVersion)" 1
        return 0
    fi
    out=$(timeout 120 "$file" --version 2>&1) || die "'$file --version' failed: $out" 1
    [ "$out" = "Kubernetes $gv" ] ||
        die "[kubelet $gv] '$file --version' says '$out', expected 'Kubernetes $gv'" 1
}

write_unit() {
    cat <<'UNIT'
[Unit]
Description=kubelet: the Kubernetes node agent (k8s-nokmem e2e, standalone)
Documentation=https://kubernetes.io/docs/
Wants=docker.service
After=docker.service

[Service]
# Standalone: no API server, static pods only. The e2e test's strace drop-in reuses
# $KUBELET_ARGS; /etc/default/kubelet may set KUBELET_EXTRA_ARGS.
Environment="KUBELET_ARGS=--pod-manifest-path=/etc/kubernetes/manifests --cgroup-driver=cgroupfs --container-runtime=docker --pod-infra-container-image=k8s.gcr.io/pause:3.2 --fail-swap-on=false --make-iptables-util-chains=false --hostname-override=testbed --resolv-conf= --eviction-hard= --image-gc-high-threshold=100 --image-gc-low-threshold=99 --v=1"
EnvironmentFile=-/etc/default/kubelet
ExecStart=/usr/bin/kubelet $KUBELET_ARGS $KUBELET_EXTRA_ARGS
Restart=always
RestartSec=2
StartLimitInterval=0

[Install]
WantedBy=multi-user.target
UNIT
}

write_scripts() { # DIR
    cat >"$1/postinst" <<'SH'
#!/bin/sh
set -e
if [ "$1" = configure ] || [ "$1" = abort-upgrade ]; then
    deb-systemd-helper unmask kubelet.service >/dev/null || true
    if deb-systemd-helper --quiet was-enabled kubelet.service; then
        deb-systemd-helper enable kubelet.service >/dev/null || true
    else
        deb-systemd-helper update-state kubelet.service >/dev/null || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        if [ -n "$2" ]; then
            deb-systemd-invoke restart kubelet.service >/dev/null || true
        else
            deb-systemd-invoke start kubelet.service >/dev/null || true
        fi
    fi
fi
exit 0
SH
    cat >"$1/prerm" <<'SH'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    deb-systemd-invoke stop kubelet.service >/dev/null || true
fi
exit 0
SH
    cat >"$1/postrm" <<'SH'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = purge ] && command -v deb-systemd-helper >/dev/null; then
    deb-systemd-helper purge kubelet.service >/dev/null || true
fi
exit 0
SH
    chmod 0755 "$1/postinst" "$1/prerm" "$1/postrm"
}

# build_deb PKGVERSION BINARY: OUT_DIR/kubelet_PKGVERSION_ARCH.deb, unless the one there
# was made from the same binary and script.
build_deb() {
    local ver=$1 bin=$2 deb stamp want stage
    deb=$OUT_DIR/kubelet_${ver}_$ARCH.deb
    stamp=$deb.stamp
    want="script=$DEB_REVISION_SCRIPT kubelet=$(kn_sha256 "$bin") unit=$(write_unit | kn_sha256 /dev/stdin)"
    if [ -f "$deb" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        log "[deb $ver] up to date: $deb"
        return 0
    fi
    stage=$KN_WORK/stage-$ver
    install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
        "$stage/etc/kubernetes/manifests" "$stage/usr/share/doc/kubelet"
    install -m 0755 "$bin" "$stage/usr/bin/kubelet"
    write_unit >"$stage/lib/systemd/system/kubelet.service"
    printf 'kubelet for the k8s-nokmem end-to-end test: Debian kubernetes source, built without nokmem.\n' \
        >"$stage/usr/share/doc/kubelet/README"
    write_scripts "$stage/DEBIAN"
    cat >"$stage/DEBIAN/control" <<EOF
Package: kubelet
Version: $ver
Architecture: $ARCH
Maintainer: k8s-nokmem e2e <k8s-nokmem@example.org>
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: init-system-helpers (>= 1.18~)
Section: admin
Priority: optional
Homepage: https://kubernetes.io
Description: Kubernetes node agent (kmem-enabled, k8s-nokmem e2e test package)
 kubelet $ver built from Debian's kubernetes source without the nokmem build
 tag, as the "original" kubelet the k8s-nokmem package diverts.
EOF
    dpkg-deb --root-owner-group -Zgzip -z1 --build "$stage" "$deb.tmp" >/dev/null
    mv "$deb.tmp" "$deb"
    printf '%s\n' "$want" >"$stamp"
    log "[deb $ver] built $deb"
}

for ver in "${PKG_VERSIONS[@]}"; do
    gv="v${ver%%-*}"
    bin=$KN_WORK/kubelet-$gv
    build_kubelet "$gv" "$bin"
    check_kubelet "$bin" "$gv"
    build_deb "$ver" "$bin"
done
log "done in $(($(date +%s) - T_START)) s"
printf '%s\n' "$OUT_DIR"
