#!/usr/bin/env bash
# make_dist.sh OUT.tar DEST=SRC...: copies each SRC to DEST in a fresh tree
# and packs the tree into OUT.tar (owner root, no timestamps from the build
# machine's files). Called by dexec_dist (dist.bzl).
set -euo pipefail
out="$1"
shift
stage="$(mktemp -d "${TMPDIR:-/tmp}/dexec-dist.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
for entry in "$@"; do
  dest="${entry%%=*}"
  src="${entry#*=}"
  mkdir -p "$stage/$(dirname "$dest")"
  case "$dest" in
    bin/*) install -m 0755 "$src" "$stage/$dest" ;;
    lib/*.so) install -m 0755 "$src" "$stage/$dest" ;;
    *) install -m 0644 "$src" "$stage/$dest" ;;
  esac
done
# The top-level directories, not ".": unpacking must never change the mode
# of PREFIX itself (mktemp made the stage 0700).
cd "$stage"
tar --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name \
  -cf "$OLDPWD/$out" -- *
