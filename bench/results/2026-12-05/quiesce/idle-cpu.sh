#!/bin/bash
# usage: idle.sh PARLEYD SECONDS SETTLE  -> prints CPU ms per node over SECONDS idle
P=$1; S=${2:-10}; SETTLE=${3:-5}
D=$(mktemp -d /tmp/qidle.XXXX)
base=$((20000 + RANDOM % 20000))
pids=()
for i in 1 2 3; do
  peers=""
  for j in 1 2 3; do [ $j = $i ] && continue; peers="$peers${peers:+,}$j=127.0.0.1:$((base+j*10+4))"; done
  mkdir -p $D/n$i
  $P --dev --data $D/n$i --listen 127.0.0.1:$((base+i*10+1)) --tls-port 0 --admin-port $((base+i*10+3)) \
     --node-id $i --cluster-id 4242 --peer-port $((base+i*10+4)) --peers $peers >$D/n$i.log 2>&1 &
  pids+=($!)
done
sleep $SETTLE
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
declare -a a b
for k in 0 1 2; do a[$k]=$(cpu ${pids[$k]}); done
sleep $S
for k in 0 1 2; do b[$k]=$(cpu ${pids[$k]}); done
tck=$(getconf CLK_TCK)
tot=0
for k in 0 1 2; do d=$(( (b[$k]-a[$k]) * 1000 / tck )); tot=$((tot+d)); echo "node $((k+1)): ${d} ms CPU in ${S} s"; done
echo "total: $tot ms CPU in $S s idle ($(echo "scale=1; $tot/$S" | bc) ms/s)"
for k in 1 2 3; do curl -s localhost:$((base+k*10+3))/metrics | grep -E "^parley_raft_(groups_quiesced|partitions_led) " ; done
for p in ${pids[@]}; do kill $p; done
wait
rm -rf $D
