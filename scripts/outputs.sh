#!/bin/bash
# Writes the output of every writing command on the assets into $1 (18
# runs), so a refactor can be checked byte for byte: run it before and after
# and `diff -r` the two folders (the .txt/.json reports differ in timings).
# Uses target/release/shears (or $SHEARS); build it first.
set -e
B=${SHEARS:-target/release/shears}
O=$(realpath -m "$1"); rm -rf "$O"; mkdir -p "$O"
cd "$(dirname "$0")/.."
A=assets/tiny-llama
C=assets/tiny-llama-calibration.safetensors
$B -q compress $A -o $O/main --recipe assets/compress-2of4-w4a16.toml > $O/main.txt
$B -q quantize $A -o $O/q8 --scheme w8a16 --report $O/q8.json > $O/q8.txt
$B -q quantize $A -o $O/q4a --scheme w4a16-asym --group-size 64 --rounding compressed-tensors > /dev/null
$B -q quantize $A -o $O/qd --scheme w4a16 --format dense > /dev/null
$B -q quantize $A -o $O/q88 --scheme w8a8 > /dev/null
$B -q prune $A -o $O/p50 --sparsity 0.5 > $O/p50.txt
$B -q prune $A -o $O/pw --method wanda --calibration $C --sparsity 0.6 > /dev/null
$B -q prune $A -o $O/pg --sparsity 0.3 --scope global > /dev/null
$B -q prune $A -o $O/ps --structured rows --sparsity 0.25 > /dev/null
$B -q prune $A -o $O/pnm --pattern 2:4 --method taylor --calibration $C > /dev/null
$B -q compress $A -o $O/cg --sparsity 0.5 --scope global --scheme w8a16 > /dev/null
$B -q compress $A -o $O/ct --sparsity 0.4 --scope tensor --scheme w4a16-asym --group-size 32 > /dev/null
$B -q compress $A -o $O/c48 --pattern 4:8 --scheme w8a16 > /dev/null
$B -q compress $A -o $O/c14 --pattern 1:4 --scheme w4a16-asym --group-size 32 > /dev/null
$B -q decompress $O/main -o $O/dec > /dev/null
$B -q decompress $O/q88 -o $O/dec88 > /dev/null
# --patience 0: no early stopping, as binaries before it trained (they
# refuse the flag and run the second command).
$B -q distill layers --teacher $A --student $O/p50 -o $O/dl --calibration $C --epochs 2 --patience 0 > /dev/null 2>&1 || $B -q distill layers --teacher $A --student $O/p50 -o $O/dl --calibration $C --epochs 2 > /dev/null
$B -q distill layers --teacher $A --student $O/main -o $O/dlq --calibration $C --epochs 2 --patience 0 > /dev/null 2>&1 || $B -q distill layers --teacher $A --student $O/main -o $O/dlq --calibration $C --epochs 2 > /dev/null
$B -q compress $A -o $O/dry --recipe assets/compress-2of4-w4a16.toml --dry-run > $O/dry-compress.txt
$B -q prune $A -o $O/dry --sparsity 0.5 --dry-run > $O/dry-prune.txt
$B -q quantize $A -o $O/dry --scheme w8a16 --dry-run > $O/dry-quant.txt
echo done
