#!/usr/bin/env bash
# The 5-seed comparison of issue 5 on the digits data: a 16-unit student
# distilled from assets/digits-teacher.safetensors against the same student
# trained on labels alone with the same budget, and the 256,128 teacher
# retrained per seed. Every run uses the teacher's split (split seed 0,
# 25% test) so no student is tested on rows the teacher trained on; the
# seed varies the initial weights and the batch order.
#
#   cargo build --release -p shears-cli
#   bash assets/digits-compare.sh            # or SHEARS=path/to/shears
#
# Prints each run's test accuracy and mean ± std (sample std, n−1) per kind.
set -euo pipefail
cd "$(dirname "$0")/.."
SHEARS=${SHEARS:-target/release/shears}
SEEDS=${SEEDS:-"1 2 3 4 5"}
EPOCHS=${EPOCHS:-60}
BATCH=${BATCH:-32}
LR=${LR:-0.001}
T=${T:-4}
ALPHA=${ALPHA:-0.5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

common=(--backend cpu --quiet --data assets/digits.csv.gz --split-seed 0
        --epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR" --force)
acc() { sed -n 's/.*"test_accuracy": \([0-9.]*\).*/\1/p' "$1"; }

for s in $SEEDS; do
  "$SHEARS" train "${common[@]}" --hidden 256,128 --seed "$s" \
    -o "$work/t$s.safetensors" --report "$work/teacher-$s.json" >/dev/null
  "$SHEARS" train "${common[@]}" --hidden 16 --seed "$s" \
    -o "$work/l$s.safetensors" --report "$work/labels-$s.json" >/dev/null
  "$SHEARS" distill model "${common[@]}" --hidden 16 --seed "$s" \
    --teacher assets/digits-teacher.safetensors --temperature "$T" --alpha "$ALPHA" \
    -o "$work/d$s.safetensors" --report "$work/distilled-$s.json" >/dev/null
  printf 'seed %s: teacher %s  labels-only %s  distilled %s\n' "$s" \
    "$(acc "$work/teacher-$s.json")" "$(acc "$work/labels-$s.json")" \
    "$(acc "$work/distilled-$s.json")"
done

echo
printf '%-24s %s\n' "model (test accuracy)" "mean ± std over seeds: $SEEDS"
for kind in teacher labels distilled; do
  case $kind in
    teacher) name="teacher 256,128" ;;
    labels) name="student 16, labels" ;;
    distilled) name="student 16, distilled" ;;
  esac
  for s in $SEEDS; do acc "$work/$kind-$s.json"; done | awk -v name="$name" '
    { x[NR] = $1; sum += $1 }
    END {
      mean = sum / NR
      for (i = 1; i <= NR; i++) ss += (x[i] - mean) ^ 2
      sd = NR > 1 ? sqrt(ss / (NR - 1)) : 0
      printf "%-24s %.2f%% ± %.2f%%\n", name, 100 * mean, 100 * sd
    }'
done
