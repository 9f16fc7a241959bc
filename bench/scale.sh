#!/usr/bin/env bash
# bench/scale.sh — issue 12 items 4 and 5: how quorate's costs grow with the recorded paths,
# and warm narinfo latency at a fixed request rate beside nginx proxy_cache.
#
# Per backend (SQLite in the state dir; PostgreSQL, a throwaway server from
# scripts/test-postgres.sh):
#   fill      N paths recorded through the real recording code (examples/scale.rs: three
#             builders' really signed attestations, three NAR sources, an accepted decision
#             each): database bytes per attestation, and per table (SQLite dbstat, PostgreSQL
#             pg_total_relation_size)
#   plans     EXPLAIN of the three queries a narinfo served from the database runs
#   start     time from exec until /healthz answers: on the filled database; then with NARS
#             small files in the NAR store the database does not know (first start records
#             them), and again (they are known)
#   narinfo   `quorate serve` restarted on the database, upstreams unreachable (127.0.0.1:9):
#             SAMPLE random recorded paths, each narinfo twice on one keep-alive connection
#             (first from the database, then from memory), p50/p90/p99/max
#   memory    RSS after start-up vs after serving HOT distinct recorded paths once (8 keep-alive
#             connections walking the list): the hot caches' cost per path
# Then, once, on the SQLite instance (item 4): one recorded path's narinfo, warm, requested at
# fixed rates (examples/openloop.rs, open loop, latency from each request's intended start)
# from quorate and from nginx proxy_cache serving the same bytes, interleaved per rate.
#
# Env: N (100000 recorded paths), NARS (100000), SAMPLE (2000), HOT (min(N, 200000): past the
#      memory caches' byte bounds at ~5 KB a path), BACKENDS ("sqlite postgres"), RATES ("1000 5000 10000"),
#      OL_SECONDS (20), OL_CONNS (64), QUORATE_BIN (skips the build of the binary; the examples
#      are built anyway), OUT (target/scale-results.txt: the raw key=value results and
#      the notes, also printed), KEEP=1.
# It never fails on a time; it fails when a dependency is missing or quorate answers wrongly.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=${PYTHON:-python3}
SB="$HERE/scalebench.py"
N=${N:-100000}
NARS=${NARS:-100000}
SAMPLE=${SAMPLE:-2000}
HOT=${HOT:-$((N < 200000 ? N : 200000))}
BACKENDS=${BACKENDS:-sqlite postgres}
RATES=${RATES:-1000 5000 10000}
OL_SECONDS=${OL_SECONDS:-20}
OL_CONNS=${OL_CONNS:-64}
OUT=${OUT:-$ROOT/target/scale-results.txt}

