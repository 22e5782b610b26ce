#!/bin/bash
# Raw record of the A/B runs of bench/RESULTS.md "CPU per replicated SEND: one copy, one hash per entry" (2026-12-06; copied from 2026-12-05/perf):
# alternates the parleyd binaries given (copies of builds of the commits named there) through
# parley-bench cluster, 3-node only, and prints one line per run point.
# usage: ab.sh ROUNDS OUTDIR BIN1 BIN2 ...   (PRODS=50,200 and SECS=3 by default; BENCH=parley-bench binary)
R=$1; O=$2; shift 2; mkdir -p $O
B=${BENCH:-build/bench/parley-bench}
for r in $(seq 1 $R); do for b in "$@"; do
  n=$(basename $b)
  $B cluster --parleyd $b --dir ${DATA:-/work/bench-tmp/perf3/data} --kills 0 --no-single --no-nats --producers ${PRODS:-50,200} --seconds ${SECS:-3} > $O/$n-$r.txt 2>&1
  l=$(awk '/load at start/{print $9}' $O/$n-$r.txt)
  awk -v n=$n -v l=$l '/^\| parleyd-3node/{tp[$6]=$12" "$16" "$18} /^\| (50|200) \| [0-9.]+ \| [0-9]+ \| nan/{ms[$2]=$6} /^\| (50|200) \| [0-9]+ \| [0-9]+ \| [0-9]+ \| [0-9]+ \|$/{cs[$2]=$4" "$6" "$8" "$10} END{for (p in tp) printf "%-16s load %s conns %3s SENDs/s,p50,p99 %s ms/1k %s csw,sysc,msgs,frames/1k %s\n", n, l, p, tp[p], ms[p], cs[p]}' $O/$n-$r.txt
done; done
