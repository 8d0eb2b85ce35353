# shellcheck shell=bash
# What every script here prints and checks the same way: source it right after
# `set -euo pipefail` (scripts/lib/gobuild.sh sources it for its callers); it only defines
# functions.
#
#   KN_PROG             the prefix of every message (e.g. build-deb, "e2e: qemu"); set it
#                       before the first message
#   log MSG...          "KN_PROG: MSG" on stderr
#   warn MSG...         "KN_PROG: warning: MSG" on stderr
#   die MSG [EXIT]      "KN_PROG: error: MSG" on stderr, then exit EXIT: 2 (the default) when
#                       the script cannot run (usage, environment, a build it needs), 1 when
#                       what it builds or checks failed
#   need_arg OPT VALUE  in an option loop ("$@"): OPT must have a non-empty value
#   need_tools TOOL[:PACKAGE]...
#                       die naming every TOOL that is not on PATH, and the fix:
#                       scripts/install-deps.sh, or apt-get install the PACKAGEs given

log() { printf '%s: %s\n' "${KN_PROG:-k8s-nokmem}" "$*" >&2; }
warn() { log "warning: $*"; }
die() {
    log "error: $1"
    exit "${2:-2}"
}
need_arg() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi; }

need_tools() {
    local t missing=() pkgs=()
    for t in "$@"; do
        command -v "${t%%:*}" >/dev/null && continue
        missing+=("'${t%%:*}'")
        if [[ $t == *:* ]]; then pkgs+=("${t#*:}"); fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ ${#pkgs[@]} -gt 0 ]; then
        die "${missing[*]} not found: apt-get install -y ${pkgs[*]} (or run scripts/install-deps.sh)"
    fi
    die "${missing[*]} not found (run scripts/install-deps.sh)"
}
