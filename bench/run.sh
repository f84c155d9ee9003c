#!/bin/bash
# `make bench`: the benchmark suite of issue #4 (bench/README.md).
#
# Builds dexec with -c opt, installs the peers' Debian packages if missing,
# then runs the workloads in phases, dexec first and the peers right after it
# on the same workload (so a drift of the machine hits both alike):
#   ab  a. no-op throughput (Map, Submit) and b. round-trip latency;
#       f. the same no-op Map/Submit on a durable broker, next to a's
#   c   sleep makespans           d  CPU-bound speedup
#   e   memory per queued job and submit time (dexec 1M, peers 100k)
#   g   broker restart with 1M journaled jobs (dexec only)
#   s   the cost of security: a's no-op Map and b's round trip on a default
#       (tokens + CURVE) broker and on an --insecure one, alternated
#   h   work of every shape (issue 12; bench/shapes_bench.sh): coroutine
#       sleeps, http.get beside aiohttp, ThreadPoolExecutor and the
#       server's own limit, memory per suspended task, chunked map beside
#       ProcessPoolExecutor(2); results in $OUT/shapes.txt
#   m   the cost of /metrics: the same two with a scraper GETting /metrics
#       every 100 ms (bench/scraper.py) and without, alternated
#   micro  the Google Benchmark micro-suite (bench/micro_bench.cc)
# and bench/report.py turns every RESULT line into latest.{md,json,png}.
# Every process started here is stopped by PID (also on exit, via a trap);
# the peer scripts run under bench/run_peer.py, which does the same for
# theirs. Brokers always get --in_memory or a fresh --data_dir under a temp
# dir, never the default ./dexec-data, and run secure (the default) with a
# fresh --auth_dir there too: workers join with that --auth_dir, and
# dexec_bench reads its client.token. Only phase s also runs --insecure.
#
# Knobs (environment; defaults in brackets, BENCH_QUICK=1 ones after the /):
#   BENCH_QUICK=1         small N everywhere, to try the suite on a busy
#                         machine; writes to /tmp/dexec-bench-quick, not
#                         bench/results (quick numbers are not results)
#   BENCH_OUT             output directory [bench/results / /tmp/dexec-bench-quick]
#   ONLY                  phases to run [a b c d e f g s m p h micro]; "a,b" works too
#   HTTP_N SLEEP_N MAP_N  h: sizes of bench/shapes_bench.sh (its defaults;
#                         BENCH_QUICK=1 sets its SHAPES_QUICK)
#   RUNS                  repetitions per measurement [3 / 1]
#   N_NOOP N_LAT          no-op jobs per run; round trips per run [100000 10000 / 10000 1000]
#   N_QUEUE N_RESTART     jobs queued for e; journaled for g [1000000 1000000 / 100000 100000]
#   SEC_ROUNDS            s: rounds of (secure, insecure), each a fresh
#                         cluster per measurement [3 / 2]
#   METRICS_ROUNDS        m: rounds of (no scraper, scraper), the same way [3 / 2]
#   SCRAPE_INTERVAL       m: seconds between scrapes [0.1]
#   BASE_BIN              m: a directory with an older build's dexec-broker,
#                         dexec-worker and dexec_bench (-c opt): m then also
#                         runs them, unscraped ("before"), in each round []
#   PREFETCHES            worker --prefetch values for a, e.g. "default 64"
#                         (other values are reported as dexec_prefetchN) [default]
#   PEERS                 1: run the peers too [1]
#   PEER_ONLY             workload letters for the peers [a,b,c,d,e]
#   PEER_SYSTEMS          peer scripts to run [cf dask celery]
#   PEER_100K             peers that also run 100k no-ops [cf / none]; dask
#                         and celery take ~4 min each at 100k, which the
#                         15-minute budget cannot hold: they run 10k
#   PEER_TIMEOUT          seconds per peer script invocation [600]
#   PEERS_RUNS PEERS_QUIET_MAX_WAIT_S  passed to the peer scripts [RUNS, 15]
#   MICRO_MIN_TIME MICRO_REPS  micro_bench per-benchmark time, repetitions [0.3 3 / 0.05 1]
#   BENCH_PEERS           where the peer scripts are [../shared/bench-peers
#                         beside this checkout, else beside the main worktree
#                         of its repository (for a `git worktree` elsewhere)]
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BAZEL=${BAZEL:-bazel}
PY=/usr/bin/python3  # Debian's python3: the peers' apt packages live there
T_START=$EPOCHREALTIME

