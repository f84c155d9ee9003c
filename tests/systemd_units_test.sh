#!/usr/bin/env bash
# The systemd units `make install` installs (issue 13): systemd-analyze
# verify finds nothing to say about them, they keep the hardening the README
# promises, and the flags their ExecStart passes are ones the binaries
# accept. Skips (and passes) where systemd-analyze is not installed.
set -euo pipefail

runfiles="${TEST_SRCDIR:?run me with bazel test}/${TEST_WORKSPACE:-dexec}"
work="$(mktemp -d "${TEST_TMPDIR:-/tmp}/systemd_units_test.XXXXXX")"
prefix="$work/prefix"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$runfiles/packaging/install.sh" "$runfiles/packaging/dexec-dist.tar" "$prefix" >/dev/null
units="$prefix/lib/systemd/system"
[ -s "$prefix/lib/sysusers.d/dexec.conf" ] || fail "no lib/sysusers.d/dexec.conf"

for unit in dexec-broker dexec-worker; do
  file="$units/$unit.service"
  [ -s "$file" ] || fail "make install did not install $unit.service"
  grep -q '@PREFIX@' "$file" && fail "$unit.service still says @PREFIX@"
  user="${unit/-broker/}"  # dexec (the broker), dexec-worker
  grep -q "^u $user " "$prefix/lib/sysusers.d/dexec.conf" ||
    fail "lib/sysusers.d/dexec.conf does not make the user $user"
  for line in "User=$user" ProtectSystem=strict NoNewPrivileges=yes \
              "StateDirectory=$user" ProtectHome=yes PrivateTmp=yes \
              CapabilityBoundingSet=; do
    grep -qx "$line" "$file" || fail "$unit.service lacks '$line'"
  done

  # ExecStart with the variables systemd would fill in: its flags must pass
  # the binary's own check (absl's --only_check_args parses and exits).
  exec_start="$(sed -n 's/^ExecStart=//p' "$file")"
  exec_start="${exec_start//\$\{CREDENTIALS_DIRECTORY\}/$work/credentials}"
  exec_start="${exec_start//\$DEXEC_BROKER_FLAGS/}"
  exec_start="${exec_start//\$DEXEC_WORKER_FLAGS/}"
  # shellcheck disable=SC2086  # ExecStart is split into words, as systemd does
  $exec_start --only_check_args || fail "$unit.service: '$exec_start' rejects its flags"
  echo "ok: $unit.service flags"
done

if ! command -v systemd-analyze >/dev/null; then
  echo "SKIPPED: systemd-analyze is not installed; the units were not verified"
  exit 0
fi
cd "$units"
out="$(systemd-analyze verify dexec-broker.service dexec-worker.service 2>&1)" ||
  fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify had something to say: $out"
echo "ok: systemd-analyze verify"

# The exposure score (0 best, 10 worst) where this systemd can score offline.
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
  for spec in dexec-broker:2.0 dexec-worker:4.5; do
    unit="${spec%%:*}" limit="${spec#*:}"
    score="$(systemd-analyze security --offline=yes --no-pager "$unit.service" 2>&1 |
             sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')"
    [ -n "$score" ] || fail "systemd-analyze security gave no score for $unit"
    awk -v s="$score" -v l="$limit" 'BEGIN { exit !(s <= l) }' ||
      fail "$unit.service exposure $score is above $limit"
    echo "ok: $unit.service exposure $score (at most $limit)"
  done
fi
echo "PASS"
