#!/bin/sh
# train DATA OUT SCALE VARIANT [TEACHER]: "trains" a model (the scaled mean of the rows); a
# student also reads its teacher's model and moves halfway towards it.
set -eu
data="$1"; out="$2"; scale="$3"; variant="$4"; teacher="${5:-}"
mean=$(awk -v s="$scale" '{ t += $1 } END { printf "%.6f", s * t / NR }' "$data/rows.txt")
if [ -n "$teacher" ]; then
  t=$(cat "$teacher/model.txt")
  mean=$(awk -v a="$mean" -v b="$t" 'BEGIN { printf "%.6f", (a + b) / 2 }')
  echo "train: $variant distilled from $teacher"
fi
echo "$mean" > "$out/model.txt"
echo "train: $variant model = $mean"
