#!/usr/bin/env bash
# Train every registered attention variant once and print a table of
# eval_accuracy, median step time, parameters and KV-cache bytes per token.
# Variants that declare causal support (trainer list --json: support.causal)
# train the embedded quickstart (MQAR), a decoder task; the others train
# configs/majority.yaml (an encoder task).
#
#   scripts/variants.sh [OUT_DIR] [extra --set KEY=VALUE ...]
#
# Environment: TRAINER=path uses a built trainer instead of building one (for
# a machine without Go); JOBS=n trains n variants at once, each with
# GOMAXPROCS=THREADS (default 1 when JOBS > 1), for a machine with many cores.
#
# Every figure comes from the runs' summary.json files under OUT_DIR
# (default runs/variants-<timestamp>). Takes ~1.5 min per variant on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/variants-$(date +%Y%m%d-%H%M%S)}
shift || true
extra=()
for s in "$@"; do extra+=(--set "$s"); done
mkdir -p "$out"
jobs=${JOBS:-1}
bin=${TRAINER:-}
if [ -z "$bin" ]; then
  go build -o "$out/trainer" ./cmd/trainer
  bin="$out/trainer"
fi
threads=${THREADS:-}
if [ -z "$threads" ] && [ "$jobs" -gt 1 ]; then threads=1; fi
variants=$("$bin" list | awk '/^ATTENTION/{a=1;next} /^$/{a=0} a && /^  [a-z]/{print $1}')
field() { { grep -o "\"$2\": *[^,}]*" "$1" || true; } | head -1 | sed 's/.*: *//; s/"//g'; }
printf '| variant | task | eval_accuracy | step ms (median) | params | KV bytes/token/layer | wall s |\n|---|---|---|---|---|---|---|\n' > "$out/table.md"
# The variants whose declaration says causal (in list --json, an entry's
# "name" is indented 6 spaces and its support's "causal" 8; tasks have no
# support).
causal=$("$bin" list --json | awk '/^  "attention"/{a=1} /^  "tasks"/{a=0}
  a && /^      "name": /{n=$2; gsub(/[",]/, "", n)} a && /^        "causal": true/{print n}')
task_of() { # variant -> "quickstart" or "majority"
  if printf '%s\n' $causal | grep -qx -- "$1"; then echo quickstart; else echo majority; fi
}
train_one() { # variant
  local v=$1 dir="$out/$1" cfg=()
  [ -f "$dir/summary.json" ] && return 0
  [ "$(task_of "$v")" = majority ] && cfg=(--config configs/majority.yaml)
  if ! ${threads:+env GOMAXPROCS=$threads} "$bin" train "${cfg[@]}" --set model.attention.kind="$v" "${extra[@]}" --out "$dir" > "$dir.log" 2>&1; then
    echo "$v failed: $(tail -1 "$dir.log")" >&2
  fi
}
running=0
for v in $variants; do
  train_one "$v" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait
for v in $variants; do
  s="$out/$v/summary.json"
  [ -f "$s" ] || continue
  kv=$(field "$s" kv_cache_bytes_per_token); kv=${kv:--}
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$v" "$(task_of "$v")" "$(field "$s" eval_accuracy)" "$(field "$s" step_ms_median)" \
    "$(field "$s" params)" "$kv" "$(field "$s" wall_seconds)" | tee -a "$out/table.md"
done
echo "table: $out/table.md"
