#!/usr/bin/env bash
# bench/load.sh — the long bounded load run (issue 7's standing suite), one command.
#
#   bench/load.sh                          60 s, 64 connections, SQLite then PostgreSQL
#   DURATION=300 CONNS=128 bench/load.sh
#   QUORATE_TEST_SKIP_POSTGRES=1 bench/load.sh     SQLite only
#
# It is tests/load.rs (whose 10 s version runs in the test suite) built in release mode and
# run for longer, through scripts/test.sh (which installs nix-bin and starts a throwaway
# PostgreSQL unless QUORATE_TEST_POSTGRES_URL is set). A real quorate in front of the Nix-built
# fixture caches and a pool of never-asked paths; warm and cold narinfos, unknown paths, warm
# and cold NARs, the 100 MiB NAR, clients hanging up mid-response and giving up before the
# answer. It fails on any error, on RSS growth beyond a generous bound, or when quorate's
# descriptors do not come back to the baseline; it never fails on a time. The figures
# (requests, errors, RSS start/peak/end, fds start/end) are printed as `note:` lines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export QUORATE_LOAD_SECONDS=${DURATION:-60}
export QUORATE_LOAD_CONNECTIONS=${CONNS:-64}
exec scripts/test.sh load --release -- --nocapture --test-threads=1
