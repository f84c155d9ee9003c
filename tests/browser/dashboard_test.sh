#!/usr/bin/env bash
# The dashboard in a real browser (issue 13, section 2): Debian's chromium,
# driven by playwright-core from npm, against a real dexec-broker and
# dexec-worker running real jobs (tests/browser/dashboard_test.cjs does the
# work and writes the JUnit XML). Skipped, with a JUnit XML saying why, when
# chromium, node or npm is missing or playwright-core cannot be installed.
#
# playwright-core is installed with `npm ci` from tests/browser's
# package-lock.json into a cache outside the source tree, keyed by the lock
# file's hash ($DEXEC_BROWSER_DEPS overrides the directory), so only the
# first run needs the npm registry.
set -euo pipefail

runfiles="${TEST_SRCDIR:?run me with bazel test}/${TEST_WORKSPACE:-dexec}"
here="$runfiles/tests/browser"
xml="${XML_OUTPUT_FILE:-${TEST_UNDECLARED_OUTPUTS_DIR:-/tmp}/dashboard_test.xml}"

skip() {
  echo "SKIPPED: $*"
  local why="${*//&/&amp;}"
  why="${why//</&lt;}"
  why="${why//\"/&quot;}"
  cat >"$xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="1" failures="0" errors="0" skipped="1">
  <testsuite name="dashboard_browser" tests="1" failures="0" errors="0" skipped="1">
    <testcase name="dashboard_in_chromium" classname="dashboard_browser" status="notrun">
      <skipped message="$why"/>
    </testcase>
  </testsuite>
</testsuites>
XML
  exit 0
}

chromium="${DEXEC_CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || skip "$chromium is missing (bazel/install-deps.sh installs Debian's chromium)"
command -v node >/dev/null || skip "node is missing (install nodejs)"
command -v npm >/dev/null || skip "npm is missing (install npm)"

lock_hash="$(sha256sum "$here/package-lock.json" | cut -c1-16)"
deps="${DEXEC_BROWSER_DEPS:-${HOME:-/tmp}/.cache/dexec-browser-test/$lock_hash}"
if [ ! -f "$deps/node_modules/playwright-core/package.json" ]; then
  echo "--- npm ci playwright-core into $deps"
  tmp="$deps.tmp.$$"
  mkdir -p "$tmp"
  cp "$here/package.json" "$here/package-lock.json" "$tmp/"
  if ! (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund \
    --cache "$tmp/.npm" >"$tmp/npm.log" 2>&1); then
    tail -5 "$tmp/npm.log" >&2 || true
    rm -rf "$tmp"
    skip "npm ci of playwright-core failed (is the npm registry reachable? or set DEXEC_BROWSER_DEPS to a directory holding node_modules/playwright-core)"
  fi
  rm -rf "$tmp/.npm"
  # Another run may have won the race: keep its copy.
  mv -T "$tmp" "$deps" 2>/dev/null || rm -rf "$tmp"
fi

export NODE_PATH="$deps/node_modules"
export DEXEC_CHROMIUM="$chromium"
export DEXEC_BROKER="$runfiles/broker/dexec-broker"
export DEXEC_WORKER="$runfiles/worker/dexec-worker"
export DEXEC_CLI="$runfiles/cli/dexec"
export DEXEC_JUNIT="$xml"
exec node "$here/dashboard_test.cjs"
