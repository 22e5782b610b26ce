#!/bin/bash
# prof.sh BIN OUT [PRODS] [SECS]: perf record -g -F 1999 of the three parleyd for SECS s
# (default 5) in the middle of a 10 s parley-bench cluster run (3-node only, PRODS
# connections, default 200). BENCH= the parley-bench binary (default build/bench/parley-bench);
# RUNSECS= the run's length (default 10), DELAY= seconds from the nodes' start to the recording (2.5).
BIN=$1; OUT=$2; P=${3:-200}; S=${4:-5}
B=${BENCH:-build/bench/parley-bench}
D=/work/bench-tmp/perf3/pdata.$$
mkdir -p $D
$B cluster --parleyd $BIN --dir $D --kills 0 --no-single --no-nats --producers $P --seconds ${RUNSECS:-10} > $OUT.bench.txt 2>&1 &
BP=$!
for i in $(seq 100); do
  pids=$(pgrep -d, -f "^$BIN .*$D")
  n=$(echo $pids | tr , '\n' | grep -c .)
  [ "$n" = 3 ] && break
  sleep 0.1
done
sleep ${DELAY:-2.5}
echo "pids $pids" > $OUT.rec.txt
for p in ${pids//,/ }; do echo "$p $(tr '\0' ' ' < /proc/$p/cmdline)" >> $OUT.rec.txt; done
perf record -g -F 1999 -o $OUT.data -p $pids -- sleep $S >> $OUT.rec.txt 2>&1
wait $BP
rm -rf $D
