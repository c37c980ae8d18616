#!/bin/sh
# Issue 16's runs on the lent GPU machine, in one call: carry bin/ with
# bin/trainer-cuda (scripts/build-cuda.sh) and bin/trainer (the CPU build:
# CGO_ENABLED=0 go build -ldflags="-s -w" -o bin/trainer ./cmd/trainer), and
# for the speed part PyTorch's reference script (TORCH_REF, default
# torch_ref.py beside this checkout's shared/bench). Results in
# $OUT/gpu-results.tgz (the device tool returns few files: one archive).
#
#   PARTS="check parity quickstart variants speed copies long"   (default: all)
#   check       trainer-cuda gpucheck: every GPU op against the CPU in float64,
#               and the flash op's time at T = 16384 (batch 1, 4 heads of 32,
#               causal), forward and forward+backward
#   parity      the reference model (bench/ref-t1024.yaml, standard attention),
#               50 steps logged every step on the CPU (float32) and on the GPU,
#               and the largest relative difference of their losses
#   quickstart  the embedded quickstart trained on the GPU, then resumed on the
#               CPU for 50 more steps, and its checkpoint evaluated on the CPU
#               and on the GPU; then 400 steps on the CPU resumed on the GPU
#   variants    the quickstart on the GPU with gqa + rope, moh + xpos,
#               gpa + alibi and mqa + partial_rope; mla (refused: no GPU path)
#   speed       the reference model's step (flash attention) at T = 256, 1024,
#               4096 (batch 8) and 16384 (batch 1) on the GPU, each beside
#               PyTorch's (--device cuda --attn sdpa, fp32); then T = 4096 and
#               16384 with the products in TF32 on both sides (tf32, --tf32)
#   copies      the reference model at 2, 4 and 8 layers: the host<->device
#               copies of one step (trainer bench names them)
#   long        T = 65536, batch 1, flash: training steps on the GPU
#
# PARITY_TIMEOUT (seconds, default 120) bounds each GPU parity run;
# STOP_ON_FAIL=1 skips the parts after parity when its GPU run fails.
set -u
# A GPU command that hangs is stopped with SIGQUIT, on which Go prints every
# goroutine's stack into its log: where it waited.
export GOTRACEBACK=all
C=$PWD/bin/trainer-cuda
P=$PWD/bin/trainer
TORCH_REF=${TORCH_REF:-$PWD/shared/bench/torch_ref.py}
R=/tmp/gpu-results
rm -rf $R
mkdir -p $R
start=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - start ))s" >> $R/times; }
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv > $R/gpu.txt 2>&1
# losses PREFIX: the step and loss of each row of PREFIX/metrics.jsonl
losses() { sed -n 's/.*"step":\([0-9]*\),.*"loss":\([-0-9.eE+]*\).*/\1 \2/p' "$1/metrics.jsonl"; }
for part in ${PARTS:-check parity quickstart variants speed copies long}; do
case $part in
check)
  timeout -s QUIT 300 $C gpucheck > $R/gpucheck.txt 2>&1; echo "rc=$?" >> $R/gpucheck.txt
  stamp check ;;
parity)
  set -- --config configs/bench/ref-t1024.yaml --set train.steps=50 --set train.log_every=1 --set train.eval_examples=8
  timeout 300 $P train "$@" --device cpu --out /tmp/parity-cpu > $R/parity-cpu.log 2>&1
  if ! timeout -s QUIT ${PARITY_TIMEOUT:-120} $C train "$@" --device cuda --out /tmp/parity-gpu > $R/parity-gpu.log 2>&1; then
    # again, each kernel waited for and checked: the error names the kernel
    ATTNLAB_CUDA_SYNC=1 timeout -s QUIT ${PARITY_TIMEOUT:-120} $C train "$@" --device cuda --out /tmp/parity-gpu-sync > $R/parity-gpu-sync.log 2>&1
  fi
  losses /tmp/parity-cpu > $R/parity-cpu.txt
  losses /tmp/parity-gpu > $R/parity-gpu.txt
  join $R/parity-cpu.txt $R/parity-gpu.txt | awk '{d = $2 - $3; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > m) m = r; n++}
    END {printf "%d steps compared, largest relative difference of the losses %.3g\n", n, m}' > $R/parity.txt
  stamp parity
  # STOP_ON_FAIL=1: the parts after it would only fail the same way
  if [ -n "${STOP_ON_FAIL:-}" ] && [ "$(wc -l < $R/parity-gpu.txt)" -lt 50 ]; then
    echo "the GPU run did not log 50 steps: the later parts are not run" >> $R/parity.txt
    break
  fi ;;
