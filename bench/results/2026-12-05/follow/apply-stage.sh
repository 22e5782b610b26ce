#!/bin/bash
# Raw record of bench/RESULTS.md "A follower's cost per ack" (2026-12-05): the
# engine's apply stage (parley_engine_stage_seconds{stage="apply"}: one
# committed entry applied to its partition, live) per node of a 3-node
# `parley-bench cluster` run, as the delta of its sum/count between two
# /metrics scrapes taken while the load runs; binaries alternated.
# usage: apply-stage.sh ROUNDS BIN1 BIN2 ...  (PRODS=200, SECS=8; BENCH=parley-bench binary)
R=$1; shift
B=${BENCH:-build/bench/parley-bench}
D=${DATA:-/tmp/follow-perf/data}; mkdir -p "$D"
scrape() { # admin port -> "sum count" of the apply stage and the CPU ticks of the pid
	curl -s "http://127.0.0.1:$1/metrics" | awk '/^parley_engine_stage_seconds_sum\{stage="apply"\}/{s=$2} /^parley_engine_stage_seconds_count\{stage="apply"\}/{c=$2} END{printf "%s %s", s, c}'
}
for r in $(seq 1 "$R"); do for b in "$@"; do
	n=$(basename "$b")
	"$B" cluster --parleyd "$b" --dir "$D" --kills 0 --no-single --no-nats --producers "${PRODS:-200}" --seconds "${SECS:-8}" > /tmp/apply-stage.$$.txt 2>&1 &
	bp=$!
	pids=
	for i in $(seq 50); do sleep 0.2; pids=$(pgrep -f -- "^$b .*--node-id" | tr '\n' ' '); [ "$(echo $pids | wc -w)" = 3 ] && break; done
	sleep 3
	declare -A s0 c0 t0 port
	for p in $pids; do
		port[$p]=$(tr '\0' ' ' < /proc/$p/cmdline | sed -n 's/.*--admin-port \([0-9]*\).*/\1/p')
		read s0[$p] c0[$p] <<< "$(scrape ${port[$p]})"
		t0[$p]=$(awk '{print $14+$15}' /proc/$p/stat)
	done
	sleep 4
	for p in $pids; do
		read s1 c1 <<< "$(scrape ${port[$p]})"
		t1=$(awk '{print $14+$15}' /proc/$p/stat)
		awk -v n=$n -v p=$p -v s0=${s0[$p]} -v c0=${c0[$p]} -v s1=$s1 -v c1=$c1 -v dt=$((t1 - t0[$p])) -v l="$(cut -d' ' -f1 /proc/loadavg)" \
			'BEGIN{printf "%-14s load %s pid %d entries %d apply ns/entry %.0f cpu ticks %d (ticks per 1k entries %.2f)\n", n, l, p, c1-c0, (s1-s0)*1e9/(c1-c0), dt, dt*1000/(c1-c0)}'
	done
	wait $bp
	grep -E '^\| parleyd-3node' /tmp/apply-stage.$$.txt | awk -F'|' '{print "   run:", $7, "SENDs/s", $12, "p99 us", $17}'
	unset s0 c0 t0 port
done; done
rm -f /tmp/apply-stage.$$.txt
