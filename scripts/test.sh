#!/usr/bin/env bash
# scripts/test.sh — quorate's one test command, for developers and CI alike.
#
#   scripts/test.sh                  every target: unit, integration, real Nix client, PostgreSQL
#   scripts/test.sh nix_e2e          one integration test binary (tests/nix_e2e.rs)
#   scripts/test.sh nix_e2e malicious   ... and only its tests whose names contain "malicious"
#   scripts/test.sh --lib quorum     any other arguments go to `cargo test` as they are
#
# What it does, in order:
#  1. installs what the tests drive and is missing (Debian packages: nix-bin, postgresql,
#     guile-3.0, guile-gcrypt, curl, openssl, which builds the large Nix fixture, and
#     docker-compose, which validates docker-compose.yml in tests/deploy.rs, chromium,
#     which loads the status page in tests/operate.rs, nginx, the load balancer in front
#     of the replica sets of tests/fleet.rs, and python3-cryptography, the Ed25519 of the
#     independent transparency-log verifier of tests/tlog.rs).
#     As root: `apt-get update` once, then a non-interactive install. Not root: names the
#     missing packages and exits non-zero.
#  2. starts a throwaway PostgreSQL (scripts/test-postgres.sh) and exports its URL as
#     QUORATE_TEST_POSTGRES_URL, unless that variable is already set (your own server);
#     it is stopped on exit, whatever happens.
#  3. makes a Garage binary (the S3 server of tests/fleet.rs) available and exports its path
#     as QUORATE_TEST_GARAGE: scripts/garage.sh, which uses ~/.cache/quorate/bin/garage-2.5.0
#     or builds it there once (cargo install; about 10 minutes on 2 cores, timed below).
#  4. runs `cargo test --all-targets` (or the selection above); cargo's output is untouched.
#  5. prints how long each step took. Nothing here asserts on time.
#
# Env: QUORATE_TEST_POSTGRES_URL (use this server instead of starting one),
#      QUORATE_TEST_SKIP_POSTGRES=1 (run the PostgreSQL variants of tests as skipped; refused
#      under CI=true, where nothing may be skipped),
#      QUORATE_TEST_GARAGE (use this Garage binary instead of the cached one),
#      BIG_MB (size of the large Nix fixture path, default 100).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

t_begin=$EPOCHREALTIME
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf 'test.sh: %s\n' "$*" >&2; }
timings=()

# ---- 1. system packages -------------------------------------------------------------
# Each Debian package with the probe that says it is usable (a package installed some
# other way, e.g. Nix from nixos.org, counts as present).
pg_bin() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null; }
have() {
  case $1 in
    nix-bin) command -v nix-store >/dev/null && command -v nix >/dev/null ;;
    postgresql) pg_bin ;;
    guile-3.0) command -v guile >/dev/null || command -v guile-3.0 >/dev/null ;;
    guile-gcrypt)
      local g; g=$(command -v guile-3.0 || command -v guile || true)
      [[ -n $g ]] && "$g" -c '(use-modules (gcrypt pk-crypto))' >/dev/null 2>&1 ;;
    curl) command -v curl >/dev/null ;;
    openssl) [[ -x /usr/bin/openssl ]] ;; # at this path: Nix builds see only /usr, /bin, /lib
    docker-compose) command -v docker-compose >/dev/null ;;
    chromium) command -v chromium >/dev/null || command -v chromium-browser >/dev/null ;;
    nginx) command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] ;;
    python3-cryptography) python3 -c 'import cryptography' >/dev/null 2>&1 ;;
  esac
}
t=$EPOCHREALTIME
missing=()
for p in nix-bin postgresql guile-3.0 guile-gcrypt curl openssl docker-compose chromium nginx python3-cryptography; do have "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    say "missing system packages: ${missing[*]}"
    say "install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}), or run this as root"
    exit 1
  fi
  if ! command -v apt-get >/dev/null; then
    say "missing system packages: ${missing[*]} (Debian names), and no apt-get here to install them"
    exit 1
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >/dev/null
  for p in "${missing[@]}"; do have "$p" || { say "installed $p but it is still not usable"; exit 1; }; done
fi
timings+=("packages $(since "$t")s${missing[*]:+ (installed: ${missing[*]})}")

# ---- 2. throwaway PostgreSQL ----------------------------------------------------------
PG_DIR=
stop_postgres() {
  if [[ -n $PG_DIR ]]; then
    scripts/test-postgres.sh stop "$PG_DIR" >/dev/null 2>&1 || say "could not stop PostgreSQL in $PG_DIR"
    rm -rf "$PG_DIR"
  fi
}
trap stop_postgres EXIT
t=$EPOCHREALTIME
if [[ -n ${QUORATE_TEST_POSTGRES_URL:-} ]]; then
  timings+=("postgres: using QUORATE_TEST_POSTGRES_URL from the environment")
elif [[ ${QUORATE_TEST_SKIP_POSTGRES:-} == 1 ]]; then
  if [[ ${CI:-} == true ]]; then
    say "QUORATE_TEST_SKIP_POSTGRES=1 under CI=true: CI runs every test; unset it"
    exit 1
  fi
  timings+=("postgres: skipped (QUORATE_TEST_SKIP_POSTGRES=1)")
else
  mkdir -p target
  PG_DIR=$(mktemp -d "$PWD/target/test-postgres.XXXXXX")
  QUORATE_TEST_POSTGRES_URL=$(scripts/test-postgres.sh start "$PG_DIR" | tail -n 1)
  [[ $QUORATE_TEST_POSTGRES_URL == postgres* ]] ||
    { say "scripts/test-postgres.sh start printed no postgres URL: '$QUORATE_TEST_POSTGRES_URL'"; exit 1; }
  export QUORATE_TEST_POSTGRES_URL
  timings+=("postgres start $(since "$t")s")
fi

# ---- 3. Garage -------------------------------------------------------------------------
t=$EPOCHREALTIME
QUORATE_TEST_GARAGE=$(scripts/garage.sh) || { say "no Garage binary (scripts/garage.sh failed)"; exit 1; }
export QUORATE_TEST_GARAGE
timings+=("garage $(since "$t")s ($QUORATE_TEST_GARAGE)")

# ---- 4. cargo test --------------------------------------------------------------------
# A first argument naming an integration test file (tests/NAME.rs) selects that binary;
# an argument that selects targets itself replaces --all-targets.
args=("$@")
select=(--all-targets)
if ((${#args[@]})) && [[ ${args[0]} != -* && -f tests/${args[0]}.rs ]]; then
  select=(--test "${args[0]}"); args=("${args[@]:1}")
fi
for a in "${args[@]}"; do
  case $a in --) break ;; --lib | --bins | --bin | --bin=* | --tests | --test | --test=* | \
    --examples | --example | --example=* | --benches | --bench | --bench=* | --doc | --all-targets) select=() ;; esac
done
t=$EPOCHREALTIME
rc=0
cargo test "${select[@]}" "${args[@]}" || rc=$?
timings+=("cargo test $(since "$t")s (exit $rc)")

printf '\ntest.sh timing:\n' >&2
printf '  %s\n' "${timings[@]}" "total $(since "$t_begin")s" >&2
exit "$rc"
