#!/bin/bash
# diagrun.sh ROUNDS PRODS BIN...: per run, the Raft messages the three nodes sent by type
R=$1; P=$2; shift 2
for r in $(seq $R); do for b in "$@"; do
  rm -f diag/*.txt
  /work/wt/perf/build/bench/parley-bench cluster --parleyd $b --dir /work/bench-tmp/perf/data --kills 0 --no-single --no-nats --producers $P --seconds 3 > diag-run.txt 2>&1
  acks=$(awk -F'|' '$2 ~ /parleyd-3node/ && $3 ~ /closed/ {gsub(/ /,"",$6); print $6; exit}' diag-run.txt)
  cat diag/*.txt | awk -v n=$(basename $b) -v a=$acks '/^calls/{c+=$2; e+=$4} /^type/{w[$2]+=$4; ne[$2]+=$6; na[$2]+=$8} END{printf "%-10s acks %s calls %d ents %d |", n, a, c, e; for (t in w) printf " t%s: %d/%d/%d", t, w[t], ne[t], na[t]; printf "\n"}'
done; done
