#!/usr/bin/env bash
# bench/fleet.sh — the replica set's numbers (DESIGN §11), one command, side by side.
#
# Measures, on 127.0.0.1 only (see bench/README.md "Replica set" for what each number means):
#   1 cold 100 MiB NAR: quorate with its local NAR directory + SQLite vs quorate with its NARs
#     in an S3 bucket (Garage) + PostgreSQL; fresh state each run; MiB/s and peak RSS
#   2 warm 100 MiB NAR: the same two after the NAR is stored; wrk -c4 and one curl, peak RSS
#   3 warm narinfo req/s, p50, p99 (wrk -t2 -c64): one replica directly, nginx in front of one
#     replica, nginx in front of two replicas (PostgreSQL + Garage + [replica])
# and writes its section ("## Replica set (bench/fleet.sh)") into $RESULTS_FILE (default
# bench/RESULTS.md; the section is replaced if there, appended otherwise).
#
# Env: QUORATE_BIN (skip `cargo build --release`; QUORATE_LABEL describes it), DURATION (wrk
#      seconds, 10), ROUNDS (3), COLD_NAR_RUNS (3), CONNS (64, narinfo), NAR_CONNS (4, warm NAR),
#      FIXTURES (an existing fixture dir, used read-only; default target/nix-fixtures, built by
#      tests/fixtures/make-nix-caches.sh when missing), RESULTS_FILE, KEEP=1 (keep the work dir).
# No timing assertions: it reports, it does not fail on slow numbers. It fails (non-zero)
# when a dependency is missing or quorate answers wrongly.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=${PYTHON:-python3}
NB="$HERE/nixbench.py"
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
COLD_NAR_RUNS=${COLD_NAR_RUNS:-3}
CONNS=${CONNS:-64}
NAR_CONNS=${NAR_CONNS:-4}
RESULTS_FILE=${RESULTS_FILE:-$HERE/RESULTS.md}
SECTION="## Replica set (bench/fleet.sh)"
BUCKET=quorate
REGION=garage