quickstart)
  timeout -s QUIT 300 $C train --device cuda --out /tmp/qs > $R/quickstart-gpu.log 2>&1; echo "rc=$?" >> $R/quickstart-gpu.log
  cp /tmp/qs/summary.json $R/quickstart-gpu-summary.json 2>/dev/null
  timeout 300 $P train --resume /tmp/qs --device cpu --set train.steps=1050 > $R/quickstart-resume-cpu.log 2>&1; echo "rc=$?" >> $R/quickstart-resume-cpu.log
  cp /tmp/qs/summary.json $R/quickstart-resumed-summary.json 2>/dev/null
  timeout 300 $P eval --run /tmp/qs --device cpu > $R/quickstart-eval-cpu.log 2>&1; echo "rc=$?" >> $R/quickstart-eval-cpu.log
  timeout -s QUIT 120 $C eval --run /tmp/qs --device cuda > $R/quickstart-eval-gpu.log 2>&1; echo "rc=$?" >> $R/quickstart-eval-gpu.log
  # the other way: 400 steps on the CPU, resumed on the GPU to 1000
  timeout 300 $P train --device cpu --set train.steps=400 --out /tmp/c2g > $R/c2g-cpu.log 2>&1; echo "rc=$?" >> $R/c2g-cpu.log
  timeout -s QUIT 300 $C train --resume /tmp/c2g --device cuda --set train.steps=1000 > $R/c2g-resume-gpu.log 2>&1; echo "rc=$?" >> $R/c2g-resume-gpu.log
  stamp quickstart ;;
variants)
  # the quickstart with other attention and positions on the GPU; mla has no GPU path (refused)
  for v in gqa:rope moh:xpos gpa:alibi mqa:partial_rope mla:learned; do
    timeout -s QUIT 300 $C train --device cuda --set model.attention.kind=${v%:*} --set model.positional=${v#*:} --out /tmp/v-${v%:*} > $R/variant-${v%:*}-${v#*:}.log 2>&1
    echo "rc=$?" >> $R/variant-${v%:*}-${v#*:}.log
  done
  stamp variants ;;
speed)
  for tb in 256:8 1024:8 4096:8 16384:1; do
    T=${tb%:*} B=${tb#*:}
    timeout -s QUIT 120 $C bench --device cuda --config bench/ref-t1024.yaml --set model.attention.kind=flash \
      --set task.seq_len=$T --set train.batch_size=$B --steps 20 --warmup 3 > $R/bench-gpu-T$T.txt 2>&1
    timeout 300 python3 $TORCH_REF --device cuda --attn sdpa --T $T --B $B --steps 30 --warmup 5 > $R/torch-T$T.txt 2>&1
  done
  for tb in 4096:8 16384:1; do # the products on TF32 tensor cores, both sides
    T=${tb%:*} B=${tb#*:}
    timeout -s QUIT 120 $C bench --device cuda --config bench/ref-t1024.yaml --set model.attention.kind=flash --set tf32=true \
      --set task.seq_len=$T --set train.batch_size=$B --steps 20 --warmup 3 > $R/bench-gpu-tf32-T$T.txt 2>&1
    timeout 300 python3 $TORCH_REF --device cuda --attn sdpa --tf32 --T $T --B $B --steps 30 --warmup 5 > $R/torch-tf32-T$T.txt 2>&1
  done
  stamp speed ;;
copies)
  for L in 2 4 8; do
    timeout -s QUIT 120 $C bench --device cuda --config bench/ref-t1024.yaml --set model.n_layers=$L --steps 5 --warmup 1 > $R/bench-gpu-layers$L.txt 2>&1
  done
  stamp copies ;;
long)
  timeout -s QUIT 300 $C bench --device cuda --config bench/ref-t1024.yaml --set model.attention.kind=flash \
    --set task.seq_len=65536 --set train.batch_size=1 --steps 3 --warmup 1 > $R/bench-gpu-T65536.txt 2>&1; echo "rc=$?" >> $R/bench-gpu-T65536.txt
  stamp long ;;
esac
done
tar czf $OUT/gpu-results.tgz -C /tmp gpu-results
