#!/usr/bin/env bash
# Build the k8s-nokmem .debs (amd64 and arm64 by default) into target/debian/:
# the nokmem payload (scripts/build-payload.sh, cached), the static musl helper, and
# cargo-deb. On a fresh machine it first runs scripts/install-deps.sh (a no-op when up to date).
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/build-deb.sh [--arch amd64|arm64|all] [--revision N] [--skip-payload]
                            [-- BUILD-PAYLOAD-ARGS...]

Builds k8s-nokmem_<kubelet-version>+nokmem<helper-version>-<N>_<arch>.deb into target/debian/.

  --arch A         amd64, arm64 or all (default: all)
  --revision N     Debian revision (default: 1)
  --skip-payload   use the payload already in target/payload/<arch>/ (do not rebuild it)
  -- ARGS          passed to scripts/build-payload.sh, e.g.
                   -- --kubernetes-src ~/src/kubernetes --runc-src ~/src/runc

The package version names the kubelet it carries: a payload built from another kubelet
version gets that version, and a changelog entry saying so is generated.

Examples:
  scripts/build-deb.sh                       # both .debs, payload from Debian's sources
  scripts/build-deb.sh --arch arm64          # only the arm64 .deb
  scripts/build-deb.sh -- --kubernetes-src /srv/kubernetes   # another kubelet version
USAGE
}

KN_PROG=build-deb
# shellcheck source=scripts/lib/common.sh
. "$(dirname "$0")/lib/common.sh"

arch=all
revision=1
skip_payload=0
payload_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=${2:?--arch needs amd64, arm64 or all}; shift 2 ;;
        --revision) revision=${2:?--revision needs a number}; shift 2 ;;
        --skip-payload) skip_payload=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; payload_args=("$@"); break ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done
case "$arch" in
    all) arches=(amd64 arm64) ;;
    amd64|arm64) arches=("$arch") ;;
    *) die "--arch '$arch': expected amd64, arm64 or all" ;;
esac

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
start=$(date +%s)

# Reproducible builds (https://reproducible-builds.org/specs/source-date-epoch/): every
# date that ends up in the .deb (archive mtimes, the generated changelog entry) is the
# source's, never the clock's: the commit's time, else the changelog's; an exported
# SOURCE_DATE_EPOCH wins. Two builds of one commit give the same bytes whatever the
# time, directory, umask, locale, time zone, user or host (scripts/check-reproducible.sh).
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    # safe.directory: a tree another user owns has the same commit time.
    if SOURCE_DATE_EPOCH=$(git -c safe.directory="$top" -C "$top" log -1 --format=%ct HEAD 2>/dev/null) &&
        [ -n "$SOURCE_DATE_EPOCH" ]; then
        sde_from="commit $(git -c safe.directory="$top" -C "$top" rev-parse --short HEAD)"
    else
        SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l debian/changelog -STimestamp)
        sde_from="debian/changelog"
    fi
else
    sde_from="the environment"
fi
[[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH '$SOURCE_DATE_EPOCH' is not a number of seconds"
export SOURCE_DATE_EPOCH
log "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH (from $sde_from)"

# What the build runs (Go, the cross compilers, cargo-deb, the musl targets): install-deps
# installs what is missing and returns at once when everything is there.
if [ "$(id -u)" -eq 0 ]; then
    scripts/install-deps.sh
else
    command -v cargo-deb >/dev/null || die "cargo-deb not found; run: sudo scripts/install-deps.sh"
fi

# The helper's bytes name neither the builder's $CARGO_HOME (the dependencies' sources,
# in panic locations) nor this checkout's directory (scripts/lib/rustc-remap.sh, for our
# crate only). Only these --target (musl) builds see the flags: cargo keeps them apart
# from the host builds of `cargo test` and `cargo build`, which are not rebuilt.
cargo_home=$(cd "${CARGO_HOME:-$HOME/.cargo}" 2>/dev/null && pwd -P) || cargo_home=${CARGO_HOME:-$HOME/.cargo}
helper_env=(
    RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--remap-path-prefix=$cargo_home=/cargo"
    # By name, found in PATH: cargo hashes the wrapper's path into every symbol of our
    # crate (-C metadata), so a path naming this checkout would change the bytes.
    RUSTC_WORKSPACE_WRAPPER=rustc-remap.sh
    PATH="$top/scripts/lib:$PATH"
    K8S_NOKMEM_SRC_DIR="$top"
)

triple_of() { case "$1" in amd64) echo x86_64-unknown-linux-musl ;; arm64) echo aarch64-unknown-linux-musl ;; esac; }

# build_helper TRIPLE: the static helper for TRIPLE, built and checked once a run.
declare -A helper_built=()
build_helper() {
    local triple=$1 leak t0
    [ -z "${helper_built[$triple]:-}" ] || return 0
    t0=$(date +%s)
    env "${helper_env[@]}" cargo build --release --locked --target "$triple" ||
        die "cargo build --release --target $triple failed"
    # Where the build ran must not be in the helper's bytes (a build elsewhere would differ).
    for leak in "$top" "$cargo_home"; do
        if grep -q -a -F "$leak" "target/$triple/release/k8s-nokmem"; then
            die "target/$triple/release/k8s-nokmem contains the build path '$leak': it would differ when built elsewhere (check --remap-path-prefix in scripts/build-deb.sh)"
        fi
    done
    log "helper target/$triple/release/k8s-nokmem in $(( $(date +%s) - t0 )) s"
    helper_built[$triple]=1
}

