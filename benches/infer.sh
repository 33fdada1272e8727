#!/usr/bin/env bash
# Inference throughput on one core: the full evaluation-mode pipeline (batching, VGAE, GAT,
# fusion state, Q-network, fused rule) of the teacher and the student over the 901 windows of
# DoS-1.csv, against a CAN bus's real-time rate (~4,000 frames/s = 40 windows of 100 frames),
# by the inference engine (what `kdgat.eval` runs on the CPU) and by the candle models. Each
# round also checks that the engine's decisions equal candle's.
# The best of several rounds is reported (other processes share this machine).
#
# usage: benches/infer.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cargo build -q --release --example kdgat_bench
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for s in small large; do
    RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1 taskset -c 0 \
      target/release/examples/kdgat_bench infer --size "$s" --batch 64 --reps 20 2>/dev/null
  done
done | tee /dev/stderr | python3 -c '
import re, sys
best = {}
for line in sys.stdin:
    m = re.match(r"(candle|engine) (\w+) inference.*?: (\d+) windows in ([\d.]+) ms", line)
    if m:
        key = (m.group(2), m.group(1))
        best[key] = min(best.get(key, 1e9), float(m.group(4)) / int(m.group(3)))
print("\n| model | path | us per window | windows/s | x real time (40 windows/s) |")
print("|---|---|---|---|---|")
for s in ("small", "large"):
    for path in ("engine", "candle"):
        if (s, path) in best:
            t = best[(s, path)]
            w = 1e3 / t
            name = {"small": "student", "large": "teacher"}[s]
            print(f"| {name} ({s}) | {path} | {t * 1e3:.1f} | {w:.0f} | {w/40:.0f} |")
'
