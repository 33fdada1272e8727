#!/usr/bin/env bash
# Reading + windowing throughput on one core (issue 3): parse every frame of a real CAN file
# (zips decompressed in place), build the vocabulary and every window's graph.
# Release build, one thread (RAYON_NUM_THREADS=1; the reader is single-threaded anyway),
# pinned to one CPU with taskset when available.
#
#   benches/read_throughput.sh [DATA_DIR]      # default: $KDBUILD_SHARED_DATA or ../shared/data/can
#
# Figures go to stdout; BENCHMARKS.md records what was measured.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${KDBUILD_SHARED_DATA:-../shared/data/can}}"
repeat="${REPEAT:-5}"
cargo build --release --example read_throughput >&2
bin=target/release/examples/read_throughput
pin=()
if command -v taskset >/dev/null; then pin=(taskset -c 0); fi
export RAYON_NUM_THREADS=1
run() { "${pin[@]}" "$bin" "$@" --repeat "$repeat"; echo; }
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -m) $(nproc) CPUs; $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //')"
# The largest real file: CICIoV2024 benign, 57.7 MB unzipped.
run "$data/cic-iov2024/decimal_benign.csv.zip" cic-iov2024
# DAGA: 25.9 MB unzipped, DLC in bits.
run "$data/daga-volvo-v40/clean_V40_03.can.zip" daga
# The primary format (CRLF, 3.6 MB).
run "$data/can-train-and-test/DoS-1.csv" can-train-and-test
# With the 11 edge features as well.
run "$data/cic-iov2024/decimal_benign.csv.zip" cic-iov2024 --edge-features