log() { printf '[scale %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

declare -A APT_PKG=([nginx]=nginx-light [curl]=curl [python3]=python3 [sqlite3]=sqlite3
  [psql]=postgresql-client [cargo]="")
need=(nginx curl "$PY" sqlite3 cargo)
[[ " $BACKENDS " == *" postgres "* ]] && need+=(psql)
bench_require "${need[@]}"
bench_binary
log "cargo build --release --example scale --example openloop"
(cd "$ROOT" && cargo build --release --quiet --example scale --example openloop) ||
  die "building the examples failed"
EX=$ROOT/target/release/examples

bench_workdir quorate-scale logs nginx up/A up/B up/C keys
chmod 755 "$WORK" # PostgreSQL runs as the postgres user when we are root: it must get in
bench_cleanup_extra() { if [[ -n ${PGDIR:-} ]]; then "$ROOT/scripts/test-postgres.sh" stop "$PGDIR" >/dev/null 2>&1 || true; fi; }

bench_meta_start
echo "meta_settings=N=$N recorded paths, $NARS NARs, sample $SAMPLE, hot $HOT; rates $RATES for ${OL_SECONDS}s, $OL_CONNS conns" >>"$R"

for b in 0 1 2; do
  "$QUORATE_BIN" keygen --flavor nix --name "builder-$b" --out "$WORK/keys/b$b" >/dev/null
done

config() { # FILE PORT STATE [DATABASE_URL]
  {
    printf 'listen = "127.0.0.1:%s"\nstate_dir = "%s"\nupstream_timeout = "2s"\n' "$2" "$3"
    [[ -n ${4:-} ]] && printf 'database_url = "%s"\n' "$4"
    printf '\n[[cache]]\nname = "scale"\nflavor = "nix"\nquorum = 2\non_dissent = "majority"\n'
    for b in 0 1 2; do
      printf '  [[cache.builder]]\n  name = "b%s"\n  keys = ["%s"]\n' "$b" "$(cat "$WORK/keys/b$b.pub")"
    done
    printf '  [[cache.upstream]]\n  url = "http://127.0.0.1:9"\n'
  } >"$1"
}

rss_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
kv() { awk -F= -v k="$2" '$1 == k { print substr($0, length(k) + 2) }' "$1"; }

start_timed() { # NAME CONFIG PORT: STARTED_S = seconds until /healthz answered (not in a
  # subshell: PIDS must keep the process)
  local t0
  t0=$EPOCHREALTIME
  QUORATE_LOG=${QUORATE_LOG:-warn} start_bg "$1" "$QUORATE_BIN" serve --config "$2"
  until curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$3/healthz" 2>/dev/null; do
    kill -0 "${PIDS[$1]}" 2>/dev/null || { tail -20 "$WORK/logs/$1.out" >&2; die "quorate $1 exited"; }
    ((${EPOCHREALTIME%.*} - ${t0%.*} < 600)) || die "quorate $1 not up after 600 s"
    sleep 0.01
  done
  STARTED_S=$(calc "$EPOCHREALTIME - $t0")
}

plans() { # BACKEND DB HASHPART NARHASH: EXPLAIN of the narinfo-from-database queries
  local q1 q2 q3
  q1="SELECT * FROM attestations WHERE cache = 'scale' AND hash_part = '$3' AND status = 'valid' ORDER BY id"
  q2="SELECT * FROM decisions d WHERE d.cache = 'scale' AND d.hash_part = '$3' ORDER BY d.id DESC LIMIT 1"
  q3="SELECT upstream, nar_hash, url, compression, file_size FROM nar_sources WHERE cache = 'scale' AND nar_hash = '$4' ORDER BY id"
  local q
  for q in "$q1" "$q2" "$q3"; do
    echo "    ${q%% WHERE*} WHERE ..."
    if [[ $1 == sqlite ]]; then
      sqlite3 "$2" "EXPLAIN QUERY PLAN $q" | sed 's/^/      /'
    else
      psql -X -q -A -t "$2" -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) $q" | sed 's/^/      /'
    fi
  done
}

table_sizes() { # BACKEND DB: bytes per table with its indexes
  if [[ $1 == sqlite ]]; then
    sqlite3 "$2" "SELECT coalesce(t.tbl_name, s.name), sum(s.pgsize) FROM dbstat s
      LEFT JOIN sqlite_master t ON t.name = s.name GROUP BY 1 ORDER BY 2 DESC LIMIT 8" 2>/dev/null |
      awk -F'|' '{ printf "%s %.1f MiB; ", $1, $2 / 1048576 }'
  else
    psql -X -q -A -t -F'|' "$2" -c "SELECT relname, pg_total_relation_size(oid) FROM pg_class
      WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 2 DESC LIMIT 8" |
      awk -F'|' '{ printf "%s %.1f MiB; ", $1, $2 / 1048576 }'
  fi
}

note "## Details of this run" ""
read -r P_SA P_SB P_SC P_PROXY P_Q <<<"$("$PY" "$HERE/nixbench.py" freeports 5)"
OL_HP=""

