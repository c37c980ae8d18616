#!/usr/bin/env bash
# Times the training step of one config under two attention variants, side
# by side: runs alternate A B A B ... ROUNDS times, each run's figure is its
# own median step time over the config's steps (summary.json), and the
# script prints both medians over the rounds, the ratio B/A per round and its
# median. One thread each (GOMAXPROCS=1, pinned to CPU 0 when taskset exists).
#
#   scripts/compare-steps.sh CONFIG ROUNDS KIND_A KIND_B [KEY=VALUE ...]
#   scripts/compare-steps.sh configs/bench/ref-t1024.yaml 3 standard flash
set -euo pipefail
cd "$(dirname "$0")/.."
cfg=$1 rounds=$2 a=$3 b=$4
shift 4
sets=()
for s in "$@"; do sets+=(--set "$s"); done
mkdir -p bin
go build -o bin/trainer ./cmd/trainer
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pin=()
if command -v taskset >/dev/null; then pin=(taskset -c 0); fi
one() { # kind -> "step_ms peak_rss_mib"
  rm -rf "$tmp/run"
  GOMAXPROCS=1 "${pin[@]}" bin/trainer train --config "$cfg" --set model.attention.kind="$1" "${sets[@]}" --out "$tmp/run" >/dev/null
  local s="$tmp/run/summary.json"
  echo "$(grep -o '"step_ms_median": *[0-9.e+-]*' "$s" | sed 's/.*: *//') $(grep -o '"peak_rss_bytes": *[0-9]*' "$s" | sed 's/.*: *//')"
}
for r in $(seq "$rounds"); do
  ra=$(one "$a"); rb=$(one "$b")
  echo "round $r: $a $ra | $b $rb" >&2
  echo "$ra $rb" >>"$tmp/rows"
done
awk -v a="$a" -v b="$b" -v cfg="$cfg" '
function median(x, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
  return n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2 }
{ n++; ta[n] = $1; ma[n] = $2; tb[n] = $3; mb[n] = $4; ra[n] = $3 / $1 }
END {
  printf "%s, 1 thread, %d alternating rounds (medians)\n", cfg, n
  printf "%-12s %10s %12s\n", "variant", "step ms", "peak RSS MiB"
  printf "%-12s %10.1f %12.0f\n", a, median(ta, n), median(ma, n) / 2^20
  printf "%-12s %10.1f %12.0f\n", b, median(tb, n), median(mb, n) / 2^20
  printf "ratio %s/%s: %.3f (per round, median)\n", b, a, median(ra, n)
}' "$tmp/rows"
