#!/usr/bin/env bash
# Builds every Go test target with one Go toolchain into OUT_DIR:
#   <app>           symbols + DWARF (what the probe reads offsets from)
#   <app>.stripped  -ldflags='-s -w' (no symbol table, no DWARF: the probe must
#                   fall back to the pclntab and the offsets table, or refuse)
# Usage: build.sh GO_BINARY OUT_DIR
# The Go build cache makes a second run cheap. GOTOOLCHAIN=local keeps each Go
# from switching itself to a newer toolchain, so the matrix is what it says.
set -euo pipefail
go_bin=${1:?usage: build.sh GO_BINARY OUT_DIR}
out=${2:?usage: build.sh GO_BINARY OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
cd "$here"
# Skip the build when nothing changed since the last one into OUT_DIR.
stamp=$( { "$go_bin" version; cat build.sh go.mod go.sum; find . -name '*.go' | sort | xargs cat; } | sha256sum | cut -d' ' -f1)
if [[ -f $out/STAMP && $(cat "$out/STAMP") == "$stamp" ]]; then
  exit 0
fi
for app in httpserver httpclient chiapp grpcserver grpcclient cpuburn; do
  # Build beside the target and rename into place: a running test target
  # keeps its (old) inode, and concurrent builds never see a partial file.
  "$go_bin" build -o "$out/$app.tmp.$$" "./$app"
  "$go_bin" build -ldflags='-s -w' -o "$out/$app.stripped.tmp.$$" "./$app"
  mv -f "$out/$app.tmp.$$" "$out/$app"
  mv -f "$out/$app.stripped.tmp.$$" "$out/$app.stripped"
done
"$go_bin" version > "$out/GO_VERSION"
echo "$stamp" > "$out/STAMP"
