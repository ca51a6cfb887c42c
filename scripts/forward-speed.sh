#!/bin/bash
# Issue 11's speed figures: `shears eval` of a SmolLM2-135M-shaped model
# (generated, with SmolLM2's tokenizer from tests/golden/forward) over 8192
# tokens in sequences of 512, and this machine's GEMM peak (the forward
# fast path's own product, 2048^3 f32) measured in the same run.
#   scripts/forward-speed.sh [DIR] [--backend B]
# Build target/release/shears first. Text: the GPL-3 text and the README.
B=$(realpath ${SHEARS:-target/release/shears})
ROOT=$(pwd)
W=${1:-/tmp/shears-forward}; shift
mkdir -p $W
if [ ! -d $W/smol ]; then
  $B -q generate $W/smol --hidden 576 --intermediate 1536 --layers 30 --head-dim 64 --gqa 3 --vocab 49152 || exit 1
  cp tests/golden/forward/tokenizer/tokenizer.json $W/smol/
fi
cat /usr/share/common-licenses/GPL-3 README.md > $W/text.txt
echo "== GEMM peak (criterion, same run)"
cargo bench -q --bench forward -- gemm_peak 2>&1 | grep -E "thrpt|time:"
echo "== shears eval, SmolLM2-135M shape, 8192 tokens, seq-len 512 ${*:---backend cpu}"
/usr/bin/time -f "%e s wall, %M KB peak RSS" $B eval $W/smol --text $W/text.txt --tokens 8192 --seq-len 512 ${*:---backend cpu}
