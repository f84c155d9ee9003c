#!/usr/bin/env bash
# `make demo`: a local broker and two workers on loopback, a visible job set,
# then everything stopped by PID. Needs the binaries from `make build`.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=bazel-bin
BROKER="$BIN/broker/dexec-broker"
WORKER="$BIN/worker/dexec-worker"
DEXEC="$BIN/cli/dexec"
LOGS=$(mktemp -d /tmp/dexec-demo.XXXXXX)
PIDS=()

stop_all() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "Starting a broker on free loopback ports"
coproc BROKER_PROC { exec "$BROKER" --listen=127.0.0.1:0 --http_listen=127.0.0.1:0 --worker_listen='tcp://127.0.0.1:*' --data_dir="$LOGS/data" 2>"$LOGS/broker.log"; }
PIDS+=("$BROKER_PROC_PID")
# Readiness: the broker prints one line with the addresses it bound.
read -r -t 30 line <&"${BROKER_PROC[0]}"
echo "$line"
GRPC=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' <<<"$line")
WORKERS=$(sed -n 's/.*workers=\([^ ]*\).*/\1/p' <<<"$line")
HTTP=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' <<<"$line")
export DEXEC_BROKER="$GRPC"

say "Secure by default: the broker made its credentials on first start"
ls -l "$LOGS/data/client.token" "$LOGS/data/worker.key" "$LOGS/data/broker.pub"
# Run from the broker's directory, the CLI finds ./dexec-data/client.token by
# itself; this demo keeps its data in $LOGS, so it says where the token is.
export DEXEC_TOKEN_FILE="$LOGS/data/client.token"
printf '$ dexec stats --token=wrong\n'
"$DEXEC" stats --token=wrong || echo "(exit code $?: refused)"

say "Starting two workers with 5 threads each (they join with the broker's worker.key)"
for i in 1 2; do
  "$WORKER" --broker="$WORKERS" --threads=5 --name="demo-worker-$i" \
    --auth_dir="$LOGS/data" --allow_exec >"$LOGS/worker-$i.out" 2>"$LOGS/worker-$i.log" &
  PIDS+=("$!")
done
# Readiness: the broker lists both workers.
for _ in $(seq 1 300); do
  n=$("$DEXEC" workers --json 2>/dev/null | grep -c '"name"' || true)
  [ "$n" = 2 ] && break
  sleep 0.05
done
run "$DEXEC" workers

say "Ten one-second jobs on ten threads: about one second, not ten"
start=$(date +%s%N)
ids=()
for i in $(seq 1 10); do ids+=("$("$DEXEC" submit sys.sleep 1000)"); done
run "$DEXEC" wait "${ids[@]}"
end=$(date +%s%N)
ms=$(( (end - start) / 1000000 ))
printf 'ten sleeps of 1 s took %d.%03d s (submit, run and wait)\n' $((ms / 1000)) $((ms % 1000))

say "A map: one payload per line in, one result per line out, in order"
printf 'alpha\nbravo\ncharlie\ndelta\necho\n' | { printf '$ printf "alpha\\nbravo\\n..." | dexec map sys.echo\n'; "$DEXEC" map sys.echo; }

say "A failing job and its error"
run "$DEXEC" submit --wait sys.fail "the disk is full" || echo "(exit code $?)"

say "Running a shell command on a worker"
run "$DEXEC" exec --wait -- sh -c 'echo "hello from $(hostname), pid $$"; uname -sr'

say "The workers and the jobs"
run "$DEXEC" workers
run "$DEXEC" list --limit=20
run "$DEXEC" stats

say "The same, for Prometheus (the dashboard is http://$HTTP/ while the broker runs)"
printf '$ curl -H "authorization: Bearer $(cat %s)" http://%s/metrics\n' "$DEXEC_TOKEN_FILE" "$HTTP"
if command -v curl >/dev/null; then
  curl -sS -H "authorization: Bearer $(cat "$DEXEC_TOKEN_FILE")" "http://$HTTP/metrics" | grep -E '^dexec_(jobs|workers)' || true
else
  echo "(curl is not installed here: apt-get install curl)"
fi

say "Stopping everything we started (by PID)"
stop_all
trap - EXIT
echo "logs in $LOGS"
