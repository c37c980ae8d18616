#!/usr/bin/env bash
# The sparse-attention measurements of EXPERIMENTS.md ("Block-sparse
# attention"), four jobs at once, each on THREADS threads (default 4; a
# 16-core machine runs all four without sharing cores):
#
#   sweep  trainer bench attention, sliding_window (window 256), bigbird,
#          dilated and strided with their defaults, T = 1K .. 64K: slopes
#   flash  flash against sliding_window (window 256), T = 1K .. 16K
#   cores  BenchmarkSparseCores at T = 16K: the cores alone against flash x
#          the share of flash's scores each computes
#   model  the reference model (configs/bench/ref-t1024.yaml) at T = 4096,
#          whole training steps, flash and sliding_window alternating
#
# then, alone (nothing else running), with ALONE_THREADS (default "1 16"):
#
#   cores-N  BenchmarkSparseCores at T = 16K on N threads (1: the kernels'
#            cost per tile with no parallel shape in the way)
#   alone-N  flash against sliding_window (window 256) at T = 16K, whole
#            layers, forward+backward, on N threads
#
#   scripts/bench-sparse.sh OUT [THREADS]
#
# With BIN set to a folder holding trainer and layers.test (built here with
# `go build -o BIN/trainer ./cmd/trainer; go test -c -o BIN/layers.test
# ./layers`), it runs those instead of building (a machine without Go).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 threads=${2:-4}
mkdir -p "$out"
if [ -z "${BIN:-}" ]; then
  BIN=bin
  mkdir -p bin
  go build -o bin/trainer ./cmd/trainer
  go test -c -o bin/layers.test ./layers
fi
T=$BIN/trainer
export GOMAXPROCS=$threads
$T bench attention --kinds sliding_window,bigbird,dilated,strided --set model.attention.window=256 \
  --T 1024,2048,4096,8192,16384,32768,65536 --reps 3 --out "$out/sweep" >"$out/sweep.txt" 2>&1 &
$T bench attention --kinds flash,sliding_window --set model.attention.window=256 \
  --T 1024,2048,4096,8192,16384 --reps 3 --out "$out/flash" >"$out/flash.txt" 2>&1 &
(cd layers && "../$BIN/layers.test" -test.run '^$' -test.bench SparseCores -test.benchtime 3x -sparse.T 16384) >"$out/cores.txt" 2>&1 &
(
  for round in 1 2; do
    for att in "kind=flash" "kind=sliding_window --set model.attention.window=256"; do
      echo "== round $round $att"
      # shellcheck disable=SC2086 # att holds two --set arguments
      $T bench --config bench/ref-t1024.yaml --set task.seq_len=4096 --set model.attention.$att \
        --warmup 1 --steps 3 2>&1 || true
    done
  done
) >"$out/model.txt" 2>&1 &
wait
for n in ${ALONE_THREADS:-1 16}; do
  (cd layers && GOMAXPROCS=$n "../$BIN/layers.test" -test.run '^$' -test.bench SparseCores -test.benchtime 3x -sparse.T 16384) >"$out/cores-$n.txt" 2>&1
  GOMAXPROCS=$n $T bench attention --kinds flash,sliding_window --set model.attention.window=256 --T 16384 --reps 3 --mode fwdbwd >"$out/alone-$n.txt" 2>&1
done
