#!/usr/bin/env bash
# Issue 12's goals, measured side by side with the seeds' own programs, on
# one worker with 2 threads: phase h of bench/run.sh (`make bench`), and
# the standalone entry for these workloads alone:
#   a. 10,000 concurrent sys.sleep 1000 jobs (goal: <= 1.3 s);
#   b. dexec map http.get over N URLs of a local nginx answering each after
#      1 s (echo_sleep 1), beside an asyncio + aiohttp crawler and a
#      ThreadPoolExecutor crawler (goal: within 1.3x of the server's limit:
#      bench/shapes_http_limit, the least time any client here takes);
#   c. worker memory per suspended task (goal: <= 4 KiB);
#   d. a chunked map of no-op items, chunksize 1000, beside
#      ProcessPoolExecutor(2).map at the same chunksize (goal: >= 1M/s).
# Needs nginx and libnginx-mod-http-echo, python3-aiohttp
# (bazel/install-deps.sh); without nginx, (b) is skipped with a message.
#
#   bench/shapes_bench.sh            # all; appended to bench/results/shapes.txt
#   HTTP_N="20000 18000" bench/shapes_bench.sh     # URLs per HTTP round
#   SHAPES_ONLY="http map" bench/shapes_bench.sh   # some of: memory sleeps map http
#   SHAPES_QUICK=1 bench/shapes_bench.sh           # small N, 1 round each
#   SHAPES_BIN=dir  # the binaries (dexec-broker, dexec-worker,
#                   # shapes_bench, shapes_http_limit) there, not built here
#
# Each run appends a "# shapes run" line and its RESULT lines to OUT, so the
# file keeps its history; bench/report.py reads the last run. Every process
# it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SHAPES_QUICK:-0}" = 1 ]; then
  : "${HTTP_N:=2000}" "${SLEEP_N:=2000}" "${MAP_N:=200000}" "${ROUNDS:=1}"
  : "${HTTP_THREADS:=200}"
fi
HTTP_N=${HTTP_N:-20000 18000}
SLEEP_N=${SLEEP_N:-10000}
MAP_N=${MAP_N:-2000000}
ROUNDS=${ROUNDS:-3}
HTTP_ROUNDS=${HTTP_ROUNDS:-$ROUNDS}
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
trap 'exit 130' INT TERM

if [ -n "${SHAPES_BIN:-}" ]; then
  BIN=$SHAPES_BIN
else
  bazel build --config=opt //broker:dexec-broker //worker:dexec-worker \
    //bench:shapes_bench //bench:shapes_http_limit >/dev/null
  BIN=$TMP/bin  # a copy: other builds move bazel-bin
  mkdir -p "$BIN"
  cp bazel-bin/broker/dexec-broker bazel-bin/worker/dexec-worker \
    bazel-bin/bench/shapes_bench bazel-bin/bench/shapes_http_limit "$BIN/"
fi
mkdir -p "$(dirname "$OUT")"
log() { echo "$@" | tee -a "$OUT"; }
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# One broker and one 2-thread worker, in memory and --insecure: this
# measures the shapes of work, not security (bench/run.sh phase s does).
"$BIN/dexec-broker" --listen=127.0.0.1:0 \
  --http_listen=127.0.0.1:0 --worker_listen='tcp://127.0.0.1:*' --in_memory --insecure \
  >"$TMP/broker.out" 2>"$TMP/broker.err" &
BROKER_PID=$!
PIDS+=($BROKER_PID)
for _ in $(seq 100); do
  grep -q listening "$TMP/broker.out" 2>/dev/null && break
  sleep 0.1  # the broker prints its ports once bound
done
GRPC=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$TMP/broker.out")
WORKERS=$(sed -n 's/.*workers=\([^ ]*\).*/\1/p' "$TMP/broker.out")
# start_worker: a new worker (stopping the last one by PID first, SIGTERM:
# it drains, holding no job here); WORKER_PID is the new one's. The
# stopped one leaves PIDS, so the exit trap never signals its PID reused.
WORKER_PID=
start_worker() {  # [dexec-worker flags]
  if [ -n "$WORKER_PID" ]; then
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
    local kept=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$WORKER_PID" ] || kept+=("$p"); done
    PIDS=("${kept[@]}")
  fi
  : >"$TMP/worker.out"
  "$BIN/dexec-worker" --broker="$WORKERS" --threads=2 --insecure \
    --allow_http --concurrency=${CONCURRENCY:-20000} "$@" \
    >"$TMP/worker.out" 2>>"$TMP/worker.err" &
  WORKER_PID=$!
  PIDS+=($WORKER_PID)
  for _ in $(seq 100); do
    grep -q started "$TMP/worker.out" 2>/dev/null && break
    sleep 0.1  # the worker prints "started" once registered
  done
}
start_worker
B="$BIN/shapes_bench --broker=$GRPC"

