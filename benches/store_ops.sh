#!/usr/bin/env bash
# Store operations (issue 6), on synthetic stores built by examples/synth_store.rs (real
# directories, content hashes, rows, references, derivation files and result links).
#
# Usage: benches/store_ops.sh gc [N]              # gc of a store of N paths (default 100000), half rooted
#        benches/store_ops.sh verify               # verify --check-contents against b3sum, same files
# Env:   KDBUILD (default target/release/kdbuild, built if missing), OUT (default benches/out),
#        B3SUM (default b3sum; `cargo install b3sum`).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
KDBUILD="${KDBUILD:-$root/target/release/kdbuild}"
OUT="${OUT:-$root/benches/out}"
B3SUM="${B3SUM:-b3sum}"
SYNTH="$root/target/release/examples/synth_store"
mode="${1:?usage: store_ops.sh gc [N] | verify}"

(cd "$root" && cargo build --release --quiet && cargo build --release --quiet --example synth_store)

# Runs a command with its stdout in $work/last.json; prints its wall seconds.
secs() { local t0 t1; t0=$(date +%s.%N); "$@" > "$work/last.json"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
# A field of the last JSON output: gcf 'len(d["deleted"])'
gcf() { python3 -c "import json; d=json.load(open('$work/last.json')); print($1)"; }

case "$mode" in
gc)
  N="${2:-100000}"
  work="$OUT/gc-$N"; rm -rf "$work"; mkdir -p "$work"
  "$SYNTH" "$work/store" --paths "$N" --rooted 50
  echo "store: $(du -sh "$work/store" | cut -f1), $(find "$work/store" -maxdepth 1 | wc -l) entries"
  sync
  t=$(secs "$KDBUILD" --store "$work/store" gc --dry-run --json)
  echo "dry run: ${t}s wall; $(gcf 'len(d["deleted"])') would go, $(gcf 'd["live"]') live; mark $(gcf 'd["mark_ms"]') ms"
  t=$(secs "$KDBUILD" --store "$work/store" gc --json)
  echo "gc: ${t}s wall; deleted $(gcf 'len(d["deleted"])') paths and $(gcf 'd["derivations"]') derivations, kept $(gcf 'd["live"]'); mark $(gcf 'd["mark_ms"]') ms, sweep $(gcf 'd["sweep_ms"]') ms ($(gcf '", ".join(f"{k} {v} ms" for k, v in d["sweep_steps_ms"].items())'))"
  t=$(secs "$KDBUILD" --store "$work/store" gc --json)
  echo "gc again (nothing to delete): ${t}s wall; mark $(gcf 'd["mark_ms"]') ms, sweep $(gcf 'd["sweep_ms"]') ms"
  /usr/bin/time -f "peak memory of a gc: %M KiB" "$KDBUILD" --store "$work/store" gc >/dev/null
  echo "kdbuild_gc_s=$t"
  ;;
verify)
  for shape in "large 64 1 16777216" "small 4000 4 65536"; do
    set -- $shape
    name=$1 paths=$2 files=$3 bytes=$4
    work="$OUT/verify-$name"; rm -rf "$work"; mkdir -p "$work"
    "$SYNTH" "$work/store" --paths "$paths" --files "$files" --file-bytes "$bytes" --rooted 100 2>/dev/null
    list="$work/files"
    find "$work/store" -mindepth 2 -type f -name 'part*' | sort > "$list"
    total=$(xargs -a "$list" stat -c %s | awk '{ s += $1 } END { print s }')
    xargs -a "$list" cat > /dev/null   # warm the page cache
    best_k=999999 best_b=999999
    for _ in 1 2 3; do
      k=$(secs "$KDBUILD" --store "$work/store" --json verify --check-contents)
      b=$(secs xargs -a "$list" "$B3SUM")
      best_k=$(echo "if ($k < $best_k) $k else $best_k" | bc)
      best_b=$(echo "if ($b < $best_b) $b else $best_b" | bc)
    done
    mib=$(echo "$total / 1048576" | bc)
    echo "$name: $paths paths x $files files x $bytes B = $mib MiB; verify --check-contents ${best_k}s ($(echo "$total / $best_k / 1048576" | bc) MiB/s), b3sum ${best_b}s ($(echo "$total / $best_b / 1048576" | bc) MiB/s), verify/b3sum throughput $(echo "scale=2; $best_b / $best_k" | bc)"
  done
  ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