if [ "${BENCH_QUICK:-0}" = 1 ]; then
  : "${RUNS:=1}" "${N_NOOP:=10000}" "${N_LAT:=1000}" "${N_QUEUE:=100000}"
  : "${N_RESTART:=100000}" "${PEER_100K:=}" "${SEC_ROUNDS:=2}" "${METRICS_ROUNDS:=2}"
  : "${MICRO_MIN_TIME:=0.05}" "${MICRO_REPS:=1}"
  : "${BENCH_OUT:=/tmp/dexec-bench-quick}"
fi
RUNS=${RUNS:-3}
N_NOOP=${N_NOOP:-100000}
N_LAT=${N_LAT:-10000}
N_QUEUE=${N_QUEUE:-1000000}
N_RESTART=${N_RESTART:-1000000}
SEC_ROUNDS=${SEC_ROUNDS:-3}
METRICS_ROUNDS=${METRICS_ROUNDS:-3}
SCRAPE_INTERVAL=${SCRAPE_INTERVAL:-0.1}
PREFETCHES=${PREFETCHES:-default}
PEERS=${PEERS:-1}
PEER_ONLY=${PEER_ONLY:-a,b,c,d,e}
PEER_SYSTEMS=${PEER_SYSTEMS:-cf dask celery}
PEER_100K=${PEER_100K-cf}
PEER_TIMEOUT=${PEER_TIMEOUT:-600}
MICRO_MIN_TIME=${MICRO_MIN_TIME:-0.3}
MICRO_REPS=${MICRO_REPS:-3}
# Prints the peer scripts' directory, absolute: $BENCH_PEERS if set, else
# the first of ../shared/bench-peers beside this checkout and beside the
# main worktree (a worktree added under another directory has no
# ../shared of its own). Fails naming BENCH_PEERS if there is none.
bench_peers_dir() {
  local tried=() d common
  if [ -n "${BENCH_PEERS:-}" ]; then
    tried=("$BENCH_PEERS")
  else
    tried=("$ROOT/../shared/bench-peers")
    if common=$(git -C "$ROOT" rev-parse --path-format=absolute \
      --git-common-dir 2>/dev/null); then
      tried+=("$(dirname "$common")/../shared/bench-peers")
    fi
  fi
  for d in "${tried[@]}"; do
    if [ -d "$d" ]; then
      (cd "$d" && pwd)
      return 0
    fi
  done
  echo "bench: no peer scripts at ${tried[*]}; set BENCH_PEERS to their" \
    "directory, or PEERS=0 to run dexec alone" >&2
  return 1
}
# Only the peers need them.
if [ "$PEERS" = 1 ]; then BENCH_PEERS=$(bench_peers_dir); fi
ONLY=" $(tr ',' ' ' <<<"${ONLY:-a b c d e f g s m p h micro}") "
export PEERS_RUNS=${PEERS_RUNS:-$RUNS}
export PEERS_QUIET_MAX_WAIT_S=${PEERS_QUIET_MAX_WAIT_S:-15}
OUT=${BENCH_OUT:-$ROOT/bench/results}
mkdir -p "$OUT"

WORK=$(mktemp -d /tmp/dexec-bench.XXXXXX)
PIDS=()      # brokers and workers of the current cluster
PEER_PID=""  # the run_peer.py running now
FAILED=()

log() { echo "# $*" >&2; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

stop_all() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
    # Give each process 5 s to exit on SIGTERM, then SIGKILL it.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
  rm -rf "$WORK"/data.* "$WORK"/auth.*
}
cleanup() {
  if [ -n "$PEER_PID" ]; then
    # run_peer.py forwards SIGTERM to the script, whose finally-blocks stop
    # its processes (celery's take up to ~10 s each), then stops leftovers.
    kill "$PEER_PID" 2>/dev/null || true
    for _ in $(seq 600); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PEER_PID" 2>/dev/null || true
  fi
  stop_all
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

want() { [[ "$ONLY" == *" $1 "* ]]; }

# --- packages: matplotlib for the chart; the peers' systems if PEERS=1.
need=()
$PY -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
if [ "$PEERS" = 1 ]; then
  $PY -c 'import dask, distributed' 2>/dev/null || need+=(python3-distributed python3-dask)
  $PY -c 'import celery' 2>/dev/null || need+=(python3-celery)
  $PY -c 'import redis' 2>/dev/null || need+=(python3-redis)
  $PY -c 'import psutil' 2>/dev/null || need+=(python3-psutil)
  command -v redis-server >/dev/null || need+=(redis-server)
fi
if want h; then
  # Phase h's HTTP server and the seeds' crawler (bench/shapes_bench.sh).
  [ -x /usr/sbin/nginx ] || need+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ] || need+=(libnginx-mod-http-echo)
  $PY -c 'import aiohttp' 2>/dev/null || need+=(python3-aiohttp)
