#!/usr/bin/env bash
# Generates the Python stubs of protos/*.proto into python/dexec/_proto/
# (build output, never committed). Run from anywhere; `make python` runs it.
#
# The protos are compiled as dexec/_proto/X.proto so the generated modules
# import each other as `dexec._proto.X_pb2` (protoc names imports after the
# path it was given). Debian's protoc and grpc_python_plugin are used, not
# python3-grpc-tools (a 2018 release with an old protoc).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/dexec/_proto"
cp "$root"/protos/dexec.proto "$root"/protos/wire.proto "$root"/protos/tasks.proto "$stage/dexec/_proto/"
protoc -I"$stage" --python_out="$here" --grpc_python_out="$here" \
  --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin \
  dexec/_proto/dexec.proto dexec/_proto/wire.proto dexec/_proto/tasks.proto
# Stubs for the messages-only protos are empty; keep the tree small.
rm -f "$here"/dexec/_proto/wire_pb2_grpc.py "$here"/dexec/_proto/tasks_pb2_grpc.py
echo "python: stubs generated in python/dexec/_proto"
