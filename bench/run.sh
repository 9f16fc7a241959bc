#!/usr/bin/env bash
# bench/run.sh — quorate's benchmark (DESIGN §10), one command, side by side with nginx.
#
# Measures, on 127.0.0.1 only (see bench/README.md for what each number means):
#   1 warm narinfo req/s + p50/p99 at 64 conns: quorate vs nginx proxy_cache vs nginx static
#   2 cold narinfo, majority 2 of 3, upstreams answering after 20/40/2000 ms
#   3 warm 100 MiB NAR: quorate's local store vs nginx sendfile of the same bytes
#   4 cold 100 MiB NAR from a zstd upstream (fresh state each run), and a generated 1 GiB one
#   5 peak RSS above idle while streaming those cold NARs
#   6 500 concurrent cold narinfo requests / 50 concurrent cold NAR requests: upstream fetches
#   7 the real Nix client substituting the 100 MiB path: quorate cold, warm vs straight from
#     each upstream (xz, zstd, none) served by nginx; the fastest is the reference
#   8 warm narinfo at fixed rates (open loop): p50/p99/p99.9 vs nginx proxy_cache, and the
#     latency distributions charted into bench/latency.svg
# and writes the table to $RESULTS_FILE (default bench/RESULTS.md).
#
# Env: QUORATE_BIN (skip `cargo build --release`; QUORATE_LABEL describes it), DURATION (wrk seconds, 10), ROUNDS (3),
#      CONNS (64), COLD_N (20), COLD_NAR_RUNS (5), NAR_CONNS (4, warm NAR), NIX_ROUNDS (5),
#      FIXED_RATES ("1000 5000 10000"), FIXED_SECONDS (10), GEN_MIB (1024; 0 = no
#      generated NAR), RESULTS_FILE, KEEP=1 (keep the work dir), TESTS ("1 2 3 4 5 6 7").
# No timing assertions: it reports, it does not fail on slow numbers. It fails (non-zero)
# when a dependency is missing or quorate answers wrongly.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=${PYTHON:-python3}
NB="$HERE/nixbench.py"
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
COLD_N=${COLD_N:-20}
COLD_NAR_RUNS=${COLD_NAR_RUNS:-5}
NAR_CONNS=${NAR_CONNS:-4}
GEN_MIB=${GEN_MIB:-1024}
TESTS=${TESTS:-1 2 3 4 5 6 7 8}
NIX_ROUNDS=${NIX_ROUNDS:-5}
FIXED_RATES=${FIXED_RATES:-1000 5000 10000}
FIXED_SECONDS=${FIXED_SECONDS:-10}
RESULTS_FILE=${RESULTS_FILE:-$HERE/RESULTS.md}
DELAYS=(0.020 0.040 2.000) # upstreams A, B, C for the cold narinfo tests
BURST_N=500
NCPU=$(nproc)
NAR_BURST_N=${NAR_BURST_N:-50}

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
want() { [[ " $TESTS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- dependencies
declare -A APT_PKG=([nginx]=nginx-light [wrk]=wrk [curl]=curl [zstd]=zstd [openssl]=openssl
  [nix-store]=nix-bin [python3]=python3 [cargo]="")
bench_require nginx wrk curl zstd openssl nix-store "$PY"
if ! "$PY" -c 'import cryptography' 2>/dev/null; then
  if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import cryptography' 2>/dev/null; then
    PY=/usr/bin/python3
  elif [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing python3-cryptography"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-cryptography >/dev/null
    PY=/usr/bin/python3
  fi
  "$PY" -c 'import cryptography' 2>/dev/null ||
    die "python module 'cryptography' missing (signs the synthetic narinfos): apt-get install python3-cryptography, or pip install cryptography"
fi

# ---------------------------------------------------------------- quorate and fixtures
bench_binary
FX=$ROOT/target/nix-fixtures
"$ROOT/tests/fixtures/make-nix-caches.sh" "$FX" || die "fixture build failed"
manifest() { "$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"m": m}))' "$FX/manifest.json" "$1"; }
BIG_PATH=$(manifest 'm["paths"]["big"]["store_path"]')
BIG_SIZE=$(manifest 'm["paths"]["big"]["nar_size"]')
BIG_HP=$(basename "$BIG_PATH" | cut -c1-32)
BIG_KEY=$(manifest 'm["paths"]["big"]["nar_hash"][7:]')
declare -A PUBKEY
for b in A B C; do PUBKEY[$b]=$(manifest "m['builders']['$b']['public_key']"); done

# ---------------------------------------------------------------- processes and cleanup
bench_workdir quorate-bench logs nginx nix

read -r P_DA P_DB P_DC P_SA P_SB P_SC P_PROXY P_Q1 P_Q2 P_Q3 <<<"$("$PY" "$NB" freeports 10)"

# ---------------------------------------------------------------- upstream trees
gen_args=()
if ((GEN_MIB > 0)); then
  free_mib=$(df -Pm "$ROOT/target" | awk 'NR==2 { print $4 }')
  if ((free_mib > GEN_MIB * 4 + 1024)); then
    gen_args=(--gen-dir "$ROOT/target/bench-data" --gen-mib "$GEN_MIB")
    [[ -f $ROOT/target/bench-data/big-${GEN_MIB}m.nar.json ]] || log "generating a $GEN_MIB MiB NAR (once, kept in target/bench-data)"
  else
    log "only $free_mib MiB free: skipping the generated $GEN_MIB MiB NAR"
    GEN_MIB=0
  fi
fi
"$PY" "$NB" prepare --fixtures "$FX" --out "$WORK" --synth $((COLD_N + 5)) "${gen_args[@]}"
mapfile -t SYNTH <"$WORK/synth.txt"
# shellcheck disable=SC1091
source "$WORK/gen.env"

# ---------------------------------------------------------------- metadata
bench_meta_start
{
  echo "meta_nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
  echo "meta_wrk=$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "meta_nix=$(nix-store --version 2>/dev/null)"
  echo "meta_curl=$(curl --version | head -1 | cut -d' ' -f1-2)"
  echo "meta_rustc=$(rustc --version 2>/dev/null || echo '?')"
  echo "tests=$TESTS"
  echo "meta_settings=wrk ${DURATION}s x ${ROUNDS} rounds, -t2 -c$CONNS; $COLD_N cold narinfos; cold NAR best of $COLD_NAR_RUNS; warm NAR wrk -t2 -c$NAR_CONNS ${DURATION}s x $ROUNDS"
} >>"$R"

# ---------------------------------------------------------------- upstreams
sed -e "s|@WORK@|$WORK|g" -e "s|@PORT_SA@|$P_SA|; s|@PORT_SB@|$P_SB|; s|@PORT_SC@|$P_SC|g" \
  -e "s|@PORT_PROXY@|$P_PROXY|" \
  -e "s|@USER@|$([[ $(id -u) == 0 ]] && echo 'user root;')|" \
  "$HERE/nginx.conf.in" >"$WORK/nginx/nginx.conf"
start_bg nginx nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
i=0
for b in A B C; do
  start_bg "delayed-$b" "$PY" "$NB" upstream --dir "$WORK/up/$b" --port "$(eval echo "\$P_D$b")" \
    --delay "${DELAYS[$i]}" --log "$WORK/logs/delayed-$b.log"
  i=$((i + 1))
done
for p in $P_SA $P_SB $P_SC $P_PROXY $P_DA $P_DB $P_DC; do
  wait_http "http://127.0.0.1:$p/nix-cache-info" || die "upstream on port $p did not start (see $WORK/logs)"
done

# ---------------------------------------------------------------- quorate instances
quorate_config() { # FILE PORT STATE QUORUM "BUILDERS" URL...
  local file=$1 port=$2 state=$3 quorum=$4 builders=$5 b u
  shift 5
  {
    printf 'listen = "127.0.0.1:%s"\nstate_dir = "%s"\nupstream_timeout = "5s"\n\n' "$port" "$state"
    printf '[[cache]]\nname = "bench"\nflavor = "nix"\nquorum = %s\non_dissent = "majority"\n' "$quorum"
    for b in $builders; do
      printf '  [[cache.builder]]\n  name = "%s"\n  keys = ["%s"]\n' "$b" "${PUBKEY[$b]}"
    done
    for u in "$@"; do printf '  [[cache.upstream]]\n  url = "%s"\n' "$u"; done
  } >"$file"
}
start_quorate() { # NAME CONFIG: fresh state dir (wiped), waits for /healthz
  local name=$1 cfg=$2 state
  state=$(awk -F'"' '/^state_dir/ { print $2 }' "$cfg")
  stop "$name"
  rm -rf "$state"
  QUORATE_LOG=${QUORATE_LOG:-warn} start_bg "$name" "$QUORATE_BIN" serve --config "$cfg"
  local port
  port=$(awk -F'[:"]' '/^listen/ { print $(NF-1) }' "$cfg")
  wait_http "http://127.0.0.1:$port/healthz" 30 || { tail -20 "$WORK/logs/$name.out" >&2; die "quorate $name did not start"; }
}
rss_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
narinfo_url() { # BASE HASHPART -> the NAR URL quorate's narinfo points at (dies unless 200)
  local body
  body=$(curl -fsS --max-time 15 "$1/$2.narinfo") || die "narinfo $2 from $1 not served"
  echo "$1/$(awk '/^URL: / { print $2 }' <<<"$body")"
}
count() { # FILE PATTERN: matching lines (0 if none)
  grep -c -- "$2" "$1" 2>/dev/null || true
}

Q1=http://127.0.0.1:$P_Q1
quorate_config "$WORK/q1.toml" "$P_Q1" "$WORK/q1-state" 2 "A B C" \
  "http://127.0.0.1:$P_DA" "http://127.0.0.1:$P_DB" "http://127.0.0.1:$P_DC"
Q2=http://127.0.0.1:$P_Q2
quorate_config "$WORK/q2.toml" "$P_Q2" "$WORK/q2-state" 1 "B" "http://127.0.0.1:$P_SB"
Q3=http://127.0.0.1:$P_Q3
quorate_config "$WORK/q3.toml" "$P_Q3" "$WORK/q3-state" 2 "A B C" \
  "http://127.0.0.1:$P_SB" "http://127.0.0.1:$P_SA" "http://127.0.0.1:$P_SC"

note "## Details of this run" ""

# ================================================================ 1, 2, 6a: narinfo
if want 1 || want 2 || want 6 || want 8; then
  start_quorate q1 "$WORK/q1.toml"
fi

to_ms() { # wrk latency like 241.00us / 1.03ms / 1.20s -> ms
  awk '{ v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /ms$/) v = v; else if ($1 ~ /s$/) v *= 1000; printf "%.3f", v }' <<<"$1"
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

if want 1; then
  log "1: warm narinfo, wrk -t2 -c$CONNS -d${DURATION}s x $ROUNDS rounds"
  curl -fsS -o /dev/null "$Q1/$BIG_HP.narinfo" || die "quorate did not serve $BIG_HP.narinfo"
  for _ in 1 2; do curl -fsS -o /dev/null "http://127.0.0.1:$P_PROXY/$BIG_HP.narinfo"; done
  curl -fsSI "http://127.0.0.1:$P_PROXY/$BIG_HP.narinfo" | grep -qi 'X-Cache-Status: HIT' ||
    die "nginx proxy_cache is not warm"
  declare -A T1_URL=([quorate]="$Q1/$BIG_HP.narinfo" [nginx]="http://127.0.0.1:$P_PROXY/$BIG_HP.narinfo"
    [direct]="http://127.0.0.1:$P_SC/$BIG_HP.narinfo")
  note "### 1. wrk rounds (req/s, p50 ms, p99 ms)" ""
  for round in $(seq "$ROUNDS"); do
    for t in quorate nginx direct; do
      out=$WORK/logs/wrk-$t-$round.txt
      timeout $((DURATION + 30)) wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "${T1_URL[$t]}" >"$out" 2>&1 ||
        die "wrk failed against $t: $(cat "$out")"
      grep -q 'Non-2xx' "$out" && die "$t answered non-2xx under load: $(cat "$out")"
      rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
      p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
      p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
      echo "$rps" >>"$WORK/t1-$t-rps"
      echo "$p50" >>"$WORK/t1-$t-p50"
      echo "$p99" >>"$WORK/t1-$t-p99"
      note "- round $round $t: $rps req/s, p50 $p50 ms, p99 $p99 ms"
      log "   round $round $t: $rps req/s p50 $p50 ms p99 $p99 ms"
    done
  done
  # The same, with the server alone on CPU 0 and wrk -t1 alone on CPU 1: on a 2-core
  # machine the load generator otherwise competes with the server, and tail latency then
  # measures the scheduler more than the server.
  if ((NCPU >= 2)) && command -v taskset >/dev/null; then
    nginx_pids=("${PIDS[nginx]}" $(ps -o pid= --ppid "${PIDS[nginx]}"))
    note "" "Pinned: server on CPU 0, wrk -t1 on CPU 1:" ""
    for round in $(seq "$ROUNDS"); do
      for t in quorate nginx; do
        if [[ $t == quorate ]]; then pids=("${PIDS[q1]}"); else pids=("${nginx_pids[@]}"); fi
        for p in "${pids[@]}"; do taskset -a -p -c 0 "$p" >/dev/null; done
        out=$WORK/logs/wrk-pinned-$t-$round.txt
        timeout $((DURATION + 30)) taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
          "${T1_URL[$t]}" >"$out" 2>&1 || die "wrk failed against $t: $(cat "$out")"
        for p in "${pids[@]}"; do taskset -a -p -c "0-$((NCPU - 1))" "$p" >/dev/null; done
        grep -q 'Non-2xx' "$out" && die "$t answered non-2xx under load: $(cat "$out")"
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
        echo "$rps" >>"$WORK/t1-pinned-$t-rps"
        echo "$p50" >>"$WORK/t1-pinned-$t-p50"
        echo "$p99" >>"$WORK/t1-pinned-$t-p99"
        note "- round $round $t pinned: $rps req/s, p50 $p50 ms, p99 $p99 ms"
        log "   round $round $t pinned: $rps req/s p50 $p50 ms p99 $p99 ms"
      done
    done
    for t in quorate nginx; do
      result "t1_pinned_${t}_rps" "$(median <"$WORK/t1-pinned-$t-rps")"
      result "t1_pinned_${t}_p50" "$(median <"$WORK/t1-pinned-$t-p50")"
      result "t1_pinned_${t}_p99" "$(median <"$WORK/t1-pinned-$t-p99")"
    done
  fi
  for t in quorate nginx direct; do
    result "t1_${t}_rps" "$(median <"$WORK/t1-$t-rps")"
    result "t1_${t}_p50" "$(median <"$WORK/t1-$t-p50")"
    result "t1_${t}_p99" "$(median <"$WORK/t1-$t-p99")"
  done
  note ""
fi

if want 8; then
  # Fixed-rate (open-loop) warm narinfo: quorate vs nginx proxy_cache at rates both sustain,
  # latency from each request's intended start (examples/openloop.rs). The server is pinned
  # to CPU 0 and the generator to CPU 1 where there are 2+ CPUs (see test 1's pinned rows).
  log "8: fixed-rate warm narinfo at ${FIXED_RATES} req/s, ${FIXED_SECONDS}s each"
  if [[ ! -x $ROOT/target/release/examples/openloop ]]; then
    (cd "$ROOT" && cargo build --release --quiet --example openloop) || die "cannot build examples/openloop"
  fi
  OL=$ROOT/target/release/examples/openloop
  declare -A T8_URL=([quorate]="$Q1/$BIG_HP.narinfo" [nginx]="http://127.0.0.1:$P_PROXY/$BIG_HP.narinfo")
  for t in quorate nginx; do # warm both (and decide once)
    for _ in 1 2 3; do curl -fsS -o /dev/null --max-time 15 "${T8_URL[$t]}" || die "$t narinfo not served"; done
  done
  pin=()
  if ((NCPU >= 2)) && command -v taskset >/dev/null; then pin=(taskset -c 1); fi
  nginx_pids=("${PIDS[nginx]}" $(ps -o pid= --ppid "${PIDS[nginx]}"))
  how="not pinned"
  ((${#pin[@]})) && how="pinned: server CPU 0, generator CPU 1"
  note "### 8. fixed-rate warm narinfo (open loop, ${FIXED_SECONDS} s per rate, $how)" ""
  for rate in $FIXED_RATES; do
    for t in quorate nginx; do
      if [[ $t == quorate ]]; then pids=("${PIDS[q1]}"); else pids=("${nginx_pids[@]}"); fi
      if ((${#pin[@]})); then for p in "${pids[@]}"; do taskset -a -p -c 0 "$p" >/dev/null; done; fi
      out=$WORK/logs/openloop-$t-$rate.env
      timeout $((FIXED_SECONDS + 60)) "${pin[@]}" "$OL" "${T8_URL[$t]}" "$rate" "$FIXED_SECONDS" 64 >"$out" ||
        die "openloop against $t at $rate/s failed: $(cat "$out")"
      if ((${#pin[@]})); then for p in "${pids[@]}"; do taskset -a -p -c "0-$((NCPU - 1))" "$p" >/dev/null; done; fi
      get() { awk -F= -v k="$1" '$1 == k { print $2 }' "$out"; }
      [[ $(get errors) == 0 ]] || die "$t: $(get errors) errors at $rate/s"
      for k in achieved_rate p50_ms p99_ms p999_ms max_ms lag_p99_ms cdf_ms; do
        result "t8_${t}_${rate}_${k}" "$(get $k)"
      done
      note "- $t at $rate/s: achieved $(get achieved_rate)/s, p50 $(get p50_ms) ms, p99 $(get p99_ms) ms, p99.9 $(get p999_ms) ms, max $(get max_ms) ms (generator lag p99 $(get lag_p99_ms) ms)"
      log "   $t at $rate/s: p50 $(get p50_ms) p99 $(get p99_ms) p99.9 $(get p999_ms) ms"
    done
  done
  result t8_rates "$FIXED_RATES"
  note ""
fi

if want 2; then
  log "2: cold narinfo x $COLD_N (upstream delays ${DELAYS[*]} s)"
  urls=()
  for ((i = 0; i < COLD_N; i++)); do urls+=("$Q1/${SYNTH[$i]}.narinfo"); done
  # The floor: upstream B alone (the second answer quorum 2 waits for), same paths.
  : >"$WORK/t2-floor.txt"
  for ((i = 0; i < COLD_N; i++)); do
    "$PY" "$NB" timeget "http://127.0.0.1:$P_DB/${SYNTH[$((COLD_N + 1))]}.narinfo" >>"$WORK/t2-floor.txt"
  done
  result t2_floor_ms "$(awk '{ print $2 }' "$WORK/t2-floor.txt" | median)"
  # One at a time, a little apart, each on a fresh connection (as a client's first query).
  : >"$WORK/t2.txt"
  for u in "${urls[@]}"; do "$PY" "$NB" timeget "$u" >>"$WORK/t2.txt"; sleep 0.2; done
  result t2_n "$COLD_N"
  result t2_ok "$(awk '$1 == 200' "$WORK/t2.txt" | wc -l)"
  result t2_median_ms "$(awk '{ print $2 }' "$WORK/t2.txt" | median)"
  result t2_min_ms "$(awk '{ print $2 }' "$WORK/t2.txt" | sort -g | head -1)"
  result t2_max_ms "$(awk '{ print $2 }' "$WORK/t2.txt" | sort -g | tail -1)"
  note "### 2. cold narinfo times (status ms bytes)" "" '```' "$(cat "$WORK/t2.txt")" '```' ""
  log "   $(awk '{ print $2 }' "$WORK/t2.txt" | tr '\n' ' ')"
fi

if want 6; then
  hp=${SYNTH[$COLD_N]}
  log "6a: $BURST_N concurrent requests for one uncached narinfo"
  burst=$("$PY" "$NB" burst --url "$Q1/$hp.narinfo" --n "$BURST_N")
  sleep "$(calc "${DELAYS[2]} + 1.5")" # let the slowest upstream answer (and be logged)
  counts=$(for b in A B C; do count "$WORK/logs/delayed-$b.log" " GET /$hp.narinfo "; done | paste -sd/)
  result t6a_upstream_counts "$counts"
  result t6a_statuses "$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); print(", ".join(f"{v}x{k}" for k,v in d["statuses"].items()))' "$burst")"
  note "### 6. single flight" "" "- narinfo burst: $burst; upstream requests A/B/C: $counts"
  log "   $burst; upstream requests A/B/C = $counts"
fi
stop q1

# ================================================================ 3, 4, 5: NARs
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; } # utime+stime
cold_nar() { # LABEL HASHPART SIZE: fresh q2 state; sets CN_* (MiB/s, MiB, ms)
  # Not in $(...): quorate must be started by this shell so that cleanup can stop it.
  start_quorate q2 "$WORK/q2.toml"
  local url pid idle out code size ttfb pen total hwm cpu0 cpu1
  url=$(narinfo_url "$Q2" "$2")
  pid=${PIDS[q2]}
  idle=$(rss_kib "$pid" VmRSS)
  echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true # reset VmHWM to the current RSS
  cpu0=$(cpu_ticks "$pid")
  out=$(timeout 600 "$PY" "$NB" fetch "$url")
  cpu1=$(cpu_ticks "$pid")
  read -r code size ttfb pen total <<<"$out"
  [[ $code == 200 && $size == "$3" ]] || die "$1: cold NAR answered $code with $size of $3 bytes"
  hwm=$(rss_kib "$pid" VmHWM)
  CN_MIBS=$(calc "$size / 1048576 / $total")
  CN_STREAM_MIBS=$(calc "($size - 1) / 1048576 / $pen")
  CN_TAIL_MS=$(calc "($total - $pen) * 1000")
  CN_TTFB_MS=$(calc "$ttfb * 1000")
  CN_CPU_S=$(calc "($cpu1 - $cpu0) / $(getconf CLK_TCK)")
  CN_CPU_MIBS=$(calc "$size / 1048576 / ($CN_CPU_S > 0 ? $CN_CPU_S : 0.001)")
  CN_RSS=$(calc "($hwm - $idle) / 1024")
  CN_IDLE=$(calc "$idle / 1024")
  CN_LINE="$CN_MIBS MiB/s end to end (first byte $CN_TTFB_MS ms; all but the last byte at $CN_STREAM_MIBS MiB/s, then $CN_TAIL_MS ms until the verified last byte); quorate CPU $CN_CPU_S s = $CN_CPU_MIBS MiB per CPU-second; peak RSS +$CN_RSS MiB over idle $CN_IDLE MiB"
}

pipeline_mibs() { # HASHPART SIZE: MiB/s of `curl upstream-B | zstd -d | openssl sha256`
  # The machine's own ceiling for fetch + decompress + hash, with no store and no client.
  local zst t0
  zst=$(awk '/^URL: / { print $2 }' "$WORK/up/B/$1.narinfo")
  t0=$EPOCHREALTIME
  curl -fsS "http://127.0.0.1:$P_SB/$zst" | zstd -dcq | openssl dgst -sha256 >/dev/null
  calc "$2 / 1048576 / ($EPOCHREALTIME - $t0)"
}

if want 4 || want 5 || want 3; then
  log "4/5: cold 100 MiB NAR from the zstd upstream, $COLD_NAR_RUNS runs (fresh state each)"
  all=() best=0 best_vals=(n/a n/a n/a) worst_rss=0 idle=0
  for run in $(seq "$COLD_NAR_RUNS"); do
    cold_nar "cold-100" "$BIG_HP" "$BIG_SIZE"
    all+=("$CN_MIBS")
    if awk -v a="$best" -v b="$CN_MIBS" 'BEGIN { exit !(b > a) }'; then
      best=$CN_MIBS
      best_vals=("$CN_STREAM_MIBS" "$CN_TAIL_MS" "$CN_CPU_MIBS")
    fi
    worst_rss=$(awk -v a="$worst_rss" -v b="$CN_RSS" 'BEGIN { print (b > a ? b : a) }')
    idle=$CN_IDLE
    log "   run $run: $CN_LINE"
    note "- cold 100 MiB NAR run $run: $CN_LINE"
    pipe=$(pipeline_mibs "$BIG_HP" "$BIG_SIZE")
    echo "$pipe" >>"$WORK/t4-pipeline"
    log "   run $run: curl | zstd -d | openssl sha256: $pipe MiB/s"
    note "- the same NAR through curl | zstd -d | openssl sha256: $pipe MiB/s"
  done
  result t4_pipeline_mibs "$(sort -g "$WORK/t4-pipeline" | tail -1)"
  result t4_runs "$COLD_NAR_RUNS"
  result t4_all "$(IFS=/; echo "${all[*]}")"
  result t4_mibs "$best"
  result t4_stream_mibs "${best_vals[0]}"
  result t4_tail_ms "${best_vals[1]}"
  result t4_cpu_mibs "${best_vals[2]}"
  result t5_rss_mib "$worst_rss"
  result t5_idle_mib "$idle"
fi

if want 3; then
  # q2 still runs from the last cold run: the NAR is in its store now. One 100 MiB download
  # lasts ~50 ms, too short to measure on a noisy machine: wrk with a few connections for
  # DURATION seconds per round, rounds interleaved, plus one curl for the single-stream rate.
  log "3: warm 100 MiB NAR, wrk -t2 -c$NAR_CONNS -d${DURATION}s x $ROUNDS rounds"
  qurl=$(narinfo_url "$Q2" "$BIG_HP")
  nurl="http://127.0.0.1:$P_SC/nar/$BIG_KEY.nar"
  declare -A T3_URL=([quorate]=$qurl [nginx]=$nurl)
  for t in quorate nginx; do
    read -r code size secs <<<"$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "${T3_URL[$t]}")"
    [[ $code == 200 && $size == "$BIG_SIZE" ]] || die "warm NAR from $t: $code, $size bytes"
  done
  note "" "### 3. warm NAR (wrk -c$NAR_CONNS MiB/s; curl single stream MiB/s)" ""
  for round in $(seq "$ROUNDS"); do
    for t in quorate nginx; do
      out=$WORK/logs/wrk-nar-$t-$round.txt
      timeout $((DURATION + 30)) wrk -t2 -c"$NAR_CONNS" -d"${DURATION}s" "${T3_URL[$t]}" >"$out" 2>&1 ||
        die "wrk failed against $t: $(cat "$out")"
      grep -q 'Non-2xx' "$out" && die "$t answered non-2xx: $(cat "$out")"
      # wrk's units are binary: 1.2GB = 1.2 GiB.
      mibs=$(awk '/^Transfer\/sec:/ { v = $2 + 0; u = $2; sub(/^[0-9.]+/, "", u)
        f = (u == "GB") ? 1024 : (u == "MB") ? 1 : (u == "KB") ? 1 / 1024 : 1 / 1048576
        printf "%.1f", v * f }' "$out")
      echo "$mibs" >>"$WORK/t3-$t"
      read -r code size secs <<<"$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "${T3_URL[$t]}")"
      single=$(calc "$size / 1048576 / $secs")
      echo "$single" >>"$WORK/t3-single-$t"
      note "- round $round $t: $mibs MiB/s with $NAR_CONNS connections; one curl: $single MiB/s"
      log "   round $round $t: $mibs MiB/s ($NAR_CONNS conns), one curl $single MiB/s"
    done
  done
  for t in quorate nginx; do
    result "t3_${t}_mibs" "$(median <"$WORK/t3-$t")"
    result "t3_single_${t}_mibs" "$(median <"$WORK/t3-single-$t")"
  done
fi
stop q2

if (want 4 || want 5) && ((GEN_MIB > 0)); then
  log "4/5: cold generated $GEN_MIB MiB NAR from the zstd upstream"
  gen_size=$GEN_NAR_SIZE
  cold_nar "cold-gen" "$GEN_HASH_PART" "$gen_size"
  result gen_mib "$GEN_MIB"
  result t4g_mibs "$CN_MIBS"
  result t4g_stream_mibs "$CN_STREAM_MIBS"
  result t4g_tail_ms "$CN_TAIL_MS"
  result t4g_cpu_mibs "$CN_CPU_MIBS"
  result t5g_rss_mib "$CN_RSS"
  note "- cold $GEN_MIB MiB NAR: $CN_LINE"
  log "   $CN_LINE"
  pipe=$(pipeline_mibs "$GEN_HASH_PART" "$gen_size")
  result t4g_pipeline_mibs "$pipe"
  note "- the same NAR through curl | zstd -d | openssl sha256: $pipe MiB/s"
  log "   curl | zstd -d | openssl sha256: $pipe MiB/s"
  stop q2
  rm -rf "$WORK/q2-state"
fi

if want 6; then
  log "6b: $NAR_BURST_N concurrent requests for one cold 100 MiB NAR"
  start_quorate q2 "$WORK/q2.toml"
  url=$(narinfo_url "$Q2" "$BIG_HP")
  zst=$(awk '/^URL: / { print $2 }' "$WORK/up/B/$BIG_HP.narinfo")
  before=$(count "$WORK/logs/static-B.log" " GET /$zst ")
  pid=${PIDS[q2]}
  idle=$(rss_kib "$pid" VmRSS)
  echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
  burst=$("$PY" "$NB" burst --url "$url" --n "$NAR_BURST_N" --timeout 300)
  hwm=$(rss_kib "$pid" VmHWM)
  fetches=$(($(count "$WORK/logs/static-B.log" " GET /$zst ") - before))
  full=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["bytes"].get(sys.argv[2], 0))' "$burst" "$BIG_SIZE")
  result t6b_upstream_fetches "$fetches"
  result t6b_full "$full/$NAR_BURST_N"
  result t6b_clients "$NAR_BURST_N"
  result t6b_statuses "$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); print(", ".join(f"{v}x{k}" for k,v in d["statuses"].items()))' "$burst")"
  result t6b_rss_mib "$(calc "($hwm - $idle) / 1024")"
  note "- NAR burst: $burst; upstream NAR fetches: $fetches; peak RSS +$(calc "($hwm - $idle) / 1024") MiB"
  log "   $burst; upstream NAR fetches = $fetches"
  stop q2
  rm -rf "$WORK/q2-state"
fi

# ================================================================ 7: the real Nix client
nix_fetch() { # LABEL URL KEY -> seconds of `nix-store -r` (dies on failure)
  local dir t0 secs
  dir=$(mktemp -d "$WORK/nix/$1.XXXXXX")
  t0=$EPOCHREALTIME
  if ! NIX_CONF_DIR=$FX/etc NIX_USER_CONF_FILES=$FX/etc/nix.conf XDG_CACHE_HOME=$dir/xdg NIX_PATH= \
    nix-store --store "$dir/store" -r "$BIG_PATH" --option substituters "$2" \
    --option trusted-public-keys "$3" --option require-sigs true \
    --option download-attempts 1 >"$dir.log" 2>&1; then
    cat "$dir.log" >&2
    die "nix-store -r via $2 failed"
  fi
  secs=$(calc "$EPOCHREALTIME - $t0")
  NIX_CONF_DIR=$FX/etc NIX_USER_CONF_FILES=$FX/etc/nix.conf XDG_CACHE_HOME=$dir/xdg \
    nix-store --store "$dir/store" --verify-path "$BIG_PATH" >>"$dir.log" 2>&1 ||
    die "nix-store --verify-path after $1 failed"
  rm -rf "$dir"
  echo "$secs"
}
nar_gets() { # NAR requests so far at the static upstreams, as A/B/C
  local b out=()
  for b in A B C; do out+=("$(count "$WORK/logs/static-$b.log" "GET /nar/")"); done
  (IFS=/; echo "${out[*]}")
}
if want 7; then
  log "7: nix-store -r $BIG_PATH, $NIX_ROUNDS rounds"
  colds=() warms=() froms=()
  declare -A directs=([A]="" [B]="" [C]="")
  for round in $(seq "$NIX_ROUNDS"); do
    start_quorate q3 "$WORK/q3.toml" # fresh state: cold
    qkey=$(cat "$WORK/q3-state/keys/bench.pub")
    before=$(nar_gets)
    colds+=("$(nix_fetch cold "$Q3" "$qkey")")
    after=$(nar_gets)
    froms+=("$before -> $after")
    warms+=("$(nix_fetch warm "$Q3" "$qkey")")
    stop q3
    for b in A B C; do
      port_var=P_S$b
      directs[$b]+=" $(nix_fetch "direct-$b" "http://127.0.0.1:${!port_var}" "${PUBKEY[$b]}")"
    done
    log "   round $round: cold ${colds[-1]} s, warm ${warms[-1]} s, direct A/B/C${directs[A]##* }/${directs[B]##* }/${directs[C]##* } s; NAR GETs at A/B/C ${froms[-1]}"
  done
  cold=$(printf '%s\n' "${colds[@]}" | median)
  warm=$(printf '%s\n' "${warms[@]}" | median)
  best=""
  for b in A B C; do
    m=$(tr ' ' '\n' <<<"${directs[$b]}" | grep . | median)
    result "t7_direct_${b}_s" "$m"
    if [[ -z $best ]] || awk -v x="$m" -v y="$best" 'BEGIN { exit !(x < y) }'; then best=$m; fastest=$b; fi
  done
  result t7_cold_s "$cold"
  result t7_warm_s "$warm"
  result t7_direct_s "$best"
  result t7_fastest "$fastest"
  result t7_rounds "$NIX_ROUNDS"
  note "- nix-store -r, $NIX_ROUNDS rounds (medians): quorate cold $cold s, warm $warm s; direct from upstream A (xz) / B (zstd) / C (none): $(for b in A B C; do tr ' ' '\n' <<<"${directs[$b]}" | grep . | median; done | paste -sd/) s; fastest $fastest"
  note "- cold runs: ${colds[*]} s; warm runs: ${warms[*]} s; NAR GETs at static A/B/C before -> after each cold run: ${froms[*]}"
fi

bench_meta_end
"$PY" "$NB" report --results "$R" --out "$RESULTS_FILE" --notes "$NOTES"
log "wrote $RESULTS_FILE"
