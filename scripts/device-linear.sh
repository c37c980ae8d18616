#!/bin/sh
# Issue 14's device runs (one call on the lent machine's CPU): the ListOps
# and MQAR comparisons with the linear-time variants, and bench attention's
# slopes for performer, tost and latte. Results under $OUT.
set -u
B=$PWD/bin/trainer
R=$OUT/r
mkdir -p $R
start=$(date +%s)
$B compare --config paper/lra-listops.yaml --workers 13 --threads 1 --out /tmp/lra-listops > $R/listops.log 2>&1
echo "listops done $(( $(date +%s) - start ))s" >> $R/times
$B compare --config paper/mqar-linear.yaml --workers 15 --threads 1 --out /tmp/mqar-linear > $R/mqar.log 2>&1
echo "mqar done $(( $(date +%s) - start ))s" >> $R/times
GOMAXPROCS=16 $B bench attention --kinds performer,tost,latte,linear --causal=false --T 1024,4096,16384,65536 --reps 3 --out /tmp/bench-bi > $R/bench-bi.txt 2>&1
GOMAXPROCS=16 $B bench attention --kinds performer,tost,latte,linear --T 1024,4096,16384,65536 --reps 3 --out /tmp/bench-causal > $R/bench-causal.txt 2>&1
echo "bench done $(( $(date +%s) - start ))s" >> $R/times
GOMAXPROCS=16 $B bench attention --kinds linear,flash --T 16384 --reps 3 > $R/bench-16k.txt 2>&1
echo "all done $(( $(date +%s) - start ))s" >> $R/times
cd /tmp && tar czf $OUT/runs.tgz --exclude='*.safetensors' lra-listops mqar-linear bench-bi bench-causal
