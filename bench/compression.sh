#!/usr/bin/env bash
# bench/compression.sh — bytes on the wire and the real Nix client's wall time substituting
# the ~100 MiB fixture path from a warm quorate, with nar_compression = "none" and "zstd"
# (issue 12 item 2). A measurement, not a test: it prints, it asserts nothing about time.
#
#   bench/compression.sh            # builds the test binary, then ~1 minute
#
# The dev profile builds dependencies at opt-level 2 (Cargo.toml), so hashing, zstd and the
# HTTP stack run optimised; only quorate's own glue is unoptimised.
# The fixture path is incompressible (an AES-CTR keystream, tests/fixtures/paths.nix), so it
# measures the cost of zstd where it cannot help. A second, compressible path (~110 MiB of
# `seq` output, built and signed here by fixture builder A into target/bench-compressible,
# served uncompressed, quorum 1) measures where it does.
set -euo pipefail
cd "$(dirname "$0")/.."
FX=$PWD/target/nix-fixtures
W=$PWD/target/bench-compressible
bash tests/fixtures/make-nix-caches.sh "$FX" >/dev/null
export NIX_CONF_DIR=$FX/etc NIX_USER_CONF_FILES=$FX/etc/nix.conf XDG_CACHE_HOME=$FX/xdg-cache NIX_PATH=
mkdir -p "$W"
text=$(nix-build --store "$W/store" --option sandbox-paths "/bin=/usr/bin /usr /lib=/usr/lib /lib64=/usr/lib64" \
  -E 'derivation { name = "text-100m"; system = builtins.currentSystem; builder = "/bin/sh";
                   args = [ "-c" "/usr/bin/seq 1 14000000 > $out" ]; }' --no-out-link 2>/dev/null)
rm -rf "$W/cache"
nix copy --from "$W/store" --to "file://$W/cache?compression=none&secret-key=$FX/keys/A.sec" "$text" 2>/dev/null
unset NIX_CONF_DIR NIX_USER_CONF_FILES XDG_CACHE_HOME NIX_PATH
export QUORATE_BENCH_TEXT_PATH=$text QUORATE_BENCH_TEXT_CACHE=$W/cache
exec scripts/test.sh nar_compression bench_ -- --ignored --nocapture
