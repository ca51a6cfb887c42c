#!/bin/bash
# Issue 15's figures: layer-wise distillation of compressed students in its
# three modes, judged on the model. For each model and student:
#   file         the calibration file's 256 sampled rows per layer (what
#                `distill layers --calibration` did before), independent
#   independent  every calibration token, the teacher's inputs
#   sequential   every calibration token, the student's own inputs
#   block        (MODES=block) every linear of a decoder block together
# all judged on a different text (perplexity, KL(teacher ‖ student)).
#   scripts/distill-compare.sh [WORKDIR] [MODEL...]
# Defaults: /tmp/shears-distill, assets/tiny-llama and the golden Llama,
# Qwen3 and Mistral models (given tiny-llama's byte-level tokenizer: 256
# ids, which their 512-id vocabularies hold). CALIB and EVAL pick the texts (default
# README.md and ../shared/DESIGN.md), STUDENTS the students (default
# "magnitude wanda w4a16"), MODES the modes (default all three), BACKEND
# the backend (default cpu), FLAGS more
# `distill layers` flags. Build target/release/shears first.
set -e
B=$(realpath ${SHEARS:-target/release/shears})
W=${1:-/tmp/shears-distill}; shift || true
MODELS=${*:-assets/tiny-llama tests/golden/forward/llama tests/golden/forward/qwen3 tests/golden/forward/mistral}
CALIB=$(realpath ${CALIB:-README.md}); EVAL=$(realpath ${EVAL:-../shared/DESIGN.md})
BACKEND=${BACKEND:-cpu}
mkdir -p $W
for m in $MODELS; do
  name=$(basename $m); d=$W/$name
  rm -rf $d; mkdir -p $d; cp -r $m $d/teacher
  rm -f $d/teacher/expected.safetensors
  # Golden models have no tokenizer: tiny-llama's byte-level one (256 ids).
  [ -f $d/teacher/tokenizer.json ] || cp assets/tiny-llama/tokenizer.json $d/teacher/
  T=$d/teacher
  $B -q --backend $BACKEND calibrate $T --text $CALIB -o $d/calib.safetensors
  for s in ${STUDENTS:-magnitude wanda w4a16}; do
    case $s in
      magnitude) $B -q --backend $BACKEND prune $T -o $d/$s --sparsity 0.5 --scope row --method magnitude ;;
      wanda) $B -q --backend $BACKEND prune $T -o $d/$s --sparsity 0.5 --scope row --method wanda --calibration $d/calib.safetensors ;;
      w4a16*) $B -q --backend $BACKEND quantize $T -o $d/$s --scheme $s --group-size auto ;;
      *) $B -q --backend $BACKEND quantize $T -o $d/$s --scheme $s ;;  # fp8, nvfp4a16, mxfp4a16, w8a16
    esac
    for mode in ${MODES:-file independent sequential}; do
      case $mode in
        file) src="--calibration $d/calib.safetensors" ;;
        *) src="--calibration-text $CALIB --mode $mode" ;;
      esac
      /usr/bin/time -o $d/time -f "%e %M" $B -q --backend $BACKEND distill layers --teacher $T \
        --student $d/$s -o $d/$s-$mode $src --eval-text $EVAL --keep-worse \
        --report $d/$s-$mode.json $FLAGS
      read wall rss < $d/time
      python3 - $d/$s-$mode.json $name $s $mode $wall $rss <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); m = r["model"]
b, a = m["before"], m["after"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {m['teacher_perplexity']:.2f} | "
      f"{b['perplexity']:.2f} → {a['perplexity']:.2f} | {b['kl_mean']:.4f} → {a['kl_mean']:.4f} | "
      f"{r['mean_error_before']:.4f} → {r['mean_error_after']:.4f} | {float(sys.argv[5]):.1f} s | "
      f"{int(sys.argv[6]) // 1024} MB |")
PY
    done
  done
done
