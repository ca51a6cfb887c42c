#!/bin/bash
# Issue 18's figures: RTN quantization and compress against `cp -r` of the
# same folder, warm page cache, interleaved rounds (/usr/bin/time: wall,
# user, sys, peak RSS, minor/major page faults), then the median of each
# and its ratio to the median `cp -r`.
#   scripts/copy-floor.sh [DIR] [ROUNDS] [generate flags...]
# JOBS picks what runs each round (default "cp cp w8a16 w4a16 compress";
# a scheme name runs `quantize --scheme` it, e.g. JOBS="cp cp fp8 nvfp4a16";
# gguf-TYPE writes a GGUF file, e.g. JOBS="cp cp gguf-Q8_0 gguf-Q4_0").
# Default: the 2.1 GB checkpoint (hidden 4096, intermediate 11008, 4
# layers, vocab 32000, 1 GB shards) in /tmp/shears-floor. Build
# target/release/shears first (SHEARS=path picks another binary).
# On a VM the first large write after a large delete can run several times
# slower (fresh guest pages): `cp -r` runs twice per round and the ratios
# are to the faster of its medians (cp-2, the second copy), the strict floor.
B=$(realpath ${SHEARS:-target/release/shears})
R=$(realpath assets/compress-2of4-w4a16.toml)
W=${1:-/tmp/shears-floor}; ROUNDS=${2:-3}; shift 2 2>/dev/null
GEN=${*:---hidden 4096 --intermediate 11008 --layers 4 --vocab 32000 --shard-size 1GB}
mkdir -p $W; cd $W
if [ ! -d g ]; then $B -q generate g $GEN || exit 1; fi
echo "$(du -sh g | cut -f1) checkpoint; binary $B"
cat g/* > /dev/null
LOG=$W/times.log; : > $LOG
F="%e %U %S %M %R %F"
for round in $(seq $ROUNDS); do
  for job in ${JOBS:-cp cp w8a16 w4a16 compress}; do
    rm -rf o o.gguf; sync
    case $job in
      cp) cmd="cp -r g o" ;;
      compress) cmd="$B -q compress g -o o --recipe $R --backend cpu" ;;
      gguf-*) cmd="$B -q quantize g -o o.gguf --type ${job#gguf-} --backend cpu" ;;
      *) cmd="$B -q quantize g -o o --scheme $job --backend cpu" ;;
    esac
    /usr/bin/time -o $W/t -f "$F" $cmd > /dev/null || exit 1
    read wall user sys rss minor major < $W/t
    [ $job = cp ] && grep -q "^cp-1 " <(tail -1 $LOG) && job=cp-2
    [ $job = cp ] && job=cp-1
    echo "$job $wall $user $sys $rss $minor $major" >> $LOG
    echo "round $round $job: $wall s wall, $user s user, $sys s sys, $rss KB peak RSS, $minor minor / $major major faults"
  done
done
rm -rf o o.gguf
echo "median of $ROUNDS rounds (wall, ratio to cp -r, user, sys, peak RSS, minor faults):"
python3 - $LOG <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
jobs = {}
for r in rows:
    jobs.setdefault(r[0], []).append([float(x) for x in r[1:]])
med = {j: [st.median(c) for c in zip(*v)] for j, v in jobs.items()}
cp = min(med['cp-1'][0], med['cp-2'][0])
for j, m in med.items():
    print(f"  {j:9} {m[0]:6.2f} s  {m[0]/cp:5.2f}x  {m[1]:5.2f} user  {m[2]:5.2f} sys  {m[3]/1024:6.0f} MB  {m[4]:6.0f} faults")
PY
