#!/usr/bin/env bash
# clang-format (Google style, .clang-format at the root) over every C++
# source in git. `tools/format.sh` rewrites them in place; `tools/format.sh
# --check` changes nothing, lists the files that differ and exits 1 if any
# does (.ci/run runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cc' '*.h' ':!:fuzz/corpus/**')
if [ "${1:-}" = --check ]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if [ ${#bad[@]} -gt 0 ]; then
    echo "format: ${#bad[@]} of ${#files[@]} files differ from clang-format (run tools/format.sh):"
    printf '  %s\n' "${bad[@]}"
    exit 1
  fi
  echo "format: all ${#files[@]} C++ files match clang-format"
else
  clang-format -i "${files[@]}"
fi
