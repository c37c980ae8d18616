#!/usr/bin/env bash
# Thread scaling of one training step: the reference model at T (default
# 1024) with attention KIND (default flash), run with 1 thread and with 2
# threads (GOMAXPROCS, pinned with taskset to cores 0 and 0-1), alternating
# ROUNDS times; prints each one's median step time over the rounds and the
# speed-up. Each figure is trainer bench's own median over STEPS timed steps.
# Usage: scripts/bench-threads.sh [T=1024] [ROUNDS=3] [KIND=flash] [STEPS=5]
# TRAINER=path picks the binary (default: go build into bin/trainer).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-1024}
ROUNDS=${2:-3}
KIND=${3:-flash}
STEPS=${4:-5}
if [ -z "${TRAINER:-}" ]; then
  mkdir -p bin
  go build -o bin/trainer ./cmd/trainer
  TRAINER=bin/trainer
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
one() { # threads cpus -> step ms median
  GOMAXPROCS=$1 OPENBLAS_NUM_THREADS=1 taskset -c "$2" "$TRAINER" bench --config "configs/bench/ref-t$T.yaml" \
    --set model.attention.kind="$KIND" --steps "$STEPS" --warmup 1 --json 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["step_ms_median"])'
}
for r in $(seq "$ROUNDS"); do
  one 1 0 >>"$tmp/1"
  one 2 0,1 >>"$tmp/2"
done
python3 - "$tmp" "$T" "$KIND" <<'PY'
import statistics, sys
tmp, T, kind = sys.argv[1:4]
one = [float(l) for l in open(f"{tmp}/1")]
two = [float(l) for l in open(f"{tmp}/2")]
m1, m2 = statistics.median(one), statistics.median(two)
print(f"reference model, T={T}, {kind}, median of {len(one)} alternating rounds")
print(f"1 thread  {m1:8.1f} ms   ({', '.join(f'{x:.0f}' for x in one)})")
print(f"2 threads {m2:8.1f} ms   ({', '.join(f'{x:.0f}' for x in two)})")
print(f"speed-up  {m1/m2:8.2f}x")
PY
