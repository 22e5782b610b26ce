#!/bin/bash
# alternate: old binary (base 93454bb), new binary without early (bench --no-early), new with early
RATE=${1:-10000}; SECS=${2:-5}; ROUNDS=${3:-3}
cd /work/wt/early
for i in $(seq 1 $ROUNDS); do
  for v in old new-noearly new; do
    case $v in
      old) P=/tmp/early-old/build/server/parleyd; A="";;
      new-noearly) P=/work/wt/early/build/server/parleyd; A="--no-early";;
      new) P=/work/wt/early/build/server/parleyd; A="";;
    esac
    echo "== round $i $v $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
    TMPDIR=/work/bench-tmp-early BENCH_ARGS="$A" /work/bench-tmp-early/dstages.sh $P $RATE $SECS 2>&1 | grep -E "rate|cpu"
  done
done