for backend in $BACKENDS; do
  state=$WORK/$backend-state
  url=""
  if [[ $backend == postgres ]]; then
    PGDIR=$WORK/pg
    url=$("$ROOT/scripts/test-postgres.sh" start "$PGDIR" | tail -1) || die "PostgreSQL did not start (scripts/test-postgres.sh)"
    [[ $url == postgres* ]] || die "scripts/test-postgres.sh printed no URL: $url"
  fi
  config "$WORK/$backend.toml" "$P_Q" "$state" "$url"
  db=${url:-$state/quorate.db}

  log "$backend: recording $N paths"
  "$EX/scale" fill "$WORK/$backend.toml" "$WORK/keys" "$N" "$WORK/paths.txt" >"$WORK/fill-$backend.env" \
    2> >(tee "$WORK/logs/fill-$backend.err" >&2) || die "filling the $backend database failed"
  for k in fill_seconds paths_per_second attestations log_entries log_seconds db_bytes_empty db_bytes_unlogged bytes_per_attestation_unlogged db_bytes bytes_per_attestation; do
    result "${backend}_$k" "$(kv "$WORK/fill-$backend.env" "$k")"
  done
  result "${backend}_tables" "$(table_sizes "$backend" "$db")"
  log "   $(tr '\n' ' ' <"$WORK/fill-$backend.env")"

  hp=$(head -1 "$WORK/paths.txt")
  narhash=$(if [[ $backend == sqlite ]]; then sqlite3 "$db" "SELECT nar_hash FROM decisions WHERE hash_part = '$hp'"
    else psql -X -q -A -t "$db" -c "SELECT nar_hash FROM decisions WHERE hash_part = '$hp'"; fi)
  note "### $backend: query plans of a narinfo served from the database" "" '```'
  plans "$backend" "$db" "$hp" "$narhash" >>"$NOTES"
  note '```' ""

  log "$backend: start-up on the filled database"
  start_timed q "$WORK/$backend.toml" "$P_Q"
  result "${backend}_start_s" "$STARTED_S"
  pid=${PIDS[q]}
  rss0=$(rss_kib "$pid" VmRSS)
  log "$backend: $SAMPLE narinfos from the database, then from memory"
  "$PY" "$SB" sample --base "http://127.0.0.1:$P_Q" --paths "$WORK/paths.txt" --n "$SAMPLE" >"$WORK/sample-$backend.env" ||
    die "quorate did not serve the recorded narinfos from $backend"
  for k in db_p50_ms db_p90_ms db_p99_ms db_max_ms memory_p50_ms memory_p99_ms; do
    result "${backend}_$k" "$(kv "$WORK/sample-$backend.env" "$k")"
  done
  log "   $(tr '\n' ' ' <"$WORK/sample-$backend.env")"

  log "$backend: $HOT distinct narinfos once each (hot caches)"
  head -n "$HOT" "$WORK/paths.txt" >"$WORK/hot.txt"
  rss1=$(rss_kib "$pid" VmRSS)
  "$PY" "$SB" serve-all --base "http://127.0.0.1:$P_Q" --paths "$WORK/hot.txt" >"$WORK/hot-$backend.env" ||
    die "quorate did not serve every recorded path"
  hot_s=$(kv "$WORK/hot-$backend.env" seconds)
  rss2=$(rss_kib "$pid" VmRSS)
  result "${backend}_hot_paths_per_s" "$(calc "$HOT / $hot_s")"
  result "${backend}_rss_start_mib" "$(calc "$rss0 / 1024")"
  result "${backend}_rss_before_hot_mib" "$(calc "$rss1 / 1024")"
  result "${backend}_rss_hot_mib" "$(calc "$rss2 / 1024")"
  result "${backend}_hot_bytes_per_path" "$(calc "($rss2 - $rss1) * 1024 / $HOT")"
  log "   RSS $((rss1 / 1024)) -> $((rss2 / 1024)) MiB over $HOT paths in $hot_s s"

  if [[ $backend == sqlite && -z $OL_HP ]]; then
    OL_HP=$hp
    curl -fsS "http://127.0.0.1:$P_Q/$hp.narinfo" >"$WORK/up/C/$hp.narinfo"
    OL_CONFIG=$WORK/$backend.toml
  fi
  stop q

  log "$backend: $NARS NAR files in the store"
  "$EX/scale" nars "$state/nars" "$NARS" 2>>"$WORK/logs/nars.err" || die "writing the NAR files failed"
  sync
  start_timed q "$WORK/$backend.toml" "$P_Q"
  result "${backend}_start_nars_new_s" "$STARTED_S"
  stop q
  start_timed q "$WORK/$backend.toml" "$P_Q"
  result "${backend}_start_nars_known_s" "$STARTED_S"
  result "${backend}_rss_start_nars_mib" "$(calc "$(rss_kib "${PIDS[q]}" VmRSS) / 1024")"
  stop q
  log "   start: $(res "${backend}_start_s") s; with $NARS new NARs $(res "${backend}_start_nars_new_s") s, known $(res "${backend}_start_nars_known_s") s"
  rm -rf "$state/nars"
  if [[ $backend == postgres ]]; then
    "$ROOT/scripts/test-postgres.sh" stop "$PGDIR" >/dev/null 2>&1 || true
    rm -rf "$PGDIR"
    PGDIR=""
  fi
