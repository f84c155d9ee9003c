#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with Debian's clang (Bazel's
# toolchain is gcc, and libFuzzer needs clang). The protobuf code is the one
# Bazel generates, so //protos:all is built first; everything else is
# compiled here straight from the sources, with ASan and UBSan, against
# Debian's gcc-built system libraries (libstdc++ is shared by both).
#
#   fuzz/build.sh            # all targets, into fuzz/out/
#   fuzz/build.sh wire_decode_fuzz
#
# An object is rebuilt when its source is newer; FUZZ_CLEAN=1 rebuilds all.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BAZEL="${BAZEL:-bazel}"
CXX="${FUZZ_CXX:-clang++-14}"
command -v "$CXX" >/dev/null || CXX=clang++
OUT="$ROOT/fuzz/out"
OBJ="$OUT/obj"
[ "${FUZZ_CLEAN:-0}" = 1 ] && rm -rf "$OUT"
mkdir -p "$OBJ"

"$BAZEL" build //protos:all >&2
GEN="$("$BAZEL" info bazel-bin 2>/dev/null)"

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CXXFLAGS="-std=c++17 -g -O1 -fno-omit-frame-pointer $SAN -I. -I$GEN"

ABSL="-labsl_statusor -labsl_status -labsl_cord -labsl_cordz_info
  -labsl_cord_internal -labsl_cordz_functions -labsl_cordz_handle
  -labsl_str_format_internal -labsl_hash -labsl_city -labsl_low_level_hash
  -labsl_raw_hash_set -labsl_synchronization -labsl_graphcycles_internal
  -labsl_stacktrace -labsl_symbolize -labsl_malloc_internal -labsl_time
  -labsl_civil_time -labsl_time_zone -labsl_strings -labsl_strings_internal
  -labsl_int128 -labsl_throw_delegate -labsl_spinlock_wait
  -labsl_raw_logging_internal -labsl_log_severity -labsl_base"

PROTO_SRCS="protos/wire.cc $GEN/protos/wire.pb.cc $GEN/protos/dexec.pb.cc
  $GEN/protos/store.pb.cc"
CORE_SRCS="$PROTO_SRCS broker/broker_core.cc broker/job.cc
  broker/job_table.cc broker/ready_queue.cc broker/task_metrics.cc
  broker/worker_registry.cc
  common/log.cc"
SERVICE_SRCS="$CORE_SRCS $GEN/protos/dexec.grpc.pb.cc broker/broker_loop.cc
  broker/grpc_service.cc broker/journal.cc broker/zap_handler.cc
  auth/curve_keys.cc auth/worker_key_store.cc auth/token_store.cc
  auth/name.cc auth/secret_file.cc"

# Compiles the sources named (library code: instrumented for coverage,
# without libFuzzer's main) and prints their objects.
objects() {
  local todo=() objs=() src obj
  for src in "$@"; do
    obj="$OBJ/$(echo "${src#"$GEN"/}" | tr / _).o"
    objs+=("$obj")
    if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ]; then todo+=("$src:$obj"); fi
  done
  if ((${#todo[@]})); then
    printf '%s\n' "${todo[@]}" | xargs -P "${FUZZ_JOBS:-2}" -I{} sh -c \
      'src="${1%%:*}"; obj="${1#*:}"; echo "fuzz: compiling $src" >&2;
       '"$CXX $CXXFLAGS"' -fsanitize=fuzzer-no-link -c "$src" -o "$obj"' \
      _ {}
  fi
  echo "${objs[@]}"
}

build() {
  local target="$1" srcs libs
  case "$target" in
    wire_decode_fuzz)
      srcs="$PROTO_SRCS"; libs="-lprotobuf $ABSL" ;;
    broker_core_fuzz)
      srcs="$CORE_SRCS"; libs="-lprotobuf $ABSL" ;;
    broker_requests_fuzz)
      srcs="$SERVICE_SRCS"
      libs="-lgrpc++ -lgrpc -lgpr -lprotobuf -lrocksdb -lzmq -lsodium
            -lcrypto $ABSL -lpthread" ;;
    *) echo "fuzz: unknown target $target" >&2; return 2 ;;
  esac
  # shellcheck disable=SC2086
  local objs; objs="$(objects $srcs)"
  local newest f
  if [ -e "$OUT/$target" ]; then
    newest=""
    for f in "fuzz/$target.cc" $objs; do
      [ "$f" -nt "$OUT/$target" ] && newest="$f"
    done
    [ -z "$newest" ] && return 0
  fi
  echo "fuzz: linking $target" >&2
  # shellcheck disable=SC2086
  $CXX $CXXFLAGS -fsanitize=fuzzer "fuzz/$target.cc" $objs $libs \
    -o "$OUT/$target"
}

TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(wire_decode_fuzz broker_core_fuzz broker_requests_fuzz)
for t in "${TARGETS[@]}"; do build "$t"; done
