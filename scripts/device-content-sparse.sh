#!/bin/sh
# Issue 13's device runs on the lent machine's CPU (16 cores), in one call:
# the content-based sparse variants in the ListOps and MQAR comparisons and
# bench attention's slopes and 16K timings. Results under $OUT.
#
#   PART=train-rh   ListOps (routing, histogram) and mqar-local (routing)
#   PART=bench-rh   slopes over T = 1K..64K for routing (causal) and
#                   histogram (bidirectional, bins of 64), then each at 16K
#                   against flash
#   PART=train-nsa  ListOps and mqar-local for nsa
#   PART=bench-nsa  nsa's slopes over 1K..64K and nsa at 16K against flash,
#                   next to topk's slopes over 1K..64K (8 threads each)
#   PART=memory     configs/paper/memory-recall.yaml (issue 15's memory models),
#                   then trainer bench of rmt, memformer and hmt (segments of 64, the
#                   copy task, batch 4) at T = 1K..16K, and the plain model to 4K
#                   (MW workers for the sweep, KINDS the memory kinds benched,
#                   PLAIN=0 skips the plain model)
#   PART=memory-long  rmt (4 and 8 memory tokens, lr 1e-3 and 3e-3) and memformer on
#                   memory-recall's task for 3000 steps instead of 1000
#
# The sweeps are the shipped ones (configs/paper/lra-listops.yaml,
# mqar-local.yaml) restricted to the named variants (SWEEPS holds such
# copies); every other run of those sweeps ran earlier and is unchanged.
set -u
B=$PWD/bin/trainer
R=$OUT/r
mkdir -p $R
start=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - start ))s" >> $R/times; }
case ${PART:?} in
train-rh|train-nsa)
  S=${SWEEPS:-configs/paper}
  $B compare --config $S/lra-listops.yaml --workers ${LW:-2} --threads 2 --out /tmp/lra-listops > $R/listops.log 2>&1 &
  $B compare --config $S/mqar-local.yaml --workers ${MW:-2} --threads 2 --out /tmp/mqar-local > $R/mqar.log 2>&1 &
  wait
  stamp train
  cd /tmp && tar czf $OUT/runs.tgz --exclude='*.safetensors' lra-listops mqar-local ;;
bench-rh)
  T=1024,2048,4096,8192,16384,32768,65536
  GOMAXPROCS=8 $B bench attention --kinds routing --T $T --reps 3 --out /tmp/b-routing > $R/routing.txt 2>&1 &
  GOMAXPROCS=8 $B bench attention --kinds histogram --causal=false --set model.attention.bin_size=64 --T $T --reps 3 --out /tmp/b-histogram > $R/histogram.txt 2>&1 &
  wait
  stamp slopes
  GOMAXPROCS=16 $B bench attention --kinds flash,routing --T 16384 --reps 3 > $R/routing-16k.txt 2>&1
  GOMAXPROCS=16 $B bench attention --kinds flash,histogram --causal=false --set model.attention.bin_size=64 --T 16384 --reps 3 > $R/histogram-16k.txt 2>&1
  stamp 16k ;;
bench-nsa)
  T=1024,2048,4096,8192,16384,32768,65536
  GOMAXPROCS=8 $B bench attention --kinds nsa --T $T --reps 3 --out /tmp/b-nsa > $R/nsa.txt 2>&1 &
  GOMAXPROCS=8 $B bench attention --kinds topk --T $T --reps 1 --out /tmp/b-topk > $R/topk.txt 2>&1 &
  wait
  stamp slopes
  GOMAXPROCS=16 $B bench attention --kinds flash,nsa --T 16384 --reps 3 > $R/nsa-16k.txt 2>&1
  stamp 16k ;;
memory)
  S=${SWEEPS:-configs/paper}
  $B compare --config $S/memory-recall.yaml --workers ${MW:-6} --threads ${MT:-1} --out /tmp/memory-recall > $R/memory.log 2>&1
  stamp memory
  for k in ${KINDS:-rmt memformer hmt}; do
    for T in 1024 2048 4096 8192 16384; do
      GOMAXPROCS=16 $B bench --set task.kind=copy --set task.seq_len=$T --set model.memory.kind=$k \
        --set model.memory.segment=64 --set train.batch_size=4 --steps 3 --warmup 1 --json 2>/dev/null
    done > $R/bench-$k.jsonl
  done
  [ "${PLAIN:-1}" = 1 ] && for T in 1024 2048 4096; do
    GOMAXPROCS=16 $B bench --set task.kind=copy --set task.seq_len=$T --set train.batch_size=4 --steps 3 --warmup 1 --json 2>/dev/null
  done > $R/bench-plain.jsonl
  stamp bench
  cd /tmp && tar czf $OUT/memory.tgz --exclude='*.safetensors' memory-recall ;;
memory-long)
  common="--set task.kind=passkey --set task.seq_len=64 --set task.digits=5 --set task.depth=0
    --set model.d_model=64 --set model.n_layers=2 --set model.positional=learned
    --set model.memory.segment=16 --set model.memory.bptt_segments=0 --set train.lr=1.0e-3
    --set train.schedule=cosine --set train.warmup_steps=50 --set train.batch_size=16
    --set train.eval_every=1000 --set train.eval_examples=512 --set train.checkpoint_every=0 --set train.steps=3000"
  run() { name=$1; shift; GOMAXPROCS=2 $B train $common "$@" --out /tmp/long/$name > $R/$name.log 2>&1; }
  run rmt --set model.memory.kind=rmt &
  run rmt-8 --set model.memory.kind=rmt --set model.memory.memory_tokens=8 &
  run rmt-lr3e-3 --set model.memory.kind=rmt --set train.lr=3.0e-3 &
  run memformer --set model.memory.kind=memformer &
  wait
  stamp memory-long ;;
esac
