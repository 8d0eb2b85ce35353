#!/usr/bin/env bash
# Print the Debian mirror this machine's apt already uses (the first `deb` URI of a main
# archive: not -security, not a deb-src line), so no host name is written into the project.
# K8S_NOKMEM_MIRROR wins when set. Source it (`. scripts/lib/mirror.sh; mirror`) or run it.
# Reads deb822 `.sources` files and one-line `sources.list` files.
mirror() {
    if [ -n "${K8S_NOKMEM_MIRROR:-}" ]; then
        printf '%s\n' "${K8S_NOKMEM_MIRROR%/}"
        return 0
    fi
    local dir=${K8S_NOKMEM_APT_DIR:-/etc/apt} uri
    uri=$(
        {
            for f in "$dir"/sources.list.d/*.sources; do
                [ -f "$f" ] || continue
                # deb822: stanzas separated by blank lines; keep URIs of stanzas whose Types has deb.
                awk 'BEGIN { RS = ""; FS = "\n" }
                     { types = ""; uris = ""
                       for (i = 1; i <= NF; i++) {
                         if ($i ~ /^Types:/) types = $i
                         if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
                       }
                       if (types ~ /(^|[ \t:])deb([ \t]|$)/ && uris != "") print uris }' "$f"
            done
            for f in "$dir"/sources.list "$dir"/sources.list.d/*.list; do
                [ -f "$f" ] || continue
                awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }' "$f"
            done
        } | tr -s '[:blank:]' '\n' | grep -E '^(https?|file)://' | grep -v -- '-security' | grep -v '/debian-ports' | head -n1
    )
    if [ -z "$uri" ]; then
        printf 'mirror: no Debian mirror found in %s/sources.list{,.d/*}; set K8S_NOKMEM_MIRROR=URI\n' "$dir" >&2
        return 2
    fi
    printf '%s\n' "${uri%/}"
}

# Run directly: print it.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    mirror
fi
