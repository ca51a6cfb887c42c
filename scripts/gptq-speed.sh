#!/bin/bash
# Issue 12's whole-model figures: GPTQ w4a16 and SparseGPT 50% of a
# generated 2 GB Llama-shaped checkpoint (hidden 4096, intermediate 11008,
# 4 layers, vocab 32000), against round to nearest / magnitude, with XᵀX
# from `shears calibrate --gram` over 2048 tokens of the GPL-3 text.
#   scripts/gptq-speed.sh [DIR] [--backend B]
# Build target/release/shears first.
B=$(realpath ${SHEARS:-target/release/shears})
W=${1:-/tmp/shears-gptq}; shift
BK=${*:---backend cpu}
mkdir -p $W
if [ ! -d $W/model ]; then
  $B -q generate $W/model --hidden 4096 --intermediate 11008 --layers 4 --vocab 32000 --shard-size 1GB || exit 1
fi
T="/usr/bin/time -f %e_s_wall,_%M_KB_peak_RSS"
echo "== calibrate --gram, 2048 tokens"
$T $B -q calibrate $W/model --text /usr/share/common-licenses/GPL-3 --tokens 2048 --seq-len 512 --gram -o $W/cal.safetensors --force $BK
echo "== cp -r"
rm -rf $W/copy; $T cp -r $W/model $W/copy; rm -rf $W/copy
echo "== quantize w4a16 rtn"
$T $B -q quantize $W/model -o $W/rtn --scheme w4a16 --force $BK
echo "== quantize w4a16 gptq"
$T $B quantize $W/model -o $W/gptq --scheme w4a16 --method gptq --calibration $W/cal.safetensors --force $BK | grep -E "layers.0|total"
echo "== prune 50% sparsegpt"
$T $B prune $W/model -o $W/sgpt --sparsity 0.5 --method sparsegpt --calibration $W/cal.safetensors --force $BK | grep -E "layers.0|total"
rm -rf $W/rtn $W/gptq $W/sgpt
