#!/bin/sh
# LRA's speed and memory table on the lent machine's CPU (16 cores), one
# run at a time; resumable (a second call continues), results tarred to $OUT.
set -u
B=$PWD/bin/trainer
mkdir -p $OUT/r runs
start=$(date +%s)
CONFIG=configs/paper/lra-speed.yaml DIR=runs/lra-speed
if [ -n "${ONLY:-}" ]; then # a subset of the variants, e.g. ONLY="standard linear"
  CONFIG=/tmp/lra-speed-only.yaml DIR=runs/lra-speed-only
  pat=$(echo $ONLY | sed 's/ /|/g')
  grep -Ev "^    - \{kind: " configs/paper/lra-speed.yaml | sed '/^  model.attention:/q' > $CONFIG
  grep -E "^    - \{kind: ($pat)[,}]" configs/paper/lra-speed.yaml >> $CONFIG
  echo "seeds: [1]" >> $CONFIG
fi
timeout ${SPEED_LIMIT:-500} $B compare --config $CONFIG --workers 1 --threads 16 --out $DIR > $OUT/r/speed.log 2>&1
echo "speed: rc $? after $(( $(date +%s) - start ))s" >> $OUT/r/times
if [ -n "${BENCH:-}" ]; then
  GOMAXPROCS=16 $B bench attention --kinds linear,flash --T 16384 --reps 3 > $OUT/r/bench-16k.txt 2>&1
  GOMAXPROCS=16 $B bench attention --kinds linear --T 1024,4096,16384,65536 --reps 3 > $OUT/r/bench-linear.txt 2>&1
  GOMAXPROCS=16 $B bench attention --kinds linear --causal=false --T 1024,4096,16384,65536 --reps 3 >> $OUT/r/bench-linear.txt 2>&1
  echo "bench after $(( $(date +%s) - start ))s" >> $OUT/r/times
fi
tar czf $OUT/speed.tgz --exclude='*.safetensors' $DIR