log "# shapes run date=$(date -u +%FT%TZ) commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- broker worker client common protos bench/shapes_bench.cc bench/shapes_http_limit.cc || echo '+dirty') cores=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,) http_n=${HTTP_N// /,} sleep_n=$SLEEP_N map_n=$MAP_N rounds=$ROUNDS http_rounds=$HTTP_ROUNDS quick=${SHAPES_QUICK:-0}"
# Warm-up (connections, the broker's task statistics).
$B --workload=sleeps --n=100 >/dev/null
# Memory first, while the worker's heap has never held 10,000 tasks.
if want memory; then
  $B --workload=memory --n="$SLEEP_N" --worker_pid="$WORKER_PID" | tee -a "$OUT"
fi
if want sleeps; then
  for round in $(seq "$ROUNDS"); do
    $B --workload=sleeps --n="$SLEEP_N" | tee -a "$OUT"
  done
fi
if want map; then
  # dexec and ProcessPoolExecutor alternately, so load drift hits both.
  for round in $(seq "$ROUNDS"); do
    log "# load $(cut -d' ' -f1-3 /proc/loadavg)"
    $B --workload=chunked_map --n="$MAP_N" --chunksize=1000 | tee -a "$OUT"
    /usr/bin/python3 bench/shapes_peers.py ppe "$MAP_N" 1000 | tee -a "$OUT"
  done
fi

if ! want http; then
  :
