#!/usr/bin/env bash
# Issue 12's goals, measured side by side with the seeds' own programs, on
# one worker with 2 threads (a separate script: bench/run.sh is the main
# suite):
#   a. 10,000 concurrent sys.sleep 1000 jobs (goal: <= 1.3 s);
#   b. dexec map http.get over N URLs of a local nginx answering each after
#      1 s (echo_sleep 1), beside an asyncio + aiohttp crawler and a
#      ThreadPoolExecutor crawler (goal: within 1.3x of the server's limit);
#   c. worker memory per suspended task (goal: <= 4 KiB);
#   d. a chunked map of no-op items, chunksize 1000, beside
#      ProcessPoolExecutor(2).map at the same chunksize (goal: >= 1M/s).
# Needs nginx and libnginx-mod-http-echo, python3-aiohttp
# (bazel/install-deps.sh); without nginx, (b) is skipped with a message.
#
#   bench/shapes_bench.sh            # all; results in bench/results/shapes.txt
#   HTTP_N=20000 bench/shapes_bench.sh
#   SHAPES_ONLY="http map" bench/shapes_bench.sh   # some of: memory sleeps map http
# Every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP_N=${HTTP_N:-20000}
SLEEP_N=${SLEEP_N:-10000}
MAP_N=${MAP_N:-2000000}
OUT=${OUT:-bench/results/shapes.txt}
SHAPES_ONLY=${SHAPES_ONLY:-memory sleeps map http}
want() { [[ " $SHAPES_ONLY " == *" $1 "* ]]; }
TMP=$(mktemp -d /tmp/dexec-shapes.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

bazel build --config=opt //broker:dexec-broker //worker:dexec-worker \
  //bench:shapes_bench //bench:shapes_http_limit >/dev/null
BIN=bazel-bin
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
log() { echo "$@" | tee -a "$OUT"; }

# One broker and one 2-thread worker, in memory and --insecure: this
# measures the shapes of work, not security (bench/run.sh phase s does).
"$BIN/broker/dexec-broker" --listen=127.0.0.1:0 \
  --http_listen=127.0.0.1:0 --worker_listen='tcp://127.0.0.1:*' --in_memory --insecure \
  >"$TMP/broker.out" 2>"$TMP/broker.err" &
PIDS+=($!)
for _ in $(seq 100); do
  grep -q listening "$TMP/broker.out" 2>/dev/null && break
  sleep 0.1  # the broker prints its ports once bound
done
GRPC=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$TMP/broker.out")
WORKERS=$(sed -n 's/.*workers=\([^ ]*\).*/\1/p' "$TMP/broker.out")
"$BIN/worker/dexec-worker" --broker="$WORKERS" --threads=2 --insecure \
  --allow_http --concurrency=${CONCURRENCY:-20000} \
  >"$TMP/worker.out" 2>"$TMP/worker.err" &
WORKER_PID=$!
PIDS+=($WORKER_PID)
for _ in $(seq 100); do
  grep -q started "$TMP/worker.out" 2>/dev/null && break
  sleep 0.1
done
B="$BIN/bench/shapes_bench --broker=$GRPC"

log "# $(date -u +%FT%TZ) dexec $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
# Warm-up (connections, the broker's task statistics).
$B --workload=sleeps --n=100 >/dev/null
# Memory first, while the worker's heap has never held 10,000 tasks.
if want memory; then
  $B --workload=memory --n="$SLEEP_N" --worker_pid="$WORKER_PID" | tee -a "$OUT"
fi
if want sleeps; then
  for round in 1 2 3; do
    $B --workload=sleeps --n="$SLEEP_N" | tee -a "$OUT"
  done
fi
if want map; then
  # dexec and ProcessPoolExecutor alternately, so load drift hits both.
  for round in 1 2 3; do
    log "# load $(cut -d' ' -f1-3 /proc/loadavg)"
    $B --workload=chunked_map --n="$MAP_N" --chunksize=1000 | tee -a "$OUT"
    /usr/bin/python3 bench/shapes_peers.py ppe "$MAP_N" 1000 | tee -a "$OUT"
  done
fi

if ! want http; then
  :
elif [ -x /usr/sbin/nginx ] && [ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ]; then
  # Four listening ports on free ports the OS picks: each has its own
  # accept queue (the kernel caps a listen backlog at net.core.somaxconn,
  # 4096 here) and its own 28k client ports (ip_local_port_range), so
  # 20,000 connections opened at once neither overflow one queue nor run
  # out of ports. One nginx process (master_process off, so stopping it
  # by PID stops all of it) with connections for every request.
  mkdir -p "$TMP/nginx"
  PORTS=$(/usr/bin/python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
  LISTEN="" URLS=""
  for p in $PORTS; do
    LISTEN="$LISTEN listen 127.0.0.1:$p backlog=65535;"
    URLS="$URLS${URLS:+,}http://127.0.0.1:$p/"
  done
  cat >"$TMP/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
master_process off;
worker_rlimit_nofile 200000;
pid $TMP/nginx.pid;
error_log $TMP/nginx/error.log;
daemon off;
events { worker_connections 100000; multi_accept on; use epoll; }
http {
  access_log off;
  keepalive_requests 100000;
  client_body_temp_path $TMP/nginx; proxy_temp_path $TMP/nginx;
  fastcgi_temp_path $TMP/nginx; uwsgi_temp_path $TMP/nginx;
  scgi_temp_path $TMP/nginx;
  server {
    $LISTEN
    location / { echo_sleep 1; echo ok; }
  }
}
CONF
  /usr/sbin/nginx -c "$TMP/nginx.conf" -p "$TMP/nginx" &
  PIDS+=($!)
  for u in ${URLS//,/ }; do
    for _ in $(seq 100); do
      curl -s -o /dev/null "$u" && break
      sleep 0.1  # nginx binds its ports once started
    done
  done
  L="$BIN/bench/shapes_http_limit --urls=$URLS"
  $L --n=100 >/dev/null
  # The server's own limit: a plain libcurl multi client (no dexec) over
  # the same URLs, all in flight; then dexec and the seeds' crawlers,
  # alternating with it so a drift of the machine's load hits all alike.
  # Each round leaves about 3 x HTTP_N client ports in TIME_WAIT for 60 s
  # (28k per server port): rounds too close together run out of ports,
  # and connect() fails (what "connection refused" at 20k was).
  for round in $(seq "${HTTP_ROUNDS:-1}"); do
    log "# load $(cut -d' ' -f1-3 /proc/loadavg)"
    $L --n="$HTTP_N" 2>&1 | tee -a "$OUT" || log "# limit client failed"
    $B --workload=http --n="$HTTP_N" --url="$URLS" | tee -a "$OUT" ||
      log "# dexec http.get failed (see above)"
    /usr/bin/python3 bench/shapes_peers.py aiohttp "$URLS" "$HTTP_N" |
      tee -a "$OUT" || log "# aiohttp crawler failed"
  done
  /usr/bin/python3 bench/shapes_peers.py threads "$URLS" "$HTTP_N" \
    "${HTTP_THREADS:-1000}" | tee -a "$OUT" || log "# thread crawler failed"
else
  log "# http: skipped, nginx with libnginx-mod-http-echo is not installed (bazel/install-deps.sh)"
fi
