#!/usr/bin/env bash
# Regenerates python_offsets.json from the headers of every CPython given
# (default: the pyenv versions 3.10-3.13 installed here), one entry per
# minor version. The profiler uses the table for 3.10-3.12 and checks it
# against the interpreter's own _Py_DebugOffsets on 3.13.
# Usage: gen-offsets.sh [PYTHON_PREFIX...] > python_offsets.json
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-cc}
prefixes=("$@")
if [[ ${#prefixes[@]} -eq 0 ]]; then
  for v in 3.10 3.11 3.12 3.13; do
    p=$(ls -d "$HOME"/.pyenv/versions/"$v".* 2>/dev/null | sort -V | tail -1 || true)
    [[ -n $p ]] || { echo "no pyenv CPython $v under ~/.pyenv/versions" >&2; exit 1; }
    prefixes+=("$p")
  done
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "{"
first=1
for prefix in "${prefixes[@]}"; do
  inc=$(ls -d "$prefix"/include/python3.* | head -1)
  "$cc" -w -I "$inc" -I "$inc/internal" -o "$tmp/gen" "$here/offsets_gen.c"
  [[ $first == 1 ]] || echo ","
  first=0
  "$tmp/gen"
done
echo
echo "}"
