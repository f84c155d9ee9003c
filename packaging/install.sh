#!/usr/bin/env bash
# install.sh DIST.tar PREFIX [DESTDIR]: what `make install` does. Unpacks the
# install tree (packaging/BUILD, //packaging:dexec-dist) into
# DESTDIR/PREFIX and writes PREFIX into the systemd units, the only files
# that name it (everything else finds its prefix at run time).
set -euo pipefail
dist="$1"
prefix="$2"
root="${3:-}$prefix"
mkdir -p "$root"
# --no-overwrite-dir: an existing PREFIX (or PREFIX/lib) keeps its mode.
tar -xf "$dist" --no-overwrite-dir -C "$root"
for unit in "$root"/lib/systemd/system/dexec-*.service; do
  [ -e "$unit" ] || continue
  sed -i "s|@PREFIX@|$prefix|g" "$unit"
done
echo "installed in $root: bin/{dexec-broker,dexec-worker,dexec}" \
  "lib/libdexec_{client,worker}.so include/dexec lib/pkgconfig" \
  "lib/cmake/dexec lib/systemd/system lib/sysusers.d"
