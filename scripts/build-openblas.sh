#!/usr/bin/env bash
# Builds the trainer with OpenBLAS instead of gonum's pure-Go BLAS (8-9x
# faster matrix products on this project's machines). Needs cgo and
# Debian's libopenblas-dev:
#   apt-get install -y libopenblas-dev
# Usage: scripts/build-openblas.sh [OUTPUT]   (default: bin/trainer-openblas)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bin/trainer-openblas}
if ! ls /usr/lib/*/libopenblas.so >/dev/null 2>&1 && ! ls /usr/lib/libopenblas.so >/dev/null 2>&1; then
  echo "error: libopenblas.so not found; install it with: apt-get install -y libopenblas-dev" >&2
  exit 2
fi
CGO_ENABLED=1 go build -tags openblas -o "$out" ./cmd/trainer
echo "built $out (BLAS: openblas)"
