#!/bin/sh
# post-build-hook.sh — a Nix post-build-hook that queues what Nix just built for
# `quorate push --queue DIR`, and does nothing else.
#
# Nix runs the hook after every build, with OUT_PATHS (the outputs, space-separated) and
# DRV_PATH in its environment, and waits for it: the build loop is blocked meanwhile, and a
# failing hook stops it. So this hook never touches the network: it writes the paths into
# the queue directory and returns. `quorate push --queue DIR --watch` (or a timer running
# `quorate push --queue DIR`) signs and sends them, retrying while the quorate is away.
#
# In nix.conf (as root: the daemon runs the hook):
#   post-build-hook = /path/to/post-build-hook.sh
# The queue is $QUORATE_PUSH_QUEUE, by default /var/lib/quorate-push/queue. An item appears
# whole or not at all: it is written under a name starting with "." (which drains skip),
# then renamed into place.
set -eu

queue=${QUORATE_PUSH_QUEUE:-/var/lib/quorate-push/queue}
paths=${OUT_PATHS:-}
# Nix 2.8.0 (Debian's nix-bin) leaves OUT_PATHS empty (NixOS/nix#6446): the derivation's
# outputs are then asked of the store (a local query; NIX_CONFIG names the store in use).
if [ -z "$paths" ] && [ -n "${DRV_PATH:-}" ]; then
  paths=$(nix-store --query --outputs "$DRV_PATH") || {
    echo "post-build-hook: cannot list the outputs of $DRV_PATH; not queued" >&2
    exit 0
  }
fi
[ -n "$paths" ] || exit 0

mkdir -p "$queue"
tmp=$(mktemp "$queue/.incoming.XXXXXXXX")
# One path per line (the list is whitespace-separated and store paths hold no spaces).
printf '%s\n' $paths >"$tmp"
# Named by time, so drains take items in the order they were built.
mv "$tmp" "$queue/$(date +%s%N)-${tmp##*.incoming.}"
