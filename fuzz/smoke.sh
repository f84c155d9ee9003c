#!/usr/bin/env bash
# Runs each fuzz target for a few seconds on its committed seed corpus
# (fuzz/corpus/<target>/, regressions/ included) and writes one JUnit
# testcase per target to bazel-testlogs-fuzz/<target>/test.xml, where
# .ci/count_tests.py finds it. Exit status: 0 only if every target ran clean.
#
#   fuzz/smoke.sh                 # build, then 5 s each
#   FUZZ_SECONDS=60 fuzz/smoke.sh # longer: `make fuzz`
# New inputs go to a scratch directory, not into the committed corpus;
# a crashing input is kept as fuzz/out/crash-<target>-*.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
SECONDS_EACH="${FUZZ_SECONDS:-5}"
LOGS="${FUZZ_LOGS:-$ROOT/bazel-testlogs-fuzz}"
TARGETS=(wire_decode_fuzz broker_core_fuzz broker_requests_fuzz http1_fuzz)

fuzz/build.sh "${TARGETS[@]}" || exit 1

# gRPC, protobuf and Abseil are Debian's, not instrumented: no leak or ODR
# reports from them.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:detect_odr_violation=0:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

xml_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g'; }

rc=0
for t in "${TARGETS[@]}"; do
  mkdir -p "$LOGS/$t"
  scratch="$(mktemp -d)"
  log="$LOGS/$t/test.log"
  start=$(date +%s%N)
  # -max_total_time bounds the run; corpus dirs: new inputs go to the
  # first (scratch), the committed ones are read only.
  fuzz/out/"$t" -max_total_time="$SECONDS_EACH" -timeout=30 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="fuzz/out/crash-$t-" \
    "$scratch" "fuzz/corpus/$t" $(test -d "fuzz/corpus/$t/regressions" && echo "fuzz/corpus/$t/regressions") \
    >"$log" 2>&1
  trc=$?
  rm -rf "$scratch"
  ns=$(( $(date +%s%N) - start ))
  took="$((ns / 1000000000)).$(printf %03d $((ns / 1000000 % 1000)))"
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  if [ $trc = 0 ]; then
    echo "fuzz: $t ok (${runs:-?} runs in ${took%.*} s)"
    failure=""
  else
    echo "fuzz: $t FAILED (exit $trc); see $log" >&2
    tail -40 "$log" >&2
    rc=1
    failure="<failure message=\"libFuzzer exited $trc\">$(tail -60 "$log" | xml_escape)</failure>"
  fi
  cat >"$LOGS/$t/test.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
<testsuite name="fuzz/$t" tests="1" failures="$([ $trc = 0 ] && echo 0 || echo 1)" errors="0" time="$took">
<testcase name="$t" classname="fuzz.smoke" time="$took">$failure</testcase>
</testsuite>
</testsuites>
XML
done
exit $rc
