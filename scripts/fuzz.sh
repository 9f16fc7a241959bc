#!/usr/bin/env bash
# scripts/fuzz.sh — run every fuzz target (fuzz/fuzz_targets/) for a bounded time.
#
#   scripts/fuzz.sh              60 s per target
#   scripts/fuzz.sh 600          10 minutes per target (a long run)
#   scripts/fuzz.sh 30 sexp      only the targets named after the seconds
#
# What it does:
#  1. installs cargo-fuzz from crates.io (`cargo install cargo-fuzz --locked`) unless it is on
#     PATH; libFuzzer itself is built by the libfuzzer-sys crate with the system C++ compiler;
#  2. builds every target with RUSTC_BOOTSTRAP=1: cargo-fuzz needs nightly flags
#     (-Zsanitizer=address, sanitizer coverage), and stable rustc accepts them that way;
#  3. runs each target for SECONDS (one process, so one core), starting from the
#     committed seeds (fuzz/corpus/<target>/seed-*, regress-*) plus what earlier runs found
#     (fuzz/work/corpus/<target>/, not committed);
#  4. exits non-zero if any target crashed, panicked, leaked, timed out on one input or went
#     past the memory limits, naming the input that did it (fuzz/artifacts/<target>/) and
#     the command that replays it; each target's libFuzzer log is fuzz/work/logs/<target>.log.
#
# Memory: every input runs under -rss_limit_mb=2048 and -malloc_limit_mb=320, a little above
# the largest allocation quorate allows a decoder (XZ_MEM_LIMIT_KIB/LZIP_MEM_LIMIT_KIB,
# 256 MiB). One input may take at most 10 s (-timeout).
#
# Env: FUZZ_SANITIZER (default address; `none` builds and runs faster, but then only
#      -rss_limit_mb bounds memory).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-60}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
sanitizer=${FUZZ_SANITIZER:-address}
say() { printf 'fuzz.sh: %s\n' "$*" >&2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }'; }

# Stable rustc with nightly flags: cargo-fuzz's -Z options and sanitizers need them.
export RUSTC_BOOTSTRAP=1

t=$EPOCHREALTIME
if ! command -v cargo-fuzz >/dev/null; then
  say "installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked
fi
say "cargo-fuzz: $(cargo fuzz --version) ($(since "$t") s)"

if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

t=$EPOCHREALTIME
if ((${#targets[@]} == 1)); then
  cargo fuzz build --sanitizer "$sanitizer" "${targets[0]}"
else
  cargo fuzz build --sanitizer "$sanitizer"
fi
say "built ${#targets[@]} targets ($(since "$t") s)"

failed=()
mkdir -p fuzz/work/logs
for target in "${targets[@]}"; do
  work=fuzz/work/corpus/$target
  log=fuzz/work/logs/$target.log
  mkdir -p "$work"
  t=$EPOCHREALTIME
  # New finds go to the first corpus directory (work/); the committed seeds are only read.
  # A failing input is written to fuzz/artifacts/<target>/ (cargo-fuzz's -artifact_prefix).
  if cargo fuzz run --sanitizer "$sanitizer" "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=320 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -a -o 'number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    say "$target: ok, $runs inputs in $(since "$t") s"
  else
    failed+=("$target")
    tail -n 30 "$log" >&2
    say "$target: FAILED after $(since "$t") s; full log: $log"
    grep -a -o 'Test unit written to .*' "$log" | sed 's/^Test unit written to //' | sort -u | while read -r input; do
      say "  failing input: $input"
      say "  replay it: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $target $input"
    done
  fi
done

if ((${#failed[@]})); then
  say "FAILED: ${failed[*]}"
  exit 1
fi
say "all ${#targets[@]} targets ran ${seconds} s each without a failure"
