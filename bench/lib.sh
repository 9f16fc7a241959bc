# shellcheck shell=bash
# shellcheck disable=SC2034  # BIN_ORIGIN, NOTES, R: read by the sourcing script
# bench/lib.sh — what bench/run.sh and bench/fleet.sh share (sourced, not run): the quorate
# binary to measure, the work dir and the processes started in it, stopped on exit whatever
# happens (Ctrl-C included), and the results file.
#
# The sourcing script defines log and die, sets ROOT (and APT_PKG: command → Debian
# package), and calls, in order:
#   bench_require CMD...         the commands it runs, installed when missing (as root)
#   bench_binary                 QUORATE_BIN (or a release build), BIN_ORIGIN describing it
#   bench_workdir NAME SUBDIR... WORK, with the subdirectories; traps set
# then uses start_bg / fg_run / stop / wait_http / result / res. A script that starts other
# daemons (not our children) defines bench_cleanup_extra to stop them.

bench_require() { # CMD...: each on PATH; as root, installs the Debian packages the
  # script's APT_PKG map names for the missing ones; otherwise says which to install.
  local c missing=() pkgs=()
  for c in "$@"; do command -v "$c" >/dev/null || missing+=("$c"); done
  ((${#missing[@]})) || return 0
  for c in "${missing[@]}"; do [[ -n ${APT_PKG[$c]:-} ]] && pkgs+=("${APT_PKG[$c]}"); done
  if [[ $(id -u) == 0 && ${#pkgs[@]} -gt 0 ]] && command -v apt-get >/dev/null; then
    log "installing ${pkgs[*]} (missing: ${missing[*]})"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
  for c in "${missing[@]}"; do
    command -v "$c" >/dev/null || die "'$c' not found: install Debian package ${APT_PKG[$c]:-for $c}"
  done
}

bench_binary() {
  BIN_ORIGIN="QUORATE_BIN=${QUORATE_BIN:-}${QUORATE_LABEL:+ ($QUORATE_LABEL)}, built $(date -u -r "${QUORATE_BIN:-/}" '+%Y-%m-%d %H:%M UTC' 2>/dev/null)"
  if [[ -z ${QUORATE_BIN:-} ]]; then
    command -v cargo >/dev/null || die "cargo not found (or set QUORATE_BIN)"
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    QUORATE_BIN=$ROOT/target/release/quorate
    BIN_ORIGIN="built by this run from git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' + uncommitted changes')"
  fi
  [[ -x $QUORATE_BIN ]] || die "quorate binary $QUORATE_BIN not found"
}

declare -A PIDS=()

stop() { # NAME: TERM, then KILL after 5 s; only the pid we started
  local pid=${PIDS[$1]:-}
  [[ -n $pid ]] || return 0
  unset "PIDS[$1]"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for name in "${!PIDS[@]}"; do stop "$name"; done
  if declare -F bench_cleanup_extra >/dev/null; then bench_cleanup_extra; fi
  if [[ ${KEEP:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}

bench_workdir() { # NAME SUBDIR...: a fresh work dir under TMPDIR, cleaned up on exit
  local name=$1; shift
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
  local d
  for d in "$@"; do mkdir -p "$WORK/$d"; done
  R=$WORK/results.env
  NOTES=$WORK/notes.md
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

start_bg() { # NAME CMD...: output in $WORK/logs/NAME.out
  local name=$1; shift
  "$@" >"$WORK/logs/$name.out" 2>&1 &
  PIDS[$name]=$!
}

fg_run() { # CMD...: run in the background and waited for, so that Ctrl-C reaches the INT trap
  # even when the command catches SIGINT itself (wrk does: a foreground wrk would swallow it);
  # tracked in PIDS meanwhile, so that cleanup stops it too.
  local pid rc=0
  "$@" &
  pid=$!
  PIDS[fg]=$pid
  wait "$pid" || rc=$?
  unset "PIDS[fg]"
  return "$rc"
}

wait_http() { # URL [seconds]
  local deadline=$((SECONDS + ${2:-20}))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

result() { echo "$1=$2" >>"$R"; }
res() { awk -F= -v k="$1" '$1 == k { v = substr($0, length(k) + 2) } END { print (v == "" ? "n/a" : v) }' "$R"; }

note() { printf '%s\n' "$@" >>"$NOTES"; }
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }

# CPU time split as busy, idle; and the hypervisor's steal (time our vCPUs were given to
# someone else: noisy neighbours on a VM) against the total.
bench_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }
bench_steal() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t }' /proc/stat; }

bench_meta_start() { # the machine and the quorate measured, into $R (3 s to sample how busy)
  local cpu b0 i0 b1 i1 busy_pct
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  read -r b0 i0 <<<"$(bench_busy)"; sleep 3; read -r b1 i1 <<<"$(bench_busy)"
  busy_pct=$(calc "100 * ($b1 - $b0) / ($b1 - $b0 + $i1 - $i0)")
  read -r STEAL0 TOTAL0 <<<"$(bench_steal)"
  log "machine busy before the run: $busy_pct % of all CPUs (3 s sample)"
  {
    echo "meta_date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "meta_machine=$(nproc) CPUs ($cpu), $(awk '/MemTotal/ { printf "%.1f GiB", $2/1048576 }' /proc/meminfo) RAM, Linux $(uname -r)"
    echo "meta_load average at start=$(cut -d' ' -f1-3 /proc/loadavg); CPUs busy in the 3 s before: $busy_pct %"
    echo "meta_quorate=$("$QUORATE_BIN" --version 2>&1 | head -1), $BIN_ORIGIN"
  } >>"$R"
}

bench_meta_end() { # the load at the end and the steal during the run, into $R
  local st1 tot1
  read -r st1 tot1 <<<"$(bench_steal)"
  echo "meta_load average at end=$(cut -d' ' -f1-3 /proc/loadavg); CPU steal during the run: $(calc "100 * ($st1 - $STEAL0) / ($tot1 - $TOTAL0)") %" >>"$R"
}
