#!/bin/bash
# `make bench`: builds dexec with -c opt, runs every dexec workload on a fresh
# loopback cluster (broker + workers started here, stopped by PID), then, with
# PEERS=1, the peers' scripts; bench/report.py turns all RESULT lines into
# bench/results/latest.{json,md}. See bench/README.md.
#
# Knobs (environment):
#   RUNS=3          repetitions per measurement
#   N_NOOP=100000   no-op jobs per noop_map / noop_submit run
#   N_LAT=10000     sequential round trips per latency run
#   N_QUEUE=1000000 jobs queued per queue_memory run
#   PREFETCHES="default 64"  worker --prefetch values for the no-op workloads
#   PEERS=0         1: also run the peer benchmarks (installs Debian packages)
#   PEER_ONLY=a,b   --only for the peers' scripts
#   BENCH_PEERS=../shared/bench-peers
#   ONLY="noop_map noop_submit latency sleep cpu queue_memory"
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BAZEL=${BAZEL:-bazel}
RUNS=${RUNS:-3}
N_NOOP=${N_NOOP:-100000}
N_LAT=${N_LAT:-10000}
N_QUEUE=${N_QUEUE:-1000000}
PREFETCHES=${PREFETCHES:-default 64}
PEERS=${PEERS:-0}
PEER_ONLY=${PEER_ONLY:-a,b}
BENCH_PEERS=${BENCH_PEERS:-../shared/bench-peers}
ONLY=${ONLY:-noop_map noop_submit latency sleep cpu queue_memory}
OUT=$ROOT/bench/results
mkdir -p "$OUT"

WORK=$(mktemp -d /tmp/dexec-bench.XXXXXX)
PIDS=()

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
}
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "# $*" >&2; }

# --- build (opt) and copy the binaries, so a concurrent fastbuild that
# rewrites bazel-bin cannot change what we measure halfway.
log "building -c opt"
timeout 1800 "$BAZEL" build -c opt //broker:dexec-broker //worker:dexec-worker \
  //bench:dexec_bench
mkdir -p "$WORK/bin"
cp bazel-bin/broker/dexec-broker bazel-bin/worker/dexec-worker \
  bazel-bin/bench/dexec_bench "$WORK/bin/"
BIN=$WORK/bin

GRPC=""
WORKERS_EP=""
BROKER_PID=""

# Starts a fresh broker on free ports; waits for its "listening" line.
start_broker() {
  : >"$WORK/broker.out"
  "$BIN/dexec-broker" --listen=127.0.0.1:0 --worker_listen='tcp://127.0.0.1:*' \
    >"$WORK/broker.out" 2>>"$WORK/broker.err" &
  BROKER_PID=$!
  PIDS+=("$BROKER_PID")
  local line=""
  for _ in $(seq 100); do
    line=$(grep -m1 '^dexec-broker listening' "$WORK/broker.out" || true)
    [ -n "$line" ] && break
    kill -0 "$BROKER_PID" 2>/dev/null || { log "broker exited"; tail "$WORK/broker.err" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$line" ] || { log "broker did not print its listening line in 10 s"; exit 1; }
  GRPC=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' <<<"$line")
  WORKERS_EP=$(sed -n 's/.*workers=\([^ ]*\).*/\1/p' <<<"$line")
  log "broker pid=$BROKER_PID grpc=$GRPC workers=$WORKERS_EP"
}

# start_workers COUNT THREADS [PREFETCH|default]; waits until all are listed.
start_workers() {
  local count=$1 threads=$2 prefetch=${3:-default} i
  local flags=(--broker="$WORKERS_EP" --threads="$threads")
  [ "$prefetch" != default ] && flags+=(--prefetch="$prefetch")
  for i in $(seq "$count"); do
    "$BIN/dexec-worker" "${flags[@]}" 2>>"$WORK/worker.err" >/dev/null &
    PIDS+=("$!")
  done
  timeout 60 "$BIN/dexec_bench" --broker="$GRPC" --workload=wait_workers \
    --n="$count"
}

# drive ARGS...: the driver against the current broker; RESULT lines are
# appended to dexec.txt.
drive() {
  log "dexec_bench $*"
  timeout 900 "$BIN/dexec_bench" --broker="$GRPC" --runs="$RUNS" "$@" \
    | tee -a "$OUT/dexec.txt"
}

want() { [[ " $ONLY " == *" $1 "* ]]; }

: >"$OUT/dexec.txt"
{
  echo "# host nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')\" kernel=$(uname -r) date=$(date -u +%FT%TZ)"
  echo "# dexec commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- broker worker client common protos || echo '+dirty')"
} >>"$OUT/dexec.txt"

# No-op workloads: 2 workers x 2 threads, for each prefetch setting. The
# default prefetch (max(8, threads) = 8 here) is reported as system=dexec;
# others as dexec_prefetchN.
for pf in $PREFETCHES; do
  label=dexec
  [ "$pf" != default ] && label=dexec_prefetch$pf
  for wl in noop_map noop_submit latency; do
    want "$wl" || continue
    # latency is one job at a time: prefetch cannot matter; run it once.
    [ "$wl" = latency ] && [ "$pf" != default ] && continue
    n=$N_NOOP
    [ "$wl" = latency ] && n=$N_LAT
    start_broker
    start_workers 2 2 "$pf"
    drive --workload="$wl" --n="$n" --label="$label" \
      --extra="workers=2x2 prefetch=$pf"
    stop_all
  done
done

if want sleep; then
  start_broker; start_workers 2 5
  drive --workload=sleep --n=10 --ms=1000 --extra="workers=2x5 ideal=1.0"
  stop_all
  start_broker; start_workers 2 50
  drive --workload=sleep --n=1000 --ms=100 --extra="workers=2x50 ideal=1.0"
  stop_all
fi

if want cpu; then
  start_broker; start_workers 2 1
  drive --workload=cpu --extra="workers=2x1"
  stop_all
fi

if want queue_memory; then
  start_broker
  drive --workload=queue_memory --n="$N_QUEUE" --broker_pid="$BROKER_PID" \
    --extra="workers=0"
  stop_all
fi

# --- peers (optional; about 2-10 min per script with --only a,b)
: >"$OUT/peers.txt"
if [ "$PEERS" = 1 ]; then
  PY=/usr/bin/python3
  if ! $PY -c 'import distributed, dask, celery, redis' 2>/dev/null \
      || ! command -v redis-server >/dev/null; then
    log "installing the peers' Debian packages"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-distributed \
      python3-dask python3-celery python3-redis redis-server
  fi
  for script in bench_cf.py bench_dask.py; do
    log "peer $script --only $PEER_ONLY --skip-100k"
    (cd "$BENCH_PEERS" && timeout 1200 $PY "$script" --only "$PEER_ONLY" \
        --skip-100k) 2>&1 | tee "$WORK/$script.log" || true
    grep '^RESULT' "$WORK/$script.log" | sed "s/\$/ source=$script/" \
      >>"$OUT/peers.txt" || true
  done
fi

python3 "$ROOT/bench/report.py" "$OUT/dexec.txt" "$OUT/peers.txt" \
  --json "$OUT/latest.json" --md "$OUT/latest.md"
log "wrote $OUT/latest.md"