log() { printf '[fleet %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

# ---------------------------------------------------------------- dependencies
declare -A APT_PKG=([nginx]=nginx-light [wrk]=wrk [curl]=curl [python3]=python3)
bench_require nginx wrk curl "$PY"
# PostgreSQL (scripts/test-postgres.sh installs the server as root) and Garage (built once
# by scripts/garage.sh, ~10 minutes, then cached in ~/.cache/quorate/bin).
GARAGE=$("$ROOT/scripts/garage.sh") || die "no Garage binary (scripts/garage.sh failed)"

# ---------------------------------------------------------------- quorate and fixtures
bench_binary
if [[ -n ${FIXTURES:-} ]]; then
  FX=$(cd "$FIXTURES" && pwd) || die "FIXTURES=$FIXTURES is not a directory"
  [[ -f $FX/manifest.json ]] || die "FIXTURES=$FIXTURES has no manifest.json"
else
  FX=$ROOT/target/nix-fixtures
  command -v nix-store >/dev/null || [[ -f $FX/manifest.json ]] ||
    die "'nix-store' not found (builds the fixture caches): install Debian package nix-bin, or set FIXTURES"
  "$ROOT/tests/fixtures/make-nix-caches.sh" "$FX" || die "fixture build failed"
fi
manifest() { "$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"m": m}))' "$FX/manifest.json" "$1"; }
BIG_PATH=$(manifest 'm["paths"]["big"]["store_path"]')
BIG_SIZE=$(manifest 'm["paths"]["big"]["nar_size"]')
BIG_HASH=$(manifest 'm["paths"]["big"]["nar_hash"]')
BIG_SRI=$(manifest 'm["paths"]["big"]["nar_hash_sri"]')
BIG_HP=$(basename "$BIG_PATH" | cut -c1-32)
PUBKEY_C=$(manifest "m['builders']['C']['public_key']")
UP_DIR=$FX/caches/C # builder C's cache: uncompressed NARs
[[ -f $UP_DIR/$BIG_HP.narinfo ]] || die "$UP_DIR has no $BIG_HP.narinfo"

# ---------------------------------------------------------------- processes and cleanup
bench_workdir quorate-fleet logs nginx keys garage
chmod 755 "$WORK" # PostgreSQL runs as the postgres user when we are root: it must get in
PG_DIR=""
bench_cleanup_extra() {
  # The PostgreSQL server is pg_ctl's daemon, not our child: pg_ctl stops it by its pid file.
  [[ -z $PG_DIR ]] || "$ROOT/scripts/test-postgres.sh" stop "$PG_DIR" >/dev/null 2>&1 || true
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
maxof() { sort -g | tail -1; }
randhex() { "$PY" -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "$1"; }
private() { (umask 077 && cat >"$1"); } # FILE < text: a file only its owner reads

read -r P_UP P_LB1 P_LB2 P_QL P_QS P_R1 P_R2 P_S3 P_RPC P_ADM <<<"$("$PY" "$NB" freeports 10)"
UP=http://127.0.0.1:$P_UP
S3=http://127.0.0.1:$P_S3

# ---------------------------------------------------------------- metadata
bench_meta_start
{
  echo "meta_garage=$("$GARAGE" --version 2>&1 | head -1 | cut -d' ' -f1-2) (one node, replication_factor 1, sqlite metadata)"
  echo "meta_nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
  echo "meta_wrk=$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "meta_settings=cold NAR best of $COLD_NAR_RUNS; warm NAR wrk -t2 -c$NAR_CONNS ${DURATION}s x $ROUNDS rounds + one curl per round; narinfo wrk -t2 -c$CONNS ${DURATION}s x $ROUNDS rounds"
} >>"$R"

# ---------------------------------------------------------------- nginx: upstream and balancers
# One nginx: builder C's cache as the static upstream (sendfile; its log counts NAR fetches),
# and two balancers, round robin with keepalive to the backends: one replica, two replicas.
cat >"$WORK/nginx/nginx.conf" <<EOF
$([[ $(id -u) == 0 ]] && echo 'user root;')
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    default_type application/octet-stream;
    types { text/x-nix-narinfo narinfo; }
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy_temp;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    log_format bench '\$msec \$request_method \$request_uri \$status \$body_bytes_sent';

    server {
        listen 127.0.0.1:$P_UP;
        root $UP_DIR;
        access_log $WORK/logs/upstream.log bench;
    }

    upstream one_replica {
        server 127.0.0.1:$P_R1;
        keepalive 64;
        keepalive_requests 1000000;
    }
    upstream two_replicas {
        server 127.0.0.1:$P_R1;
        server 127.0.0.1:$P_R2;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_LB1;
        access_log off;
        location / {
            proxy_pass http://one_replica;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_buffering off;
        }
    }
    server {
        listen 127.0.0.1:$P_LB2;
        access_log off;
        location / {
            proxy_pass http://two_replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_buffering off;
        }
    }
}
EOF
start_bg nginx nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
wait_http "$UP/nix-cache-info" || die "nginx did not start (see $WORK/nginx/error.log)"
count() { grep -c -- "$2" "$1" 2>/dev/null || true; } # FILE PATTERN: matching lines
up_nar_fetches() { count "$WORK/logs/upstream.log" " GET /nar/"; }

# ---------------------------------------------------------------- PostgreSQL
log "PostgreSQL (scripts/test-postgres.sh)"
PG_DIR=$WORK/pg
PG_URL=$("$ROOT/scripts/test-postgres.sh" start "$PG_DIR" | tail -1) || die "PostgreSQL did not start (see $PG_DIR/log)"
PG_BASE=${PG_URL%/*}
PSQL=$(printf '%s\n' /usr/lib/postgresql/*/bin/psql | sort -V | tail -1)
[[ -x $PSQL ]] || PSQL=$(command -v psql) || die "psql not found"
echo "meta_postgresql=$("$PSQL" "$PG_URL" -Atqc 'SHOW server_version' | cut -d' ' -f1) (scripts/test-postgres.sh: fsync off)" >>"$R"
new_db() { # NAME -> its URL (dropped first if it exists)
  "$PSQL" "$PG_BASE/postgres" -qc "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null ||
    die "cannot create database $1"
  echo "$PG_BASE/$1"
}

# ---------------------------------------------------------------- Garage
log "Garage ($GARAGE)"
G=$WORK/garage
private "$G/garage.toml" <<EOF
# written by bench/fleet.sh (as tests/common/garage.rs)
metadata_dir = "$G/meta"
data_dir = "$G/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$P_RPC"
rpc_public_addr = "127.0.0.1:$P_RPC"
rpc_secret = "$(randhex 32)"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$P_S3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$P_ADM"
admin_token = "$(randhex 16)"
EOF
KEY_ID=GK$(randhex 12)
KEY_SECRET=$(randhex 32)
printf '%s' "$KEY_SECRET" | private "$G/s3.secret"
RUST_LOG=garage=warn start_bg garage "$GARAGE" -c "$G/garage.toml" server
gcli() { "$GARAGE" -c "$G/garage.toml" "$@" </dev/null 2>>"$WORK/logs/garage-cli.out"; }
deadline=$((SECONDS + 60))
until gcli status >/dev/null; do
  kill -0 "${PIDS[garage]}" 2>/dev/null || { tail -20 "$WORK/logs/garage.out" >&2; die "Garage exited"; }
  ((SECONDS < deadline)) || die "Garage did not answer in 60 s (see $WORK/logs/garage.out)"
  sleep 0.2
done
node=$(gcli node id -q | cut -d@ -f1)
{
  gcli layout assign -z dc1 -c 1G "$node"
  gcli layout apply --version 1
  gcli key import --yes -n fleet-bench "$KEY_ID" "$KEY_SECRET"
  gcli bucket create "$BUCKET"
  gcli bucket allow --read --write --owner "$BUCKET" --key fleet-bench
} >>"$WORK/logs/garage-cli.out" || die "setting up Garage failed (see $WORK/logs/garage-cli.out)"
s3_list() { # PREFIX (URL-encoded: / as %2F): the bucket's listing (XML), signed with the key
  curl -fsS --max-time 10 --aws-sigv4 "aws:amz:$REGION:s3" -u "$KEY_ID:$KEY_SECRET" \
    -H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' \
    "$S3/$BUCKET?list-type=2&prefix=$1"
}
deadline=$((SECONDS + 60))
until s3_list "" >/dev/null 2>&1; do
  ((SECONDS < deadline)) || die "the bucket never answered a signed listing: $(s3_list "" 2>&1 | head -5)"
  sleep 0.2
done

# ---------------------------------------------------------------- quorate instances
"$QUORATE_BIN" keygen --flavor nix --name fleet-bench-1 --out "$WORK/keys/fleet" >/dev/null ||
  die "quorate keygen failed"
randhex 32 | private "$WORK/keys/replica.secret"
# FILE PORT STATE [DB_URL PREFIX [replica]]: no DB_URL = SQLite and the local NAR directory.
quorate_config() {
  local file=$1 port=$2 state=$3 db=${4:-} prefix=${5:-} replica=${6:-}
  {
    printf 'listen = "127.0.0.1:%s"\nstate_dir = "%s"\nupstream_timeout = "5s"\n' "$port" "$state"
    [[ -z $db ]] || printf 'database_url = "%s"\n' "$db"
    if [[ -n $prefix ]]; then
      printf '\n[nar_store]\nurl = "s3://%s/%s"\nendpoint = "%s"\nregion = "%s"\npath_style = true\n' \
        "$BUCKET" "$prefix" "$S3" "$REGION"
      printf 'access_key_id = "%s"\nsecret_access_key_file = "%s"\n' "$KEY_ID" "$G/s3.secret"
    fi
    if [[ -n $replica ]]; then
      printf '\n[replica]\nadvertise_url = "http://127.0.0.1:%s"\nsecret_file = "%s"\n' \
        "$port" "$WORK/keys/replica.secret"
    fi
    printf '\n[[cache]]\nname = "main"\nflavor = "nix"\nmount = "/"\nquorum = 1\n'
    printf 'signing_key_file = "%s"\n' "$WORK/keys/fleet.sec"
    printf '  [[cache.builder]]\n  name = "c"\n  keys = ["%s"]\n' "$PUBKEY_C"
    printf '  [[cache.upstream]]\n  url = "%s"\n' "$UP"
  } >"$file"
}
start_quorate() { # NAME CONFIG [keep]: fresh state dir (wiped unless keep), waits for /readyz
  local name=$1 cfg=$2 state port
  state=$(awk -F'"' '/^state_dir/ { print $2 }' "$cfg")
  stop "$name"
  [[ ${3:-} == keep ]] || rm -rf "$state"
  QUORATE_LOG=${QUORATE_LOG:-warn} start_bg "$name" "$QUORATE_BIN" serve --config "$cfg"
  port=$(awk -F'[:"]' '/^listen/ { print $(NF-1) }' "$cfg")
  wait_http "http://127.0.0.1:$port/readyz" 30 || { tail -20 "$WORK/logs/$name.out" >&2; die "quorate $name did not start"; }
}
rss_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; } # VmHWM := current RSS
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; } # utime+stime
narinfo_url() { # BASE -> the NAR URL of the big path (dies unless the narinfo is the right one)
  local body
  body=$(curl -fsS --max-time 15 "$1/$BIG_HP.narinfo") || die "narinfo $BIG_HP from $1 not served"
  check_narinfo "$1" "$body"
  echo "$1/$(awk '/^URL: / { print $2 }' <<<"$body")"
}
check_narinfo() { # BASE BODY: StorePath, NarHash, NarSize as the manifest says
  local sp nh ns
  sp=$(awk '/^StorePath: / { print $2 }' <<<"$2")
  nh=$(awk '/^NarHash: / { print $2 }' <<<"$2")
  ns=$(awk '/^NarSize: / { print $2 }' <<<"$2")
  [[ $sp == "$BIG_PATH" && $ns == "$BIG_SIZE" && ($nh == "$BIG_HASH" || $nh == "$BIG_SRI") ]] ||
    die "wrong narinfo from $1: $(tr '\n' ' ' <<<"$2")"
}
check_nar_hash() { # URL: the whole NAR, hashed (dies unless it is the big path's NAR)
  local got
  got=$(curl -fsS --max-time 120 "$1" | "$PY" -c 'import base64, hashlib, sys
h = hashlib.sha256()
for b in iter(lambda: sys.stdin.buffer.read(1 << 20), b""):
    h.update(b)
print("sha256-" + base64.b64encode(h.digest()).decode())') || die "NAR from $1 not served"
  [[ $got == "$BIG_SRI" ]] || die "NAR from $1 hashes to $got, not $BIG_SRI"
}
s3_stored() { # PREFIX: whether the bucket holds an object of NarSize bytes under PREFIX/
  s3_list "$1%2F" 2>/dev/null | grep -q "<Size>$BIG_SIZE</Size>"
}

declare -A NAME=([local]="local directory + SQLite" [s3]="S3 (Garage) + PostgreSQL")
declare -A QBASE=([local]=http://127.0.0.1:$P_QL [s3]=http://127.0.0.1:$P_QS)
note "### Details" ""

# ================================================================ 1: cold NAR
cold_nar() { # KIND RUN: a fresh instance; sets CN_* and CN_LINE
  local kind=$1 run=$2 cfg=$WORK/$1.toml url pid idle out code size ttfb total hwm cpu0 cpu1
  local gcpu0 gcpu1 up0 prefix="" db
  CN_LISTED="" CN_STORED_MIBS=n/a
  if [[ $kind == local ]]; then
    quorate_config "$cfg" "$P_QL" "$WORK/local-state"
  else
    prefix=cold-$run
    db=$(new_db "cold_$run") || exit 1
    quorate_config "$cfg" "$P_QS" "$WORK/s3-state" "$db" "$prefix" replica
  fi
  # Not in $(...): quorate must be started by this shell so that cleanup can stop it.
  start_quorate "$kind" "$cfg"
  url=$(narinfo_url "${QBASE[$kind]}")
  pid=${PIDS[$kind]}
  idle=$(rss_kib "$pid" VmRSS)
  reset_hwm "$pid"
  up0=$(up_nar_fetches)
  cpu0=$(cpu_ticks "$pid")
  gcpu0=$(cpu_ticks "${PIDS[garage]}")
  out=$(timeout 300 "$PY" "$NB" fetch "$url")
  read -r code size ttfb _ total <<<"$out"
  [[ $code == 200 && $size == "$BIG_SIZE" ]] || die "$kind: cold NAR answered $code with $size of $BIG_SIZE bytes"
  if [[ -n $prefix ]]; then
    # The upload must be in the bucket (else this row measured no S3 at all); waiting for it
    # also keeps the upload's memory in the peak and out of the next run.
    local deadline=$((SECONDS + 60)) t_end=$EPOCHREALTIME
    until s3_stored "$prefix"; do
      ((SECONDS < deadline)) || die "s3: the NAR never appeared in the bucket under $prefix/"
      sleep 0.02
    done
    local lag
    lag=$(calc "$EPOCHREALTIME - $t_end")
    CN_LISTED="; listed in the bucket $(calc "$lag * 1000") ms after the last byte"
    CN_STORED_MIBS=$(calc "$size / 1048576 / ($total + $lag)")
  fi
  hwm=$(rss_kib "$pid" VmHWM)
  cpu1=$(cpu_ticks "$pid")
  gcpu1=$(cpu_ticks "${PIDS[garage]}")
  CN_MIBS=$(calc "$size / 1048576 / $total")
  CN_RSS=$(calc "($hwm - $idle) / 1024")
  CN_IDLE=$(calc "$idle / 1024")
  CN_CPU=$(calc "($cpu1 - $cpu0) / $(getconf CLK_TCK)")
  CN_GCPU=$(calc "($gcpu1 - $gcpu0) / $(getconf CLK_TCK)")
  CN_UP=$(($(up_nar_fetches) - up0))
  local garage_cpu=""
  [[ $kind == local ]] || garage_cpu=", Garage CPU $CN_GCPU s"
  CN_LINE="$CN_MIBS MiB/s (first byte $(calc "$ttfb * 1000") ms, $(calc "$total") s in all); quorate CPU $CN_CPU s$garage_cpu; peak RSS +$CN_RSS MiB over idle $CN_IDLE MiB; upstream NAR fetches $CN_UP$CN_LISTED"
}

log "1: cold 100 MiB NAR, $COLD_NAR_RUNS runs per setup (fresh state each)"
note "Cold 100 MiB NAR (narinfo, then one GET; fresh state_dir, and for S3 a fresh database and key prefix):" ""
for run in $(seq "$COLD_NAR_RUNS"); do
  for kind in local s3; do
    cold_nar "$kind" "$run"
    echo "$CN_MIBS" >>"$WORK/cold-$kind"
    echo "$CN_RSS" >>"$WORK/cold-rss-$kind"
    echo "$CN_CPU" >>"$WORK/cold-cpu-$kind"
    echo "$CN_GCPU" >>"$WORK/cold-gcpu-$kind"
    echo "$CN_STORED_MIBS" >>"$WORK/cold-stored-$kind"
    result "cold_idle_$kind" "$CN_IDLE"
    log "   run $run $kind: $CN_LINE"
    note "- run $run, ${NAME[$kind]}: $CN_LINE"
  done
done
for kind in local s3; do
  result "cold_mibs_$kind" "$(maxof <"$WORK/cold-$kind")"
  result "cold_all_$kind" "$(paste -sd/ "$WORK/cold-$kind")"
  result "cold_rss_$kind" "$(maxof <"$WORK/cold-rss-$kind")"
  result "cold_cpu_$kind" "$(sort -g "$WORK/cold-cpu-$kind" | head -1)"
  result "cold_gcpu_$kind" "$(sort -g "$WORK/cold-gcpu-$kind" | head -1)"
  result "cold_stored_$kind" "$(maxof <"$WORK/cold-stored-$kind")"
done

# ================================================================ 2: warm NAR
# The last cold run's state, the NAR stored in the local directory or in the bucket (streamed
# from Garage on every request); each instance restarted on it, so that its idle RSS is not
# the cold download's leftovers.
log "2: warm 100 MiB NAR, wrk -t2 -c$NAR_CONNS -d${DURATION}s + one curl, x $ROUNDS rounds"
declare -A NAR_URL IDLE
up0=$(up_nar_fetches)
for kind in local s3; do
  start_quorate "$kind" "$WORK/$kind.toml" keep
  NAR_URL[$kind]=$(narinfo_url "${QBASE[$kind]}")
  IDLE[$kind]=$(rss_kib "${PIDS[$kind]}" VmRSS)
  result "warm_idle_$kind" "$(calc "${IDLE[$kind]} / 1024")"
  check_nar_hash "${NAR_URL[$kind]}"
done
note "" "Warm 100 MiB NAR (MiB/s with wrk -c$NAR_CONNS; one curl; peak RSS during each above the restarted instance's idle RSS):" ""
wrk_mibs() { # wrk output -> Transfer/sec in MiB/s (wrk's units are binary: 1.2GB = 1.2 GiB)
  awk '/^Transfer\/sec:/ { v = $2 + 0; u = $2; sub(/^[0-9.]+/, "", u)
    f = (u == "GB") ? 1024 : (u == "MB") ? 1 : (u == "KB") ? 1 / 1024 : 1 / 1048576
    printf "%.1f", v * f }' "$1"
}
for round in $(seq "$ROUNDS"); do
  for kind in local s3; do
    pid=${PIDS[$kind]}
    idle=${IDLE[$kind]}
    reset_hwm "$pid"
    read -r code size secs <<<"$(curl -sS --max-time 120 -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "${NAR_URL[$kind]}")"
    [[ $code == 200 && $size == "$BIG_SIZE" ]] || die "warm NAR from $kind: $code, $size bytes"
    single=$(calc "$size / 1048576 / $secs")
    rss1=$(calc "($(rss_kib "$pid" VmHWM) - $idle) / 1024")
    reset_hwm "$pid"
    gcpu0=$(cpu_ticks "${PIDS[garage]}")
    out=$WORK/logs/wrk-nar-$kind-$round.txt
    fg_run timeout $((DURATION + 60)) wrk -t2 -c"$NAR_CONNS" -d"${DURATION}s" --timeout 60s "${NAR_URL[$kind]}" >"$out" 2>&1 ||
      die "wrk failed against $kind: $(cat "$out")"
    grep -q 'Non-2xx' "$out" && die "$kind answered non-2xx: $(cat "$out")"
    rssw=$(calc "($(rss_kib "$pid" VmHWM) - $idle) / 1024")
    gcpu=$(calc "($(cpu_ticks "${PIDS[garage]}") - $gcpu0) / $(getconf CLK_TCK)")
    mibs=$(wrk_mibs "$out")
    errs=$(awk '/Socket errors/ { sub(/^ *Socket errors: */, ""); print }' "$out")
    echo "$mibs" >>"$WORK/warm-$kind"
    echo "$single" >>"$WORK/warm-single-$kind"
    echo "$rss1" >>"$WORK/warm-rss1-$kind"
    echo "$rssw" >>"$WORK/warm-rssw-$kind"
    log "   round $round $kind: $mibs MiB/s ($NAR_CONNS conns${errs:+; socket errors $errs}), one curl $single MiB/s; peak RSS +$rssw / +$rss1 MiB"
    [[ $kind == s3 ]] && gcpu=", Garage CPU $gcpu s" || gcpu=""
    note "- round $round, ${NAME[$kind]}: $mibs MiB/s with $NAR_CONNS connections${errs:+ (socket errors: $errs)}, peak RSS +$rssw MiB$gcpu; one curl $single MiB/s, peak RSS +$rss1 MiB"
  done
done
for kind in local s3; do
  result "warm_mibs_$kind" "$(median <"$WORK/warm-$kind")"
  result "warm_single_$kind" "$(maxof <"$WORK/warm-single-$kind")"
  result "warm_rss1_$kind" "$(maxof <"$WORK/warm-rss1-$kind")"
  result "warm_rssw_$kind" "$(maxof <"$WORK/warm-rssw-$kind")"
done
up_warm=$(($(up_nar_fetches) - up0))
note "- upstream NAR fetches during the warm rounds: $up_warm"
stop local
stop s3

# ================================================================ 3: narinfo through a balancer
log "3: narinfo req/s, wrk -t2 -c$CONNS -d${DURATION}s --latency x $ROUNDS rounds: direct, nginx -> 1, nginx -> 2"
LB_DB=$(new_db fleet_lb)
quorate_config "$WORK/r1.toml" "$P_R1" "$WORK/r1-state" "$LB_DB" lb replica
quorate_config "$WORK/r2.toml" "$P_R2" "$WORK/r2-state" "$LB_DB" lb replica
start_quorate r1 "$WORK/r1.toml"
start_quorate r2 "$WORK/r2.toml"
R1=http://127.0.0.1:$P_R1
R2=http://127.0.0.1:$P_R2
declare -A LB_URL=([direct]="$R1/$BIG_HP.narinfo" [lb1]="http://127.0.0.1:$P_LB1/$BIG_HP.narinfo"
  [lb2]="http://127.0.0.1:$P_LB2/$BIG_HP.narinfo")
declare -A LB_NAME=([direct]="one replica directly (no balancer)" [lb1]="nginx -> 1 replica"
  [lb2]="nginx -> 2 replicas")
# Decided once (r1 asks the upstream), then read by r2 from the shared database; every way in
# must give the same narinfo.
narinfo_url "$R1" >/dev/null
narinfo_url "$R2" >/dev/null
for t in lb1 lb2 lb2; do narinfo_url "${LB_URL[$t]%/*}" >/dev/null; done
# A short unrecorded run through both replicas: connection pools at their working size.
fg_run timeout 30 wrk -t2 -c"$CONNS" -d2s "${LB_URL[lb2]}" >"$WORK/logs/wrk-warmup.txt" 2>&1 || true
to_ms() { # wrk latency like 241.00us / 1.03ms / 1.20s -> ms
  awk '{ v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /ms$/) v = v; else if ($1 ~ /s$/) v *= 1000; printf "%.3f", v }' <<<"$1"
}
narinfo_200s() { # BASE: narinfo answers 200 so far (quorate's /metrics)
  curl -fsS --max-time 5 "$1/metrics" | awk '/^quorate_http_requests_total\{/ && /route="narinfo"/ && /status="200"/ { n += $NF } END { print n + 0 }'
}
share1=0 share2=0
note "" "Warm narinfo, wrk -t2 -c$CONNS -d${DURATION}s --latency (req/s, p50 ms, p99 ms):" ""
for round in $(seq "$ROUNDS"); do
  for t in direct lb1 lb2; do
    out=$WORK/logs/wrk-$t-$round.txt
    a1=$(narinfo_200s "$R1") a2=$(narinfo_200s "$R2")
    fg_run timeout $((DURATION + 30)) wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "${LB_URL[$t]}" >"$out" 2>&1 ||
      die "wrk failed against $t: $(cat "$out")"
    grep -q 'Non-2xx' "$out" && die "$t answered non-2xx under load: $(cat "$out")"
    b1=$(narinfo_200s "$R1") b2=$(narinfo_200s "$R2")
    if [[ $t == lb2 ]]; then share1=$((share1 + b1 - a1)) share2=$((share2 + b2 - a2)); fi
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    echo "$rps" >>"$WORK/lb-$t-rps"
    echo "$p50" >>"$WORK/lb-$t-p50"
    echo "$p99" >>"$WORK/lb-$t-p99"
    log "   round $round $t: $rps req/s p50 $p50 ms p99 $p99 ms (r1 +$((b1 - a1)), r2 +$((b2 - a2)))"
    note "- round $round, ${LB_NAME[$t]}: $rps req/s, p50 $p50 ms, p99 $p99 ms; answered by r1 $((b1 - a1)), r2 $((b2 - a2))"
  done
done
for t in direct lb1 lb2; do
  result "lb_${t}_rps" "$(median <"$WORK/lb-$t-rps")"
  result "lb_${t}_p50" "$(median <"$WORK/lb-$t-p50")"
  result "lb_${t}_p99" "$(median <"$WORK/lb-$t-p99")"
done
result lb_share "r1 $share1, r2 $share2"
# Still one decision, and the NAR was never fetched for it: only the narinfo is measured.
narinfo_url "${LB_URL[lb2]%/*}" >/dev/null
stop r1
stop r2

# ================================================================ the report
bench_meta_end

fmt() { awk -v x="$1" -v d="${2:-0}" 'BEGIN { if (x == "n/a" || x == "") print "n/a"; else printf "%.*f", d, x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
SEC=$WORK/section.md
{
  echo "$SECTION"
  echo
  echo "Produced by \`bench/fleet.sh\` (see bench/README.md \"Replica set\" for what each row means)."
  echo
  grep '^meta_' "$R" | sed -e 's/^meta_/- /' -e 's/=/: /'
  echo
  echo "| NAR, 100 MiB (NarSize $BIG_SIZE) | ${NAME[local]} | ${NAME[s3]} | S3 / local |"
  echo "|---|---|---|---|"
  row() { # LABEL KEY DIGITS
    local l s
    l=$(res "$2_local") s=$(res "$2_s3")
    echo "| $1 | $(fmt "$l" "$3") | $(fmt "$s" "$3") | $(ratio "$s" "$l") |"
  }
  row "cold: MiB/s, best of $COLD_NAR_RUNS (runs: local $(res cold_all_local); S3 $(res cold_all_s3))" cold_mibs 0
  echo "| cold: MiB/s until the NAR is listed in the bucket (NarSize / (GET + the wait after it, polled every 20 ms)), best of $COLD_NAR_RUNS | – | $(fmt "$(res cold_stored_s3)") | |"
  row "cold: peak RSS above idle, MiB, worst of runs (idle: local $(fmt "$(res cold_idle_local)" 1), S3 $(fmt "$(res cold_idle_s3)" 1))" cold_rss 1
  row "cold: quorate CPU-seconds, least of runs" cold_cpu 2
  echo "| cold: Garage CPU-seconds (the S3 server, same machine), least of runs | – | $(fmt "$(res cold_gcpu_s3)" 2) | |"
  row "warm: MiB/s with wrk -t2 -c$NAR_CONNS -d${DURATION}s, median of $ROUNDS rounds" warm_mibs 0
  row "warm: MiB/s of one curl, best of $ROUNDS" warm_single 0
  row "warm: peak RSS above idle during wrk -c$NAR_CONNS, MiB, worst of rounds (idle after a restart: local $(fmt "$(res warm_idle_local)" 1), S3 $(fmt "$(res warm_idle_s3)" 1))" warm_rssw 1
  row "warm: peak RSS above idle during one curl, MiB, worst of rounds" warm_rss1 1
  echo
  d=$(res lb_direct_rps) l1=$(res lb_lb1_rps) l2=$(res lb_lb2_rps)
  echo "| warm narinfo, wrk -t2 -c$CONNS -d${DURATION}s, median of $ROUNDS rounds | req/s | p50 ms | p99 ms | req/s vs direct |"
  echo "|---|---|---|---|---|"
  for t in direct lb1 lb2; do
    echo "| ${LB_NAME[$t]} | $(fmt "$(res "lb_${t}_rps")") | $(fmt "$(res "lb_${t}_p50")" 3) | $(fmt "$(res "lb_${t}_p99")" 3) | $(ratio "$(res "lb_${t}_rps")" "$d") |"
  done
  echo "| **2 replicas / 1 replica** (through nginx) | $(ratio "$l2" "$l1") | | | |"
  echo
  echo "The two replicas answered $(res lb_share) of the 2-replica rounds' narinfo requests."
  echo "On this $(nproc)-core machine wrk, nginx and the replicas share the same cores: a second"
  echo "replica brings no CPU with it, so the 2-replica row cannot show a scale-up. What these rows"
  echo "show is the balancer's cost (nginx -> 1 replica vs direct) and what a second replica"
  echo "behind it changes on the same cores; scaling out needs replicas on machines of their own."
  echo
  cat "$NOTES"
} >"$SEC"
# Replace the section (up to the next "## " heading) or append it.
"$PY" - "$RESULTS_FILE" "$SEC" "$SECTION" <<'EOF'
import os, sys
path, sec_path, heading = sys.argv[1:4]
old = open(path).read().splitlines() if os.path.exists(path) else []
new = open(sec_path).read().rstrip("\n").splitlines()
out, i = [], 0
while i < len(old):
    if old[i] == heading:
        i += 1
        while i < len(old) and not old[i].startswith("## "):
            i += 1
        continue
    out.append(old[i])
    i += 1
while out and out[-1] == "":
    out.pop()
if out:
    out.append("")
open(path, "w").write("\n".join(out + new) + "\n")
EOF
sed -n '/^| NAR, 100 MiB/,/2 replicas \/ 1 replica/p' "$SEC" >&2
log "wrote $RESULTS_FILE"
