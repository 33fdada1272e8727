#!/bin/sh
# prep RAW OUT: gathers the numeric rows of every CSV file in RAW (sorted by name) into OUT.
set -eu
raw="$1"; out="$2"
for f in "$raw"/*.csv; do tail -n +2 "$f"; done > "$out/rows.txt"
wc -l < "$out/rows.txt" | tr -d ' ' > "$out/count"
echo "prep: $(cat "$out/count") rows from $raw"
