#!/bin/bash
# Streaming figures: prune and decompress on a generated 3.6 GiB bf16
# checkpoint, each right after `cp -r` of its input (warm page cache, 3
# rounds, /usr/bin/time: wall, peak RSS, user/sys). Needs ~10 GB in $1
# (default /tmp/shears-stream). Build target/release/shears first.
B=$(realpath ${SHEARS:-target/release/shears})
W=${1:-/tmp/shears-stream}; rm -rf $W; mkdir -p $W; cd $W
$B -q generate big --hidden 4096 --intermediate 11008 --layers 9 --vocab 32000 --shard-size 2GB
du -sh big
$B -q quantize big -o q --scheme w4a16 --backend cpu > /dev/null   # the decompress input
du -sh q
cat big/* q/* > /dev/null
for round in 1 2 3; do
  for pair in "big prune" "q decompress"; do
    set -- $pair
    rm -rf c o; sync
    /usr/bin/time -f "round $round cp -r $1: %e s wall, %M KB peak RSS" cp -r $1 c
    rm -rf c; sync
    /usr/bin/time -f "round $round $2: %e s wall, %M KB peak RSS, %U s user, %S s sys" $B -q $2 $1 -o o --backend cpu > /dev/null
    rm -rf o; sync
  done
done
$B inspect big | tail -2