fi
if ((${#need[@]})); then
  log "installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${need[@]}" >/dev/null
fi

# --- build (opt) and copy the binaries, so a concurrent fastbuild that
# rewrites bazel-bin cannot change what we measure halfway.
log "building -c opt"
T_BUILD=$EPOCHREALTIME
timeout 1800 "$BAZEL" build -c opt \
  //broker:dexec-broker //worker:dexec-worker //bench:dexec_bench \
  //bench:micro_bench //bench:shapes_bench //bench:shapes_http_limit
# Not the bazel-bin symlink: it follows whichever build ran last, and other
# builds (fastbuild, tsan) run on this machine at the same time.
OPT_BIN=$("$BAZEL" info -c opt bazel-bin)
BUILD_S=$(elapsed "$T_BUILD")
mkdir -p "$WORK/bin"
cp "$OPT_BIN/broker/dexec-broker" "$OPT_BIN/worker/dexec-worker" \
  "$OPT_BIN/bench/dexec_bench" "$OPT_BIN/bench/micro_bench" \
  "$OPT_BIN/bench/shapes_bench" "$OPT_BIN/bench/shapes_http_limit" "$WORK/bin/"
BIN=$WORK/bin
if [ -n "${BASE_BIN:-}" ]; then
  mkdir -p "$WORK/bin-base"
  cp "$BASE_BIN/dexec-broker" "$BASE_BIN/dexec-worker" "$BASE_BIN/dexec_bench" \
    "$WORK/bin-base/"
fi

: >"$OUT/dexec.txt"
: >"$OUT/peers.txt"
: >"$OUT/peers.log"
rm -f "$OUT/micro.json" "$OUT/python.txt" "$OUT/python.md"
{
  echo "# host nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')\" kernel=$(uname -r) date=$(date -u +%FT%TZ)"
  echo "# dexec commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- broker worker client common protos bench/dexec_bench.cc bench/micro_bench.cc || echo '+dirty')"
  echo "# config quick=${BENCH_QUICK:-0} runs=$RUNS n_noop=$N_NOOP n_lat=$N_LAT n_queue=$N_QUEUE n_restart=$N_RESTART sec_rounds=$SEC_ROUNDS metrics_rounds=$METRICS_ROUNDS scrape_interval=$SCRAPE_INTERVAL prefetches=\"$PREFETCHES\" peers=$PEERS peer_only=$PEER_ONLY peer_systems=\"$PEER_SYSTEMS\" peer_100k=\"$PEER_100K\" peers_runs=$PEERS_RUNS micro_min_time=$MICRO_MIN_TIME micro_reps=$MICRO_REPS"
  echo "# phase name=build seconds=$BUILD_S"
} >>"$OUT/dexec.txt"

PHASE=""
PHASE_T0=""
phase() { PHASE=$1; PHASE_T0=$EPOCHREALTIME; log "===== phase $1"; }
phase_end() { echo "# phase name=$PHASE seconds=$(elapsed "$PHASE_T0")" >>"$OUT/dexec.txt"; }

GRPC=""
HTTP=""
WORKERS_EP=""
BROKER_PID=""
BROKER_AUTH=""  # the current broker's --auth_dir; empty if --insecure
DATA_N=0

# start_broker [memory|durable] [secure|insecure]: a fresh broker on free
# ports, in memory or on a fresh journal under $WORK, with a fresh
# --auth_dir under $WORK (or --insecure); waits for its "listening" line.
start_broker() {
  local store=${1:-memory} security=${2:-secure} flags=()
  DATA_N=$((DATA_N + 1))
  if [ "$store" = durable ]; then
    flags+=(--data_dir="$WORK/data.$DATA_N")
  else
    flags+=(--in_memory)
  fi
  if [ "$security" = insecure ]; then
    BROKER_AUTH=""
    flags+=(--insecure)
  else
    BROKER_AUTH=$WORK/auth.$DATA_N
    flags+=(--auth_dir="$BROKER_AUTH")
  fi
  : >"$WORK/broker.out"
  "$BIN/dexec-broker" --listen=127.0.0.1:0 --http_listen=127.0.0.1:0 --worker_listen='tcp://127.0.0.1:*' \
    "${flags[@]}" >"$WORK/broker.out" 2>>"$WORK/broker.err" &
  BROKER_PID=$!
  PIDS+=("$BROKER_PID")
  local line=""
  for _ in $(seq 300); do
    line=$(grep -m1 '^dexec-broker listening' "$WORK/broker.out" || true)
    [ -n "$line" ] && break
    kill -0 "$BROKER_PID" 2>/dev/null || { log "broker exited"; tail "$WORK/broker.err" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$line" ] || { log "broker did not print its listening line in 30 s"; exit 1; }
  GRPC=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' <<<"$line")
  HTTP=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' <<<"$line")
  WORKERS_EP=$(sed -n 's/.*workers=\([^ ]*\).*/\1/p' <<<"$line")
  log "broker pid=$BROKER_PID store=$store security=$security grpc=$GRPC workers=$WORKERS_EP"
}

# The current broker's credentials, for dexec-worker and dexec_bench.
worker_auth() { if [ -n "$BROKER_AUTH" ]; then echo "--auth_dir=$BROKER_AUTH"; else echo --insecure; fi; }
client_auth() { [ -z "$BROKER_AUTH" ] || echo "--token_file=$BROKER_AUTH/client.token"; }

# start_workers COUNT THREADS [PREFETCH|default]; waits until all are listed.
start_workers() {
  local count=$1 threads=$2 prefetch=${3:-default} i
  local flags=(--broker="$WORKERS_EP" --threads="$threads" "$(worker_auth)")
  [ "$prefetch" != default ] && flags+=(--prefetch="$prefetch")
  for i in $(seq "$count"); do
    "$BIN/dexec-worker" "${flags[@]}" 2>>"$WORK/worker.err" >/dev/null &
    PIDS+=("$!")
  done
  timeout 60 "$BIN/dexec_bench" --broker="$GRPC" $(client_auth) \
    --workload=wait_workers --n="$count"
}

# drive ARGS...: dexec_bench against the current broker, after waiting
# (bounded) for a quiet machine. Its RESULT lines get the foreign_cores of
# the measurement and go to dexec.txt. A failing workload is recorded and
# the suite goes on; run.sh exits 1 at the end.
drive() {
  log "dexec_bench $*"
  "$PY" bench/noise.py mark --root $$ --state "$WORK/noise.json"
  local rc=0
  timeout 900 "$BIN/dexec_bench" --broker="$GRPC" $(client_auth) \
    --runs="${DRIVE_RUNS:-$RUNS}" "$@" \
    >"$WORK/drive.out" 2>"$WORK/drive.err" || rc=$?
  local fc
  fc=$("$PY" bench/noise.py since --root $$ --state "$WORK/noise.json")
  sed "/^RESULT /s/\$/ foreign_cores=$fc/" "$WORK/drive.out" | tee -a "$OUT/dexec.txt"
  if [ "$rc" != 0 ]; then
    local why
    why=$(tail -1 "$WORK/drive.err" | tr '\n' ' ')
    log "FAILED (exit $rc): dexec_bench $*: $why"
    echo "# FAILED phase=$PHASE rc=$rc dexec_bench $*: $why" >>"$OUT/dexec.txt"
    FAILED+=("$PHASE: $*")
  fi
}

# peer SCRIPT LETTERS [ARGS...]: one peer script for the given workload
# letters (those not excluded by ONLY / PEER_ONLY), under run_peer.py.
peer() {
  local script=$1 letters=$2 only="" l sys
  shift 2
  [ "$PEERS" = 1 ] || return 0
  sys=${script#bench_}
  sys=${sys%.py}
  [[ " $PEER_SYSTEMS " == *" $sys "* ]] || return 0
  for l in $(tr ',' ' ' <<<"$letters"); do
    want "$l" && [[ ",$PEER_ONLY," == *",$l,"* ]] && only+="${only:+,}$l"
  done
  [ -n "$only" ] || return 0
  local args=(--only "$only" "$@")
  if [[ "$only" == *a* ]]; then
    local big=0
    [[ " $PEER_100K " == *" $sys "* ]] && big=1
    case $sys in
      cf | dask) [ "$big" = 1 ] || args+=(--skip-100k) ;;
      celery) [ "$big" = 1 ] && args+=(--try-100k) ;;
    esac
  fi
  log "peer $script ${args[*]}"
  local plog="$WORK/peer.log"
  : >"$plog"
  local t0=$EPOCHREALTIME
  "$PY" bench/run_peer.py --dir "$BENCH_PEERS" --log "$plog" \
    --timeout "$PEER_TIMEOUT" "$script" "${args[@]}" &
  PEER_PID=$!
  local rc=0
  wait "$PEER_PID" || rc=$?
  PEER_PID=""
  echo "# peer_time script=$script only=$only seconds=$(elapsed "$t0")" >>"$OUT/dexec.txt"
  cat "$plog" >>"$OUT/peers.log"
  grep '^RESULT' "$plog" | sed "s/\$/ source=$script phase=$PHASE/" \
    >>"$OUT/peers.txt" || true
  if [ "$rc" != 0 ]; then
    log "FAILED (exit $rc): peer $script ${args[*]}"
    echo "# FAILED phase=$PHASE rc=$rc peer $script ${args[*]}" >>"$OUT/dexec.txt"
    FAILED+=("$PHASE: peer $script ${args[*]}")
  fi
}

# ---- a, b (and f): no-op throughput, latency; durable next to in-memory.
if want a || want b || want f; then
  phase ab
  # No-op workloads on 2 workers x 1 thread (one per core: more pool
  # threads than cores only add context switches to no-ops), in memory, for
  # each prefetch setting: the worker's default is system=dexec, others
  # dexec_prefetchN.
  # f: the default again on a durable broker, right after.
  for pf in $PREFETCHES; do
    label=dexec
    [ "$pf" != default ] && label=dexec_prefetch$pf
    for wl in noop_map noop_submit; do
      want a || continue
      start_broker memory
      start_workers 2 1 "$pf"
      drive --workload="$wl" --n="$N_NOOP" --label="$label" \
        --extra="workers=2x1 prefetch=$pf store=memory"
      stop_all
      if want f && [ "$pf" = default ]; then
        start_broker durable
        start_workers 2 1 "$pf"
        drive --workload="$wl" --n="$N_NOOP" --label=dexec_durable \
          --extra="workers=2x1 prefetch=$pf store=durable"
        stop_all
      fi
    done
  done
  if ! want a && want f; then
    for wl in noop_map noop_submit; do
      for store in memory durable; do
        label=dexec
        [ "$store" = durable ] && label=dexec_durable
        start_broker "$store"
        start_workers 2 1
        drive --workload="$wl" --n="$N_NOOP" --label="$label" \
          --extra="workers=2x1 prefetch=default store=$store"
        stop_all
      done
    done
  fi
  if want b; then
    # One job at a time: prefetch cannot matter; run it once.
    start_broker memory
    start_workers 2 1
    drive --workload=latency --n="$N_LAT" \
      --extra="workers=2x1 prefetch=default store=memory"
    stop_all
  fi
  peer bench_cf.py a,b
  peer bench_dask.py a,b
  peer bench_celery.py a,b
  phase_end
fi

# ---- c: sleep makespans (ideal 1.0 s).
if want c; then
  phase c
  start_broker memory; start_workers 2 5
  drive --workload=sleep --n=10 --ms=1000 --extra="workers=2x5 ideal=1.0 store=memory"
  stop_all
  start_broker memory; start_workers 2 50
  drive --workload=sleep --n=1000 --ms=100 --extra="workers=2x50 ideal=1.0 store=memory"
  stop_all
  peer bench_cf.py c
  peer bench_dask.py c
  peer bench_celery.py c
  phase_end
fi

# ---- d: CPU-bound speedup on 2 x 1 thread.
if want d; then
  phase d
  start_broker memory; start_workers 2 1
  drive --workload=cpu --extra="workers=2x1 store=memory"
  stop_all
  if [ "$PEERS" = 1 ] && [[ ",$PEER_ONLY," == *",d,"* ]]; then
    # The peers' spin(n) is calibrated to ~0.25 s on this machine, now (as
    # run_all.sh does); the cache in /tmp may be from another day.
    (cd "$BENCH_PEERS" && "$PY" -c 'import common; common.wait_quiet(); print("# spin n =", common.calibrate_spin(force=True))')
  fi
  peer bench_cf.py d
  peer bench_dask.py d
  peer bench_celery.py d
  phase_end
fi

# ---- e: memory per queued job and submit time, no worker; a fresh
# in-memory broker per run, started by dexec_bench.
if want e; then
  phase e
  BROKER_AUTH=""  # dexec_bench starts these brokers and reads their tokens
  drive --workload=queue_memory --n="$N_QUEUE" --broker_bin="$BIN/dexec-broker" \
    --auth_dir="$WORK/auth.queue" --broker_log="$WORK/broker.err" \
    --timeout_s=300 --extra="workers=0 store=memory"
  rm -rf "$WORK/auth.queue"
  peer bench_dask.py e
  peer bench_celery.py e
  phase_end
fi

# ---- g: restart with N_RESTART journaled jobs (dexec_bench starts and
# stops the brokers: it needs their exact start time).
if want g; then
  phase g
  mkdir -p "$WORK/data.restart"
  BROKER_AUTH=""  # as in e
  drive --workload=restart --n="$N_RESTART" --broker_bin="$BIN/dexec-broker" \
    --data_dir="$WORK/data.restart" --auth_dir="$WORK/auth.restart" \
    --broker_log="$WORK/broker.err" --timeout_s=600 \
    --extra="workers=0 store=durable"
  rm -rf "$WORK/data.restart" "$WORK/auth.restart"
  phase_end
fi

# ---- s: what security costs. The no-op Map of a and the round trip of b,
# each on a default broker (tokens on gRPC, CURVE on the worker port) and
# on an --insecure one, alternated secure, insecure, secure, ... with a
# fresh cluster per measurement, so a drift of the machine hits both;
# report.py takes the median of the SEC_ROUNDS runs of each.
if want s; then
  phase s
  DRIVE_RUNS=1
  for round in $(seq "$SEC_ROUNDS"); do
    for wl in noop_map latency; do
      n=$N_NOOP
      [ "$wl" = latency ] && n=$N_LAT
      for security in secure insecure; do
        start_broker memory "$security"
        start_workers 2 1
        drive --workload="$wl" --n="$n" --label="dexec_$security" \
          --extra="workers=2x1 prefetch=default store=memory security=$security round=$round"
        stop_all
      done
    done
  done
  unset DRIVE_RUNS
  phase_end
fi

# ---- m: what /metrics costs the hot path (issue 13). The no-op Map of a
# and the round trip of b, each with bench/scraper.py GETting /metrics every
# SCRAPE_INTERVAL s for the whole measurement and without any scraper,
# alternated (off, scraped, off, ...) with a fresh cluster per measurement;
# report.py gives the ratio scraped / off of the medians.
if want m; then
  phase m
  DRIVE_RUNS=1
  for round in $(seq "$METRICS_ROUNDS"); do
    for wl in noop_map latency; do
      n=$N_NOOP
      [ "$wl" = latency ] && n=$N_LAT
      variants="off scraped"
      [ -n "${BASE_BIN:-}" ] && variants="before off scraped"
      for scrape in $variants; do
        BIN=$WORK/bin
        [ "$scrape" = before ] && BIN=$WORK/bin-base
        start_broker memory
        start_workers 2 1
        SCRAPER_PID=""
        if [ "$scrape" = scraped ]; then
          rm -f "$WORK/scraper.ready"
          "$PY" bench/scraper.py --address="$HTTP" \
            --token_file="$BROKER_AUTH/client.token" \
            --interval="$SCRAPE_INTERVAL" --out="$OUT/dexec.txt" \
            --ready="$WORK/scraper.ready" &
          SCRAPER_PID=$!
          PIDS+=("$SCRAPER_PID")
          # Scraping before the clock starts: Python's start is not measured.
          for _ in $(seq 100); do
            [ -e "$WORK/scraper.ready" ] && break
            sleep 0.1
          done
        fi
        drive --workload="$wl" --n="$n" --label="dexec_metrics_$scrape" \
          --extra="workers=2x1 prefetch=default store=memory metrics=$scrape round=$round"
        if [ -n "$SCRAPER_PID" ]; then
          # SIGTERM: it appends its "# scraper" line to dexec.txt.
          kill "$SCRAPER_PID" 2>/dev/null || true
          wait "$SCRAPER_PID" 2>/dev/null || true
        fi
        stop_all
      done
    done
  done
  BIN=$WORK/bin
  unset DRIVE_RUNS
  phase_end
fi

# ---- p: the Python package (issue 11's goals) beside ProcessPoolExecutor,
# on the -c opt binaries; bench/python_bench.py starts and stops its own
# broker and workers. Its RESULT lines go to python.txt (report.py's
# "p." section, the goals table), its own table to python.md.
if want p; then
  phase p
  ./python/gen_protos.sh >>"$WORK/python_bench.err" 2>&1
  pyargs=()
  [ "${BENCH_QUICK:-0}" = 1 ] && pyargs+=(--quick)
  echo "# python_bench uptime=\"$(uptime)\"" >"$OUT/python.txt"
  rc=0
  DEXEC_BIN_DIR="$BIN" /usr/bin/python3 bench/python_bench.py "${pyargs[@]}" \
    >"$WORK/python_bench.out" 2>>"$WORK/python_bench.err" || rc=$?
  grep '^RESULT' "$WORK/python_bench.out" >>"$OUT/python.txt" || true
  sed -n '/^| system/,$p' "$WORK/python_bench.out" >"$OUT/python.md"
  if [ "$rc" != 0 ]; then
    echo "# FAILED phase=p rc=$rc python_bench.py" >>"$OUT/dexec.txt"
    FAILED+=("p: python_bench.py")
  fi
  phase_end
fi

# ---- h: work of every shape (issue 12), by bench/shapes_bench.sh on the
# copied -c opt binaries; it starts and stops its own broker, worker and
# nginx. It appends its run to $OUT/shapes.txt (the file keeps its history);
# report.py reads the last run.
if want h; then
  phase h
  rc=0
  SHAPES_BIN="$BIN" OUT="$OUT/shapes.txt" ROUNDS=$RUNS \
    SHAPES_QUICK=${BENCH_QUICK:-0} timeout 900 bench/shapes_bench.sh >"$WORK/shapes.out" 2>"$WORK/shapes.err" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "# FAILED phase=h rc=$rc shapes_bench.sh: $(tail -1 "$WORK/shapes.err")" >>"$OUT/dexec.txt"
    FAILED+=("h: shapes_bench.sh")
  fi
  phase_end
fi

# ---- micro-suite.
if want micro; then
  phase micro
  log "micro_bench (min_time $MICRO_MIN_TIME s, $MICRO_REPS repetitions)"
  "$PY" bench/noise.py mark --root $$ --state "$WORK/noise.json"
  rc=0
  DEXEC_LOG_LEVEL=warning "$BIN/micro_bench" --benchmark_min_time="$MICRO_MIN_TIME" \
    --benchmark_repetitions="$MICRO_REPS" \
    --benchmark_display_aggregates_only=true \
    --benchmark_out="$OUT/micro.json" --benchmark_out_format=json \
    2>>"$WORK/micro.err" || rc=$?
  echo "# micro foreign_cores=$("$PY" bench/noise.py since --root $$ --state "$WORK/noise.json")" >>"$OUT/dexec.txt"
  if [ "$rc" != 0 ]; then
    echo "# FAILED phase=micro rc=$rc micro_bench" >>"$OUT/dexec.txt"
    FAILED+=("micro: micro_bench")
  fi
  phase_end
fi

echo "# phase name=total seconds=$(elapsed "$T_START")" >>"$OUT/dexec.txt"
"$PY" bench/report.py "$OUT/dexec.txt" "$OUT/peers.txt" \
  --micro "$OUT/micro.json" --shapes "$OUT/shapes.txt" \
  --python "$OUT/python.txt" \
  --json "$OUT/latest.json" --md "$OUT/latest.md" --png "$OUT/latest.png"
log "wrote $OUT/latest.md, latest.json, latest.png in $(elapsed "$T_START") s"
if ((${#FAILED[@]})); then
  log "FAILED workloads (see $OUT/dexec.txt):"
  printf '#   %s\n' "${FAILED[@]}" >&2
  exit 1
fi
