#!/usr/bin/env bash
# Planning, no-op and fresh-build overhead of kdbuild against Snakemake 9, on pipelines of the
# seed pipeline's shape: D datasets x 2 variants (teacher, student) x 4 chained stages, each
# student stage also depending on its teacher's stage (N = 8 D derivations).
#
# Usage: benches/plan_scale.sh N              # plan N derivations with both tools
#        benches/plan_scale.sh --builds 1000  # no-op and fresh realize of 1,000 trivial builds
# Env:   KDBUILD (default: target/release/kdbuild, built if missing), VENV (default .venv-bench),
#        OUT (default benches/out).
# The last line of each mode is `kdbuild_s=… snakemake_s=… ratio=…` (plus memory for planning).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
KDBUILD="${KDBUILD:-$root/target/release/kdbuild}"
VENV="${VENV:-$root/.venv-bench}"
OUT="${OUT:-$root/benches/out}"
mode=plan
if [ "${1:-}" = "--builds" ]; then mode=builds; shift; fi
N="${1:?usage: plan_scale.sh N | --builds N}"
D=$(( (N + 7) / 8 ))
N=$(( D * 8 ))

[ -x "$KDBUILD" ] || (cd "$root" && cargo build --release --quiet)
if [ ! -x "$VENV/bin/snakemake" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet 'snakemake>=9,<10'
fi
SNAKEMAKE="$VENV/bin/snakemake"

work="$OUT/$mode-$N"
rm -rf "$work"; mkdir -p "$work/kd" "$work/sm"

# ---------------------------------------------------------------- the two pipelines
datasets=$(seq -f 'd%05g' 1 "$D" | paste -sd, - | sed 's/\([^,]*\)/"\1"/g')
cat >"$work/kd/pipeline.toml" <<EOF
[pipeline]
name = "scale"

[matrix]
dataset = [$datasets]
variant = ["teacher", "student"]

[stages.s1]
target = "{variant}-{dataset}-s1"
kind = "command"
command = ["sh", "-c", "echo {target} > {out}/o"]
inputs.teacher = { target = "teacher-{dataset}-s1", when = { variant = "student" } }

[stages.s2]
target = "{variant}-{dataset}-s2"
kind = "command"
command = ["sh", "-c", "echo {target} > {out}/o"]
inputs.prev = "{variant}-{dataset}-s1"
inputs.teacher = { target = "teacher-{dataset}-s2", when = { variant = "student" } }

[stages.s3]
target = "{variant}-{dataset}-s3"
kind = "command"
command = ["sh", "-c", "echo {target} > {out}/o"]
inputs.prev = "{variant}-{dataset}-s2"
inputs.teacher = { target = "teacher-{dataset}-s3", when = { variant = "student" } }

[stages.s4]
target = "{variant}-{dataset}-s4"
kind = "command"
command = ["sh", "-c", "echo {target} > {out}/o"]
inputs.prev = "{variant}-{dataset}-s3"
inputs.teacher = { target = "teacher-{dataset}-s4", when = { variant = "student" } }
EOF

cat >"$work/sm/Snakefile" <<EOF
DATASETS = [$datasets]

rule all:
    input: expand("out/{variant}-{dataset}-s4", variant=["teacher", "student"], dataset=DATASETS)

rule teacher_s1:
    output: "out/teacher-{dataset}-s1"
    shell: "echo {output} > {output}"

rule student_s1:
    input: teacher="out/teacher-{dataset}-s1"
    output: "out/student-{dataset}-s1"
    shell: "echo {output} > {output}"
EOF
for s in 2 3 4; do
  p=$((s - 1))
  cat >>"$work/sm/Snakefile" <<EOF

rule teacher_s$s:
    input: prev="out/teacher-{dataset}-s$p"
    output: "out/teacher-{dataset}-s$s"
    shell: "echo {output} > {output}"

rule student_s$s:
    input: prev="out/student-{dataset}-s$p", teacher="out/teacher-{dataset}-s$s"
    output: "out/student-{dataset}-s$s"
    shell: "echo {output} > {output}"
EOF
done

# ---------------------------------------------------------------- measuring
# seconds and peak RSS (MiB) of a command, from GNU time
measure() { # $1 = label, rest = command (run in the current directory)
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$work/$label.time" "$@" >"$work/$label.out" 2>"$work/$label.err"
  read -r secs kb <"$work/$label.time"
  echo "$secs $((kb / 1024))"
}

KD=("$KDBUILD" --store "$work/kd/store" --pipeline "$work/kd/pipeline.toml")

echo "kdbuild: $("$KDBUILD" --version); snakemake: $("$SNAKEMAKE" --version); N=$N derivations ($D datasets x 2 variants x 4 stages)"
echo "machine: $(nproc) cores, $(uname -srm)"

if [ "$mode" = plan ]; then
  # Dry run / plan of everything, fresh state, best of 3.
  best() { sort -n | head -1; }
  kd_runs=(); sm_runs=()
  for _ in 1 2 3; do
    kd_runs+=("$(cd "$work/kd" && measure kd-plan "${KD[@]}" realize -n '*-s4')")
    sm_runs+=("$(cd "$work/sm" && measure sm-plan "$SNAKEMAKE" --snakefile "$work/sm/Snakefile" --directory "$work/sm" -n --quiet all)")
  done
  kd_best=$(printf '%s\n' "${kd_runs[@]}" | best)
  sm_best=$(printf '%s\n' "${sm_runs[@]}" | best)
  read -r kds kdm <<<"$kd_best"; read -r sms smm <<<"$sm_best"
  grep -c '^  [^ ]' "$work/kd-plan.out" | xargs echo "kdbuild planned jobs:"
  echo "kdbuild: ${kds}s ${kdm} MiB   snakemake: ${sms}s ${smm} MiB"
  echo "kdbuild_s=$kds snakemake_s=$sms ratio=$(python3 -c "print(round($sms/max($kds,0.001),1))") kdbuild_mib=$kdm snakemake_mib=$smm"
else
  # Fresh realize of N trivial builds with 2 at once, then a no-op realize of them, best of 3.
  read -r kd_fresh _ < <(cd "$work/kd" && measure kd-fresh "${KD[@]}" realize '*-s4' -j 2 --no-link)
  read -r sm_fresh _ < <(cd "$work/sm" && measure sm-fresh "$SNAKEMAKE" --snakefile "$work/sm/Snakefile" --directory "$work/sm" --quiet all -j 2)
  kd_noop=9999; sm_noop=9999
  for _ in 1 2 3; do
    read -r t _ < <(cd "$work/kd" && measure kd-noop "${KD[@]}" realize '*-s4' --no-link)
    kd_noop=$(python3 -c "print(min($kd_noop, $t))")
    read -r t _ < <(cd "$work/sm" && measure sm-noop "$SNAKEMAKE" --snakefile "$work/sm/Snakefile" --directory "$work/sm" --quiet all -j 2)
    sm_noop=$(python3 -c "print(min($sm_noop, $t))")
  done
  ls "$work/kd/store" | grep -c -- '-s[1-4]$' | xargs echo "kdbuild store paths:"
  ls "$work/sm/out" | wc -l | xargs echo "snakemake outputs:"
  echo "fresh -j2: kdbuild_s=$kd_fresh snakemake_s=$sm_fresh ratio=$(python3 -c "print(round($sm_fresh/max($kd_fresh,0.001),1))")"
  echo "no-op:     kdbuild_s=$kd_noop snakemake_s=$sm_noop ratio=$(python3 -c "print(round($sm_noop/max($kd_noop,0.001),1))")"
fi
