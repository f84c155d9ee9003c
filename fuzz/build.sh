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
# An object (or a target) is rebuilt when anything it was compiled from is
# newer: its source and every header clang listed in its depfile (-MMD -MP,
# beside it as .d), or when its command line changed (kept beside it as
# .cmd). FUZZ_CLEAN=1 rebuilds all.
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

# Succeeds if `out` must be built again with command line `cmd`: it is
# missing, it was built with another command, or its depfile (out.d) is
# missing or names a file that is newer than it or gone. Only the depfile's
# first rule counts (-MP's phony rules follow it); paths have no spaces.
stale() {
  local out="$1" cmd="$2" dep
  [ -e "$out" ] && [ -e "$out.d" ] && [ -e "$out.cmd" ] || return 0
  [ "$(cat "$out.cmd")" = "$cmd" ] || return 0
  for dep in $(awk '{ more = sub(/\\$/, ""); if (NR == 1) sub(/^[^:]*:/, "");
                      print; if (!more) exit }' "$out.d"); do
    if [ ! -e "$dep" ] || [ "$dep" -nt "$out" ]; then return 0; fi
  done
  return 1
}

# Compiles the sources named (library code: instrumented for coverage,
# without libFuzzer's main) and prints their objects.
objects() {
  local todo=() objs=() src obj
  local cmd="$CXX $CXXFLAGS -fsanitize=fuzzer-no-link"
  for src in "$@"; do
    obj="$OBJ/$(echo "${src#"$GEN"/}" | tr / _).o"
    objs+=("$obj")
    if stale "$obj" "$cmd"; then
      # Written again only once the compile succeeded, so an interrupted
      # or failed one is retried.
      rm -f "$obj.cmd"
      todo+=("$src:$obj")
    fi
  done
  if ((${#todo[@]})); then
    printf '%s\n' "${todo[@]}" | xargs -P "${FUZZ_JOBS:-2}" -I{} sh -c \
      'src="${1%%:*}"; obj="${1#*:}"; echo "fuzz: compiling $src" >&2;
       '"$cmd"' -MMD -MP -MF "$obj.d" -c "$src" -o "$obj" &&
       printf "%s\n" "$2" >"$obj.cmd"' \
      _ {} "$cmd"
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
    http1_fuzz)
      srcs="worker/http1.cc $GEN/protos/tasks.pb.cc"
      libs="-lhttp_parser -lprotobuf $ABSL" ;;
    *) echo "fuzz: unknown target $target" >&2; return 2 ;;
  esac
  # shellcheck disable=SC2086
  local objs; objs="$(objects $srcs)"
  # The target's own source is compiled as it links; its depfile lists
  # that source's headers, and the objects are checked here.
  local out="$OUT/$target" cmd f newer=0
  cmd="$CXX $CXXFLAGS -fsanitize=fuzzer $libs"
  for f in $objs; do [ "$f" -nt "$out" ] && newer=1; done
  if ((!newer)) && ! stale "$out" "$cmd"; then return 0; fi
  rm -f "$out.cmd"
  echo "fuzz: linking $target" >&2
  # shellcheck disable=SC2086
  $CXX $CXXFLAGS -fsanitize=fuzzer -MMD -MP -MF "$out.d" "fuzz/$target.cc" \
    $objs $libs -o "$out"
  printf '%s\n' "$cmd" >"$out.cmd"
}

TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(wire_decode_fuzz broker_core_fuzz broker_requests_fuzz
                               http1_fuzz)
for t in "${TARGETS[@]}"; do build "$t"; done
