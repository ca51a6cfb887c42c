#!/bin/bash
# Issue 15's time and memory figures on a generated 2 GB checkpoint (hidden
# 4096, intermediate 11008, 4 layers, vocab 32000): the teacher pruned 50%
# per row by magnitude, then `distill layers` over 1024 tokens of text in
# sequences of 256, 2 epochs, in each of MODES (default "sequential block"),
# with /usr/bin/time's wall time and peak RSS and the report's per-layer
# seconds and KL before → after.
#   scripts/distill-speed.sh [WORKDIR]
# BACKEND picks the backend (default cpu). Build target/release/shears first.
set -e
B=$(realpath ${SHEARS:-target/release/shears})
W=${1:-/tmp/shears-distill-speed}
TEXT=$(realpath README.md)
BACKEND=${BACKEND:-cpu}
mkdir -p $W
if [ ! -d $W/teacher ]; then
  $B -q generate $W/teacher --hidden 4096 --intermediate 11008 --layers 4 --vocab 32000 --shard-size 1GB
fi
[ -d $W/student ] || $B -q prune $W/teacher -o $W/student --sparsity 0.5 --scope row --method magnitude
for mode in ${MODES:-sequential block}; do
  /usr/bin/time -o $W/time -f "%e %M" $B -q --backend $BACKEND distill layers \
    --teacher $W/teacher --student $W/student -o $W/out-$mode --force \
    --calibration-text $TEXT --calibration-tokens 1024 --calibration-seq-len 256 \
    --mode $mode --epochs 2 --judge kl --keep-worse --report $W/$mode.json
  read wall rss < $W/time
  python3 - $W/$mode.json $mode $wall $rss <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); m = r["model"]
per = {}
for row in r["layers"]:
    layer = row["name"].split(".")[2]
    per[layer] = per.get(layer, 0.0) + row["seconds"]
print(f"{sys.argv[2]}: {float(sys.argv[3]):.1f} s, peak RSS {int(sys.argv[4]) // 1024} MB, "
      f"KL {m['before']['kl_mean']:.3f} -> {m['after']['kl_mean']:.3f}, "
      "training per decoder layer: " + ", ".join(f"{v:.1f} s" for v in per.values()))
PY
done