if [ "$skip_payload" -eq 0 ]; then
    # The payload's kmem check runs `k8s-nokmem inspect`: the static helper of this host's
    # architecture, built once here for the .deb too (no separate host release build).
    host_triple=$(triple_of "$(dpkg --print-architecture)")
    if [ -z "${K8S_NOKMEM_BIN:-}" ] && [ -n "$host_triple" ]; then
        build_helper "$host_triple"
        export K8S_NOKMEM_BIN=$top/target/$host_triple/release/k8s-nokmem
    fi
    for a in "${arches[@]}"; do
        log "payload for $a"
        scripts/build-payload.sh --arch "$a" --out target/payload "${payload_args[@]}"
    done
fi

manifest_value() { # FILE SECTION KEY
    awk -v s="[$2]" -v k="$3" '
        /^\[/ { in_s = ($0 == s) }
        in_s && $1 == k && $2 == "=" { sub(/^[^=]*=[ \t]*/, ""); print; exit }' "$1"
}

helper_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
kube_version=
for a in "${arches[@]}"; do
    m=target/payload/$a/MANIFEST
    [ -f "$m" ] || die "no payload manifest '$m'; run without --skip-payload"
    v=$(manifest_value "$m" kubelet version)
    [ -n "$v" ] || die "'$m' has no [kubelet] version"
    if [ -n "$kube_version" ] && [ "$v" != "$kube_version" ]; then
        die "payloads carry different kubelet versions ($kube_version, $v): build both from one source"
    fi
    kube_version=$v
done
deb_version="${kube_version}+nokmem${helper_version}-${revision}"
log "package version $deb_version"
# Breaks: the kubelet packages of every other minor (apt keeps those upgrades back); one
# value for every architecture
breaks=$(scripts/lib/kubelet-breaks.sh "$kube_version")

# The changelog's newest entry must name the version being built.
mkdir -p target/debian-build
top_version=$(sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
if [ "$top_version" = "$deb_version" ]; then
    cp debian/changelog target/debian-build/changelog
else
    log "debian/changelog is at $top_version: adding an entry for $deb_version"
    {
        printf 'k8s-nokmem (%s) unstable; urgency=medium\n\n' "$deb_version"
        printf '  * Rebuilt with kubelet %s (see /usr/lib/k8s-nokmem/MANIFEST).\n\n' "$kube_version"
        printf ' -- %s  %s\n\n' "k8s-nokmem developers <k8s-nokmem@example.org>" \
            "$(LC_ALL=C TZ=UTC date -R -d "@$SOURCE_DATE_EPOCH")"
        cat debian/changelog
    } >target/debian-build/changelog
fi

# Built-Using (Debian Policy 7.8): the Debian source packages compiled into the payload,
# as build-payload.sh recorded them per binary: "golang-1.19 (= 1.19.8-2), kubernetes (= ...)".
built_using_of() { # MANIFEST
    awk -F' = ' '$1 == "built_using" { print $2 }' "$1" | tr ',' '\n' |
        sed 's/^[[:space:]]*//; s/[[:space:]]*$//; /^$/d' | LC_ALL=C sort -u |
        awk '{ out = out (n++ ? ", " : "") $0 } END { print out }'
}

# Bash completion, generated by the helper from its own parser: the amd64 helper, built as
# the package builds it (the same flags: no second build), runs on this host.
build_helper x86_64-unknown-linux-musl
target/x86_64-unknown-linux-musl/release/k8s-nokmem completions bash \
    >target/debian-build/k8s-nokmem.bash-completion ||
    die "failed to generate the bash completion"

for a in "${arches[@]}"; do
    triple=$(triple_of "$a")
    variant=()
    [ "$a" = amd64 ] || variant=(--variant "$a")
    t0=$(date +%s)
    build_helper "$triple"
    log "cargo deb for $a ($triple)"
    cargo deb --no-build --locked --target "$triple" "${variant[@]}" \
        --deb-version "$deb_version" --output target/debian/ >/dev/null
    deb=target/debian/k8s-nokmem_${deb_version}_${a}.deb
    # Built-Using (the Debian sources compiled in) and Breaks, set in one rewrite of the
    # control member
    fields=()
    built_using=$(built_using_of "target/payload/$a/MANIFEST")
    if [ -n "$built_using" ]; then
        fields+=(Built-Using "$built_using")
    else
        warn "target/payload/$a/MANIFEST records no built_using (an older payload): no Built-Using field; rebuild the payload"
    fi
    fields+=(Breaks "$breaks")
    names=$(printf '%s\n' "${fields[@]}" | awk 'NR % 2' | paste -sd' ')
    python3 scripts/lib/deb-control-field.py "$deb" "${fields[@]}" ||
        die "failed to set the control fields ($names) in '$deb'"
    log "built $deb in $(( $(date +%s) - t0 )) s (sha256 $(sha256sum "$deb" | cut -d' ' -f1))"
done
log "done in $(( $(date +%s) - start )) s"
ls -l target/debian/*.deb >&2
