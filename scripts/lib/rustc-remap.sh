#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER (by name, in PATH) for scripts/build-deb.sh: compiles this workspace's own crates
# with their source directory remapped to /build/k8s-nokmem, so that the helper's bytes do
# not depend on where the checkout sits. A workspace wrapper leaves the dependencies'
# compilation (and cargo's fingerprints of them) alone: moving the checkout rebuilds only
# this crate. $CARGO_HOME's remap is in RUSTFLAGS (the same for every checkout).
#   usage (by cargo): rustc-remap.sh RUSTC ARGS...
set -eu
rustc=$1
shift
exec "$rustc" "$@" "--remap-path-prefix=${K8S_NOKMEM_SRC_DIR:?set by scripts/build-deb.sh}=/build/k8s-nokmem"
