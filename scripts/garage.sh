#!/usr/bin/env bash
# scripts/garage.sh — prints the path of a Garage binary (the Rust S3 server) for the tests
# and bench/fleet.sh, building it once if there is none.
#
#   GARAGE=$(scripts/garage.sh)      # the path, on stdout; progress on stderr
#
# Where it looks, in order:
#   1. $QUORATE_TEST_GARAGE, if set (it must be an executable file);
#   2. ~/.cache/quorate/bin/garage-$GARAGE_VERSION (XDG_CACHE_HOME respected), the cache;
#   3. otherwise it builds that version with `cargo install garage --locked` (no system
#      libraries needed: SQLite and LMDB are bundled) into a temporary root, copies the binary
#      into the cache and prints how long the build took (about 10 minutes on 2 cores).
# CI runs on a fresh machine: the first run pays the build; a machine kept between runs, or a
# cache of ~/.cache/quorate, does not.
set -euo pipefail

GARAGE_VERSION=${GARAGE_VERSION:-2.5.0}
say() { printf 'garage.sh: %s\n' "$*" >&2; }

if [[ -n ${QUORATE_TEST_GARAGE:-} ]]; then
  [[ -x $QUORATE_TEST_GARAGE ]] || { say "QUORATE_TEST_GARAGE=$QUORATE_TEST_GARAGE is not an executable file"; exit 1; }
  echo "$QUORATE_TEST_GARAGE"
  exit 0
fi

cache_dir=${XDG_CACHE_HOME:-$HOME/.cache}/quorate/bin
cached=$cache_dir/garage-$GARAGE_VERSION
if [[ -x $cached ]]; then
  echo "$cached"
  exit 0
fi

command -v cargo >/dev/null || { say "no Garage at $cached and no cargo to build it"; exit 1; }
mkdir -p "$cache_dir"
root=$(mktemp -d "${TMPDIR:-/tmp}/garage-build.XXXXXX")
trap 'rm -rf "$root"' EXIT
say "no Garage $GARAGE_VERSION at $cached: building it (cargo install garage --version $GARAGE_VERSION --locked; about 10 minutes on 2 cores)"
t0=$SECONDS
# Its own target dir: never the project's (CARGO_TARGET_DIR may point there).
cargo install garage --version "$GARAGE_VERSION" --locked --root "$root" \
  --target-dir "$root/target" --quiet >&2 ||
  { say "cargo install garage --version $GARAGE_VERSION failed"; exit 1; }
install -m 0755 "$root/bin/garage" "$cached.tmp.$$"
mv -f "$cached.tmp.$$" "$cached"
say "built Garage $GARAGE_VERSION in $((SECONDS - t0)) s: $cached"
"$cached" --version >&2
echo "$cached"
