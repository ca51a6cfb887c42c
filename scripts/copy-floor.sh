#!/bin/bash
# Issue 18's figures: RTN quantization and compress against `cp -r` of the
# same folder, warm page cache, interleaved rounds (/usr/bin/time: wall,
# user, sys, peak RSS, minor/major page faults).
#   scripts/copy-floor.sh [DIR] [ROUNDS] [generate flags...]
# Default: the 2.1 GB checkpoint (hidden 4096, intermediate 11008, 4
# layers, vocab 32000, 1 GB shards) in /tmp/shears-floor. Build
# target/release/shears first.
B=$(realpath ${SHEARS:-target/release/shears})
R=$(realpath assets/compress-2of4-w4a16.toml)
W=${1:-/tmp/shears-floor}; ROUNDS=${2:-3}; shift 2 2>/dev/null
GEN=${*:---hidden 4096 --intermediate 11008 --layers 4 --vocab 32000 --shard-size 1GB}
mkdir -p $W; cd $W
if [ ! -d g ]; then $B -q generate g $GEN || exit 1; fi
du -sh g
cat g/* > /dev/null
F="%e s wall, %U s user, %S s sys, %M KB RSS, %R minor / %F major faults"
for round in $(seq $ROUNDS); do
  for job in cp w8a16 w4a16 compress; do
    rm -rf o; sync
    case $job in
      cp) cmd="cp -r g o" ;;
      compress) cmd="$B -q compress g -o o --recipe $R --backend cpu" ;;
      *) cmd="$B -q quantize g -o o --scheme $job --backend cpu" ;;
    esac
    /usr/bin/time -f "round $round $job: $F" $cmd > /dev/null || exit 1
  done
done
rm -rf o
