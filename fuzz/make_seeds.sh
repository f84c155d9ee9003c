#!/usr/bin/env bash
# Writes the hand-made part of the seed corpus (fuzz/corpus/): valid wire
# frames and valid client requests, encoded by protoc from text format.
# Re-run after a change to protos/; the files it writes are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
W=fuzz/corpus/wire_decode_fuzz
R=fuzz/corpus/broker_requests_fuzz
mkdir -p "$W" "$R"

frame() {  # name, text of a dexec.wire.Frame
  printf '%s' "$2" | protoc -Iprotos --encode=dexec.wire.Frame protos/wire.proto >"$W/$1"
}
frame register 'version: 1 register { name: "w" host: "h" pid: 7 threads: 2 prefetch: 1 tasks: "a" tasks: "b" held { job_id: 3 attempt: 1 } }'
frame heartbeat 'version: 1 heartbeat { busy: 1 }'
frame results 'version: 1 results { results { job_id: 1 attempt: 1 ok: true output: "out" started_at_us: 1 finished_at_us: 2 } results { job_id: 2 attempt: 1 error_kind: "ValueError" error_message: "bad" } }'
frame results_pieces 'version: 1 results { results { job_id: 1 attempt: 1 output: "ab" output_size: 5 } results { job_id: 1 attempt: 1 ok: true output: "cde" output_size: 5 output_offset: 2 } }'
frame register_chunked 'version: 1 register { name: "w" threads: 1 tasks: "a" chunked_results: true }'
frame dispatch 'version: 1 dispatch { tasks { job_id: 1 attempt: 1 name: "a" payload: "p" timeout_ms: 100 } }'
frame welcome 'version: 1 welcome { heartbeat_interval_ms: 1000 liveness: 3 }'
frame welcome_limits 'version: 1 welcome { heartbeat_interval_ms: 1000 liveness: 3 max_result_bytes: 67108864 max_frame_bytes: 8388608 max_chunk_bytes: 1048576 }'
frame abandon 'version: 1 abandon { tasks { job_id: 1 attempt: 2 } }'
frame reconnect 'version: 1 reconnect {}'
frame worker_state 'version: 1 worker_state { draining: true }'

# Requests: a selector byte (the method, see broker_requests_fuzz.cc) and
# the body; Session messages each behind a length byte.
request() {  # name, selector, message type, text
  { printf "\\x$(printf %02x "$2")"
    printf '%s' "$4" | protoc -Iprotos --encode="dexec.v1.$3" protos/dexec.proto
  } >"$R/$1"
}
request submit 0 SubmitRequest 'jobs { task: "a" payload: "x" priority: 1 max_attempts: 2 idempotency_key: "k" } jobs { task: "b" timeout { seconds: 1 } }'
request get_jobs 1 GetJobsRequest 'job_ids: 1 job_ids: 2 include_result: true'
request cancel 2 CancelRequest 'job_ids: 1 job_ids: 99'
request list_jobs 3 ListJobsRequest 'state: QUEUED limit: 5 before_id: 10'
request list_workers 4 ListWorkersRequest ''
request get_stats 5 GetStatsRequest ''
session() {  # name, selector, SessionRequest texts...
  local name="$1" sel="$2" m; shift 2
  { printf "\\x$(printf %02x "$sel")"
    for t in "$@"; do
      m="$(printf '%s' "$t" | protoc -Iprotos --encode=dexec.v1.SessionRequest protos/dexec.proto | base64 -w0)"
      printf "\\x$(printf %02x "$(printf '%s' "$m" | base64 -d | wc -c)")"
      printf '%s' "$m" | base64 -d
    done
  } >"$R/$name"
}
session session_submit_watch 6 \
  'submit { seq: 1 client_id: "c" jobs { task: "a" payload: "x" } }' \
  'watch { job_ids: 1 job_ids: 1 job_ids: 5 }'
session session_then_stats 7 'submit { seq: 2 client_id: "c" jobs { task: "b" } }'
