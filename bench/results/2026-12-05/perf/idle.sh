#!/bin/bash
# idle.sh BIN SECS: CPU ticks (utime+stime, all threads) of one fresh parleyd --dev in its first SECS s, and its WAL files
BIN=$1; S=${2:-10}
D=$(mktemp -d /work/bench-tmp/perf/idle.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
$BIN --dev --data $D/data --listen 127.0.0.1:$PORT --tls-port 0 --admin-port 0 > $D/log 2>&1 &
P=$!
sleep $S
t=$(awk '{print $14+$15}' /proc/$P/stat)
w=$(ls $D/data/wal/0 2>/dev/null | tr '\n' ' ')
kill $P; wait $P 2>/dev/null
echo "$(basename $BIN) cpu_ticks_first_${S}s $t wal: $w"
rm -rf $D
