#!/bin/bash
# server-cpu-window.sh — parleyd CPU time, context switches and (with
# "stat") syscalls per SEND over a steady 3 s window of a closed-loop
# server-compare run (from 2 s in; SENDs counted by parley_sends_total),
# so neither the warm-up nor the Redis phase is charged.
#
# usage: bench/server-cpu-window.sh PARLEYD CONNECTIONS [PAYLOAD] [stat | PERF_OUT]
# env:   PARLEY_BENCH (default build/bench/parley-bench), TMPDIR,
#        PARLEYD_ARGS (more parleyd flags), PERF_EV (perf record events;
#        default -F 2000 cpu-clock)
set -euo pipefail
BIN=$1; P=$2; PL=${3:-100}; PERF=${4:-}
BENCH=${PARLEY_BENCH:-build/bench/parley-bench}
[ -x "$BENCH" ] || { echo "$BENCH: not found (run from the source tree or set PARLEY_BENCH)" >&2; exit 1; }
D=$(mktemp -d "${TMPDIR:-/tmp}/parley-cpuw.XXXXXX")
PORT=$((28000 + RANDOM % 400)); AP=$((PORT + 1000))
"$BIN" --dev --data "$D" --listen 127.0.0.1:$PORT --tls-port 0 \
	--admin-port $AP --rate-send-user-per-min 0 --rate-send-conn-per-min 0 \
	--rate-history-user-per-min 0 --rate-history-conn-per-min 0 \
	--max-handshakes 0 ${PARLEYD_ARGS:-} >"$D/parleyd.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$D"' EXIT
for _ in $(seq 100); do curl -sf 127.0.0.1:$AP/readyz >/dev/null 2>&1 && break; kill -0 $PID 2>/dev/null || { cat $D/parleyd.log >&2; exit 1; }; sleep 0.1; done
counters() {
	local t=0 c=0 f a b
	for f in /proc/$PID/task/*; do
		read -r a b < <(cut -d' ' -f14,15 "$f/stat")
		t=$((t + a + b))
		c=$((c + $(awk '/ctxt_switches/ {s += $2} END {print s}' "$f/status")))
	done
	s=$(curl -sf 127.0.0.1:$AP/metrics | awk '$1=="parley_sends_total" {print $2}')
	echo "$t $c $s"
}
"$BENCH" server-compare --connect 127.0.0.1:$PORT --producers "$P" --payload "$PL" --seconds 6 >"$D/bench.out" 2>&1 &
BP=$!
sleep 2
read -r T0 C0 S0 < <(counters)
if [ "$PERF" = stat ]; then
	perf stat -e syscalls:sys_enter_write,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_futex,syscalls:sys_enter_fdatasync,syscalls:sys_enter_mprotect,page-faults -p $PID -o $D/stat.txt -- sleep 3 >/dev/null 2>&1
elif [ -n "$PERF" ]; then
	perf record ${PERF_EV:--F 2000} -g -p $PID -o "$PERF" -- sleep 3 >/dev/null 2>&1
else
	sleep 3
fi
read -r T1 C1 S1 < <(counters)
wait $BP || true
TCK=$(getconf CLK_TCK)
awk -v s=$((S1 - S0)) -v t=$((T1 - T0)) -v c=$((C1 - C0)) -v tck=$TCK -v n="$(basename "$BIN")" -v p=$P -v pl=$PL -v l="$(cut -d' ' -f1 /proc/loadavg)" \
 'BEGIN { if (s <= 0) { print n ": no SENDs in the window (see the bench output)"; exit 1 }
	printf "%-16s P=%-3d PL=%-4d sends %7d (%6.0f/s)  cpu %5.1f us/send  ctxsw %4.2f /send  load %s\n", n, p, pl, s, s/3, t/tck*1e6/s, c/s, l }'
if [ "$PERF" = stat ] && [ $((S1 - S0)) -gt 0 ]; then
	S=$((S1 - S0))
	awk -v s=$S '/syscalls|page-faults/ {gsub(/,/, "", $1); printf "   %-36s %8.3f /send\n", $2, $1 / s}' $D/stat.txt
fi
