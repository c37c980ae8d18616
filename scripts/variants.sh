#!/usr/bin/env bash
# Train every registered attention variant once and print a table of
# eval_accuracy, median step time, parameters and KV-cache bytes per token.
# Decoder-capable variants train the embedded quickstart (MQAR); variants
# that refuse decoder models train configs/majority.yaml (an encoder task).
#
#   scripts/variants.sh [OUT_DIR] [extra --set KEY=VALUE ...]
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
go build -o "$out/trainer" ./cmd/trainer
bin="$out/trainer"
variants=$("$bin" list | awk '/^ATTENTION/{a=1;next} /^$/{a=0} a && /^  [a-z]/{print $1}')
field() { grep -o "\"$2\": *[^,}]*" "$1" | head -1 | sed 's/.*: *//; s/"//g'; }
printf '| variant | task | eval_accuracy | step ms (median) | params | KV bytes/token/layer | wall s |\n|---|---|---|---|---|---|---|\n' > "$out/table.md"
for v in $variants; do
  cfg=() task=quickstart
  if ! "$bin" info --set model.attention.kind="$v" >/dev/null 2>&1; then
    cfg=(--config configs/majority.yaml) task=majority
  fi
  dir="$out/$v"
  if [ ! -f "$dir/summary.json" ]; then
    "$bin" train "${cfg[@]}" --set model.attention.kind="$v" "${extra[@]}" --out "$dir" > "$dir.log" 2>&1 || { echo "$v failed: $(tail -1 "$dir.log")"; continue; }
  fi
  s="$dir/summary.json"
  kv=$(field "$s" kv_cache_bytes_per_token); kv=${kv:--}
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$v" "$task" "$(field "$s" eval_accuracy)" "$(field "$s" step_ms_median)" \
    "$(field "$s" params)" "$kv" "$(field "$s" wall_seconds)" | tee -a "$out/table.md"
done
echo "table: $out/table.md"
