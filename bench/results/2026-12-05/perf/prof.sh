#!/bin/bash
# prof.sh BIN OUT PRODS SECS: perf record -g of the three parleyd of one cluster run
BIN=$1; OUT=$2; P=${3:-200}; S=${4:-5}
D=/work/bench-tmp/perf/pdata.$$
mkdir -p $D
/work/wt/perf/build/bench/parley-bench cluster --parleyd $BIN --dir $D --kills 0 --no-single --no-nats --producers $P --seconds 10 > $OUT.bench.txt 2>&1 &
B=$!
for i in $(seq 100); do
  pids=$(pgrep -d, -f "^$BIN .*--data $D")
  n=$(echo $pids | tr , '\n' | grep -c .)
  [ "$n" = 3 ] && break
  sleep 0.1
done
sleep 2.5
perf record -g -F 1999 -o $OUT.data -p $pids -- sleep $S > $OUT.rec.txt 2>&1
wait $B
rm -rf $D
