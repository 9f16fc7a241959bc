#!/usr/bin/env bash
# bench/profile.sh — a CPU profile of quorate's cold path (issue 12 item 6).
#
# Runs bench/run.sh test 7 once (the real Nix client substituting the 100 MiB fixture path
# through a fresh quorate: cold, then warm) with quorate under `perf record` (DWARF call
# graphs), and writes the flat profile and the callers of the top symbols to
# bench/profiles/<LABEL>.txt. Nothing is timed or asserted here: it is for reading.
#
#   bench/profile.sh after                 # builds target/release/quorate first
#   QUORATE_BIN=/tmp/quorate-old bench/profile.sh before
#
# Needs perf (linux-perf) and what bench/run.sh needs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LABEL=${1:?usage: bench/profile.sh LABEL}
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
if [[ -z ${QUORATE_BIN:-} ]]; then
  (cd "$ROOT" && cargo build --release --locked --bin quorate)
  QUORATE_BIN=$ROOT/target/release/quorate
fi
WORK=$(mktemp -d /tmp/quorate-profile.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# The wrapper run.sh starts as "quorate": perf records it and every thread it starts.
cat >"$WORK/quorate" <<EOF
#!/bin/sh
exec perf record -q -F 2999 --call-graph dwarf,16384 -o "$WORK/perf.data" -- "$QUORATE_BIN" "\$@"
EOF
chmod +x "$WORK/quorate"
QUORATE_BIN=$WORK/quorate QUORATE_LABEL="$QUORATE_BIN under perf" TESTS=7 NIX_ROUNDS=1 GEN_MIB=0 \
  RESULTS_FILE=$WORK/results.md "$HERE/run.sh" >&2
# run.sh stops perf (SIGTERM); quorate itself may outlive it for a moment.
pkill -f "$QUORATE_BIN serve --config $WORK" 2>/dev/null || true
for _ in $(seq 50); do [[ -s $WORK/perf.data ]] && break; sleep 0.1; done
mkdir -p "$HERE/profiles"
out=$HERE/profiles/$LABEL.txt
{
  echo "# quorate cold path profile: $LABEL"
  echo
  echo "bench/profile.sh on $(date -u '+%Y-%m-%d %H:%M UTC'), git $(git -C "$ROOT" rev-parse --short HEAD),"
  echo "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg). One cold and one warm"
  echo "nix-store -r of the 100 MiB fixture path through quorate (bench/run.sh test 7)."
  echo
  grep "nix-store -r" "$WORK/results.md" | head -3 || true
  echo
  echo '## Flat profile (self time, all quorate threads)'
  echo '```'
  perf report -i "$WORK/perf.data" --no-children --sort comm,dso,sym --stdio -g none \
    --percent-limit 0.5 2>/dev/null | grep -v '^#' | grep -v '^$'
  echo '```'
  echo
  echo '## Callers of the top symbols'
  echo '```'
  perf report -i "$WORK/perf.data" --no-children --sort sym --stdio -g caller,0.5,callee,function,percent \
    --percent-limit 3 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-160 | head -150
  echo '```'
} >"$out"
echo "wrote $out" >&2
