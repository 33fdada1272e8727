#!/usr/bin/env bash
# Training throughput (forward in train mode + weighted CE + backward) of the teacher GAT,
# candle (kdbuild) vs PyTorch Geometric, on the same batch (64 windows of DoS-1.csv) and the
# same initial weights. Rounds alternate between the
# two so that load from other processes hits both alike; the best round of each is reported.
#
# usage: benches/gat_train.sh [rounds]      (creates .venv-pyg with torch + torch_geometric,
#                                            about 5 GB, on first use)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
if [ ! -x .venv-pyg/bin/python ]; then
  python3 -m venv .venv-pyg
  .venv-pyg/bin/pip install -q torch torch_geometric safetensors
fi
cargo build -q --release --example kdgat_bench
bench=target/release/examples/kdgat_bench
batch=$(mktemp --suffix=.safetensors)
trap 'rm -f "$batch"' EXIT
$bench train-gat --iters 1 --dump "$batch" >/dev/null 2>&1
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for t in 1 2; do
    RAYON_NUM_THREADS=$t $bench train-gat --iters 20 2>/dev/null
    .venv-pyg/bin/python -W ignore benches/pyg_gat_train.py "$batch" --threads $t --iters 20
  done
done | tee /dev/stderr | python3 -c '
import re, sys
best = {}
for line in sys.stdin:
    m = re.match(r"(candle|PyG).*\((?:\w+, )?(\d) threads?\).*?([\d.]+) ms/step wall.*?([\d.]+) ms/step CPU", line)
    if m:
        k = (m.group(1), m.group(2))
        w, c = float(m.group(3)), float(m.group(4))
        b = best.get(k, (1e9, 1e9))
        best[k] = (min(b[0], w), min(b[1], c))
print("\n| threads | candle ms/pass (graphs/s) | PyG ms/pass (graphs/s) | candle / PyG throughput |")
print("|---|---|---|---|")
for t in ("1", "2"):
    c, p = best.get(("candle", t)), best.get(("PyG", t))
    if c and p:
        print(f"| {t} | {c[0]:.1f} ({64e3/c[0]:.0f}) | {p[0]:.1f} ({64e3/p[0]:.0f}) | {p[0]/c[0]:.2f}x |")
'
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
