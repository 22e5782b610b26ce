#!/bin/bash
# old (base 93454bb) / new alternated through delivery-stages.sh; prints the row, CPU and the early / notify / inbox stages
RATE=${1:-10000}; SECS=${2:-4}; ROUNDS=${3:-4}
cd /work/wt/early
for i in $(seq 1 $ROUNDS); do
  for v in old new; do
    if [ $v = old ]; then P=/tmp/early-old/build/server/parleyd; else P=/work/wt/early/build/server/parleyd; fi
    echo "== round $i $v $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
    TMPDIR=/work/bench-tmp-early /work/bench-tmp-early/dstages.sh $P $RATE $SECS 2>&1 | grep -E "rate|cpu|delivery/(early|notify|inbox)|send/durable"
  done
done