done

# ---------------------------------------------------------------- item 4: fixed rate
if [[ -n $OL_HP ]]; then
  sed -e "s|@WORK@|$WORK|g" -e "s|@PORT_SA@|$P_SA|; s|@PORT_SB@|$P_SB|; s|@PORT_SC@|$P_SC|g" \
    -e "s|@PORT_PROXY@|$P_PROXY|" \
    -e "s|@USER@|$([[ $(id -u) == 0 ]] && echo 'user root;')|" \
    "$HERE/nginx.conf.in" >"$WORK/nginx/nginx.conf"
  start_bg nginx nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
  wait_http "http://127.0.0.1:$P_PROXY/$OL_HP.narinfo" || die "nginx did not start"
  curl -fsSI "http://127.0.0.1:$P_PROXY/$OL_HP.narinfo" | grep -qi 'X-Cache-Status: HIT' || die "nginx proxy_cache is not warm"
  start_timed q "$OL_CONFIG" "$P_Q"
  curl -fsS -o /dev/null "http://127.0.0.1:$P_Q/$OL_HP.narinfo" || die "quorate did not serve $OL_HP.narinfo"
  cmp -s <(curl -fsS "http://127.0.0.1:$P_Q/$OL_HP.narinfo") "$WORK/up/C/$OL_HP.narinfo" || die "quorate's narinfo changed"
  declare -A OL_URL=([quorate]="http://127.0.0.1:$P_Q/$OL_HP.narinfo" [nginx]="http://127.0.0.1:$P_PROXY/$OL_HP.narinfo")
  note "### Fixed rate: $OL_HP.narinfo ($(wc -c <"$WORK/up/C/$OL_HP.narinfo") bytes), ${OL_SECONDS}s per rate, $OL_CONNS conns" ""
  for rate in $RATES; do
    for t in quorate nginx; do
      out=$WORK/logs/openloop-$t-$rate.env
      timeout $((OL_SECONDS + 60)) "$EX/openloop" "${OL_URL[$t]}" "$rate" "$OL_SECONDS" "$OL_CONNS" >"$out" ||
        die "openloop against $t at $rate/s failed"
      for k in achieved_rate errors p50_ms p90_ms p99_ms p999_ms max_ms lag_p99_ms; do
        result "ol_${t}_${rate}_$k" "$(kv "$out" "$k")"
      done
      note "- $t at $rate/s: $(tr '\n' ' ' <"$out")"
      log "   $t at $rate/s: $(tr '\n' ' ' <"$out")"
    done
  done
  stop q
  stop nginx
fi

bench_meta_end
mkdir -p "$(dirname "$OUT")"
{ cat "$R"; echo; cat "$NOTES"; } | tee "$OUT"
log "wrote $OUT (the numbers for bench/RESULTS.md's growth section)"
