#!/usr/bin/env bash
# The install tree as a user of another build system meets it (issue 13):
# unpack what `make install` installs into a fresh prefix, build
# examples/installed (a client program and a custom worker) with CMake
# against it, build the client once more with pkg-config alone, then run
# them, and the installed dexec CLI, against the installed dexec-broker.
# Every wait is bounded; every process started is stopped by PID on exit.
set -euo pipefail

runfiles="${TEST_SRCDIR:?run me with bazel test}/${TEST_WORKSPACE:-dexec}"
work="$(mktemp -d "${TEST_TMPDIR:-/tmp}/install_test.XXXXXX")"
prefix="$work/prefix with space"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }

for tool in cmake pkg-config g++; do
  command -v "$tool" >/dev/null || fail "$tool is missing (make deps installs it)"
done

step "unpack the install tree into '$prefix'"
"$runfiles/packaging/install.sh" "$runfiles/packaging/dexec-dist.tar" "$prefix"
for f in bin/dexec-broker bin/dexec-worker bin/dexec \
         lib/libdexec_client.so lib/libdexec_worker.so \
         include/dexec/client/executor.h include/dexec/worker/worker.h \
         include/dexec/auth/curve_keys.h \
         lib/pkgconfig/dexec-client.pc lib/pkgconfig/dexec-worker.pc \
         lib/cmake/dexec/dexecConfig.cmake \
         lib/cmake/dexec/dexecConfigVersion.cmake \
         lib/systemd/system/dexec-broker.service \
         lib/systemd/system/dexec-worker.service lib/sysusers.d/dexec.conf; do
  [ -e "$prefix/$f" ] || fail "make install did not install $f"
done

# A sanitizer build (make sanitize) installs instrumented libraries; their
# users must then be built with the same sanitizer.
san_flags=""
needed=$(readelf -d "$prefix/lib/libdexec_client.so")
if grep -q 'libasan' <<<"$needed"; then
  san_flags="-fsanitize=address"
  # CI's asan_ubsan build: the libraries need UBSan's runtime too.
  if grep -q 'libubsan' <<<"$needed"; then
    san_flags="-fsanitize=address,undefined"
  fi
elif grep -q 'libtsan' <<<"$needed"; then
  san_flags="-fsanitize=thread"
fi
# The project is copied: a user's tree is writable and not a symlink farm.
cp -rL "$runfiles/examples/installed" "$work/src"

step "CMake: find_package(dexec CONFIG) -> dexec::client, dexec::worker"
cmake -S "$work/src" -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="$san_flags" \
  -DCMAKE_EXE_LINKER_FLAGS="$san_flags" >"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log"; fail "cmake configure"; }
cmake --build "$work/build" -j2 >"$work/build.log" 2>&1 ||
  { cat "$work/build.log"; fail "cmake --build"; }

step "pkg-config: dexec-client"
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --exists dexec-client dexec-worker ||
  fail "pkg-config does not find dexec-client and dexec-worker"
# pkg-config escapes the space in the prefix with a backslash, which eval
# (like a Makefile's shell) reads back as one word.
client_flags="$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs dexec-client)"
eval "g++ -std=c++17 $san_flags -o \"\$work/hello_client_pc\" \
  \"\$work/src/hello_client.cc\" $client_flags -Wl,-rpath,\"\$prefix/lib\"" ||
  fail "g++ with pkg-config --cflags --libs dexec-client"

step "start the installed broker"
mkfifo "$work/broker.out"
"$prefix/bin/dexec-broker" --listen=127.0.0.1:0 \
  --http_listen=127.0.0.1:0 --worker_listen='tcp://127.0.0.1:*' --in_memory --auth_dir="$work/auth" \
  >"$work/broker.out" &
pids+=($!)
exec 3<"$work/broker.out"
read -r -t 30 line <&3 || fail "dexec-broker printed no listening line in 30s"
# dexec-broker listening grpc=HOST:PORT workers=ENDPOINT tls=off auth=DIR
grpc="$(sed -n 's/.* grpc=\([^ ]*\).*/\1/p' <<<"$line")"
workers="$(sed -n 's/.* workers=\([^ ]*\).*/\1/p' <<<"$line")"
[ -n "$grpc" ] && [ -n "$workers" ] || fail "unexpected broker line: $line"

step "start the custom worker (CMake-built) with the broker's worker.key"
mkfifo "$work/worker.out"
"$work/build/shout_worker" "$workers" "$work/auth/worker.key" >"$work/worker.out" &
pids+=($!)
exec 4<"$work/worker.out"
read -r -t 30 line <&4 || fail "shout_worker did not start in 30s"
[ "$line" = "shout_worker started" ] || fail "shout_worker printed: $line"

expect_output() {  # expect_output WHAT EXPECTED COMMAND...
  local what="$1" expected="$2"
  shift 2
  local got
  got="$(timeout 120 "$@")" || fail "$what exited $?"
  [ "$got" = "$expected" ] || fail "$what printed '$got', expected '$expected'"
  echo "ok: $what"
}
step "run the clients with the broker's client.token"
expect_output "hello_client (CMake)" $'HELLO\n3 6 9' \
  "$work/build/hello_client" "$grpc" "$work/auth/client.token"
expect_output "hello_client (pkg-config)" $'HELLO\n3 6 9' \
  "$work/hello_client_pc" "$grpc" "$work/auth/client.token"
expect_output "installed dexec CLI" "ABC" \
  "$prefix/bin/dexec" --broker="$grpc" --token_file="$work/auth/client.token" \
  submit --wait shout abc
echo "PASS"