elif [ -x /usr/sbin/nginx ] && [ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ]; then
  # Four nginx processes, each on a free port the OS picks, with
  # master_process off (stopping one by PID stops all of it). Four, not
  # one on four ports: a process holds at most RLIMIT_NOFILE sockets (a
  # hard limit of 20,000 on the bench machine, fewer than the connections
  # open at once), and each port has its own accept queue (the kernel caps
  # a listen backlog at net.core.somaxconn, 4096 here) and its own client
  # port range, so 20,000 connections opened at once neither overflow one
  # queue nor run out of ports.
  PORTS=$(/usr/bin/python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
  URLS="" NGINX_PIDS=()
  for p in $PORTS; do
    URLS="$URLS${URLS:+,}http://127.0.0.1:$p/"
    mkdir -p "$TMP/nginx.$p"
    cat >"$TMP/nginx.$p.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
master_process off;
worker_rlimit_nofile $(ulimit -Hn);
pid $TMP/nginx.$p/nginx.pid;
error_log $TMP/nginx.$p/error.log;
daemon off;
events { worker_connections 100000; multi_accept on; use epoll; }
http {
  access_log off;
  keepalive_requests 100000;
  client_body_temp_path $TMP/nginx.$p; proxy_temp_path $TMP/nginx.$p;
  fastcgi_temp_path $TMP/nginx.$p; uwsgi_temp_path $TMP/nginx.$p;
  scgi_temp_path $TMP/nginx.$p;
  server {
    listen 127.0.0.1:$p backlog=65535;
    location / { echo_sleep 1; echo ok; }
  }
}
CONF
    /usr/sbin/nginx -c "$TMP/nginx.$p.conf" -p "$TMP/nginx.$p" 2>>"$TMP/nginx.err" &
    PIDS+=($!)
    NGINX_PIDS+=($!)
  done
  for u in ${URLS//,/ }; do
    for _ in $(seq 100); do
      curl -s -o /dev/null "$u" && break
      sleep 0.1  # nginx binds its port once started
    done
  done
  nginx_cpu() { local t=0 p; for p in "${NGINX_PIDS[@]}"; do t=$(awk -v a="$t" -v b="$(cpu_s "$p")" 'BEGIN { print a + b }'); done; echo "$t"; }
  # timed NAME CMD...: runs CMD, then logs the CPU seconds it (with its
  # children) and nginx, the broker and the worker used meanwhile: where
  # the time of a round goes on these 2 cores.
  timed() {
    local name=$1 b w n rc=0
    shift
    b=$(cpu_s "$BROKER_PID") w=$(cpu_s "$WORKER_PID") n=$(nginx_cpu)
    echo "- -" >"$TMP/time"
    if [ -x /usr/bin/time ]; then  # Debian's time package
      /usr/bin/time -f "%U %S" -o "$TMP/time" "$@" 2>&1 | tee -a "$OUT" || rc=$?
    else
      "$@" 2>&1 | tee -a "$OUT" || rc=$?
    fi
    log "# cpu_s of $name: client=$(awk '$1 == "-" { print "?"; next } { print $1 + $2 }' "$TMP/time") nginx=$(awk -v a="$n" -v b="$(nginx_cpu)" 'BEGIN { print b - a }') broker=$(awk -v a="$b" -v b="$(cpu_s "$BROKER_PID")" 'BEGIN { print b - a }') worker=$(awk -v a="$w" -v b="$(cpu_s "$WORKER_PID")" 'BEGIN { print b - a }') load=$(cut -d' ' -f1 /proc/loadavg)"
    return "$rc"
  }
  L="$BIN/shapes_http_limit --urls=$URLS --procs=${HTTP_PROCS:-4}"
  $L --n=100 >/dev/null
  # The server's own limit: shapes_http_limit over the same URLs, all in
  # flight at once from HTTP_PROCS processes, with plain sockets (raw, the
  # least CPU per request) and with curl as http.get drives it; then dexec
  # and the seeds' crawlers, alternating with it so a drift of the
  # machine's load hits all alike. For each N of HTTP_N (one worker
  # process holds at most the fd hard limit's sockets, less a reserve of
  # its own: at 20,000 URLs and a 20,000 hard limit, a few hundred wait for
  # the first connections to come free). Client ports left in
  # TIME_WAIT by a round (60 s) are reused by the next:
  # net.ipv4.tcp_tw_reuse (2, the default, reuses them for loopback) is
  # logged with each round.
  for n in $HTTP_N; do
    for round in $(seq "$HTTP_ROUNDS"); do
      log "# load $(cut -d' ' -f1-3 /proc/loadavg) tcp_tw_reuse=$(cat /proc/sys/net/ipv4/tcp_tw_reuse) timewait=$(ss -Htan state time-wait | wc -l) fd_hard_limit=$(ulimit -Hn)"
      timed "raw_$n" $L --n="$n" --client=raw || log "# raw limit client failed"
      # The raw client again, keep-alive: each connection left open once
      # its response is whole, as a keep-alive client (curl, dexec) leaves
      # it, so no close in the round (system=raw_keep; a limit candidate).
      timed "raw_keep_$n" $L --n="$n" --client=raw --keep_open --label=raw_keep ||
        log "# raw keep-alive limit client failed"
      timed "curl_$n" $L --n="$n" --client=curl || log "# curl limit client failed"
      # The same raw client as one process, as one worker is: not the
      # limit, the fastest a single process gets here (system=raw_1proc;
      # above the fd hard limit it cannot hold every connection, so only
      # for N below it).
      if [ "$n" -lt "$(ulimit -Hn)" ]; then
        timed "raw_1proc_$n" "$BIN/shapes_http_limit" --urls="$URLS" --procs=1 \
          --n="$n" --client=raw --label=raw_1proc ||
          log "# raw one-process client failed"
      fi
      # dexec twice: on a fresh worker, so that every request opens a
      # connection, as the limit clients' do (system=dexec_fresh); then
      # again on the same worker, which kept those connections alive
      # (system=dexec, as a long-running worker crawling the same hosts).
      start_worker
      $B --workload=sleeps --n=100 >/dev/null  # it serves
      timed "dexec_fresh_$n" $B --workload=http --n="$n" --url="$URLS" \
        --label=dexec_fresh || log "# dexec http.get failed (see above)"
      timed "dexec_$n" $B --workload=http --n="$n" --url="$URLS" ||
        log "# dexec http.get failed (see above)"
      # A fresh worker again, with every request through curl
      # (--nohttp_plain; system=dexec_fresh_curl): what the plain path
      # saves.
      start_worker --nohttp_plain
      $B --workload=sleeps --n=100 >/dev/null
      timed "dexec_fresh_curl_$n" $B --workload=http --n="$n" --url="$URLS" \
        --label=dexec_fresh_curl || log "# dexec http.get failed (see above)"
      # And chunked, on a fresh worker: 100 URLs per job, fetched at once
      # (system=dexec_chunked): the same requests, 1 % of the jobs.
      start_worker
      $B --workload=sleeps --n=100 >/dev/null
      timed "dexec_chunked_$n" $B --workload=http --n="$n" --url="$URLS" \
        --chunksize=100 --label=dexec_chunked ||
        log "# dexec http.get failed (see above)"
      timed "aiohttp_$n" /usr/bin/python3 bench/shapes_peers.py aiohttp "$URLS" "$n" ||
        log "# aiohttp crawler failed"
    done
  done
  n=${HTTP_N%% *}
  timed "threads_$n" /usr/bin/python3 bench/shapes_peers.py threads "$URLS" "$n" \
    "${HTTP_THREADS:-1000}" || log "# thread crawler failed"
else
  log "# http: skipped, nginx with libnginx-mod-http-echo is not installed (bazel/install-deps.sh)"
fi
