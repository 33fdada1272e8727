#!/bin/sh
# eval MODEL DATA OUT: the mean absolute error of the model's prediction over the rows.
set -eu
model="$1"; data="$2"; out="$3"
m=$(cat "$model/model.txt")
awk -v m="$m" '{ d = $1 - m; if (d < 0) d = -d; t += d } END { printf "{\"mae\": %.6f, \"n\": %d}\n", t / NR, NR }' \
  "$data/rows.txt" > "$out/metrics.json"
cat "$out/metrics.json"
