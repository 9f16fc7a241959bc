#!/usr/bin/env bash
# bench/compression.sh — bytes on the wire and the real Nix client's wall time substituting
# the ~100 MiB fixture path from a warm quorate, with nar_compression = "none" and "zstd"
# (issue 12 item 2). A measurement, not a test: it prints, it asserts nothing about time.
#
#   bench/compression.sh            # builds the test binary, then ~1 minute
#
# The dev profile builds dependencies at opt-level 2 (Cargo.toml), so hashing, zstd and the
# HTTP stack run optimised; only quorate's own glue is unoptimised.
# The fixture path is incompressible (an AES-CTR keystream, tests/fixtures/paths.nix), so this
# measures the cost of zstd where it cannot help; on compressible NARs the bytes shrink by
# zstd's ratio (level 9 for the stored copy).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/test.sh nar_compression bench_ -- --ignored --nocapture
