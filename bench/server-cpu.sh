#!/bin/bash
# server-cpu.sh — parleyd's CPU time and context switches per acknowledged
# SEND under `parley-bench server-compare` (closed loop). On a shared
# machine SENDs/s follow the neighbours' load; CPU and context switches
# per SEND follow the server's own work, so they compare binaries fairly
# when runs alternate.
#
# usage: bench/server-cpu.sh PARLEYD CONNECTIONS SECONDS [PAYLOAD]
# env:   PARLEY_BENCH (default build/bench/parley-bench), TMPDIR,
#        PARLEYD_ARGS (more parleyd flags, e.g. "--loops 1"),
#        TLS=1 (SENDs over parleyd's TLS port: a throw-away EC P-256
#        certificate made with the openssl command)
# Prints one line: acks, SENDs/s, CPU µs per SEND (utime + stime of every
# parleyd thread), context switches per SEND (voluntary + involuntary),
# and the 1-minute load average at the end. server-compare also runs its
# Redis point with --connect; only parleyd's counters are read, before
# and after the whole run, so the Redis phase adds nothing to them.
set -euo pipefail
BIN=$1; P=$2; S=$3; PL=${4:-100}
BENCH=${PARLEY_BENCH:-build/bench/parley-bench}
D=$(mktemp -d "${TMPDIR:-/tmp}/parley-cpu.XXXXXX")
PORT=$((27500 + RANDOM % 400)); AP=$((PORT + 1000))
TLSARGS=(--tls-port 0); CPORT=$PORT; BTLS=()
if [ "${TLS:-0}" = 1 ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$D/key.pem" -out "$D/cert.pem" -days 1 \
		-subj /CN=localhost >/dev/null 2>&1
	CPORT=$((PORT + 500))
	TLSARGS=(--tls-port $CPORT --tls-cert "$D/cert.pem" --tls-key "$D/key.pem")
	BTLS=(--tls)
fi
"$BIN" --dev --data "$D" --listen 127.0.0.1:$PORT "${TLSARGS[@]}" \
	--admin-port $AP --rate-send-user-per-min 0 --rate-send-conn-per-min 0 \
	--rate-history-user-per-min 0 --rate-history-conn-per-min 0 \
	--max-handshakes 0 ${PARLEYD_ARGS:-} >"$D/parleyd.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$D"' EXIT
for _ in $(seq 100); do
	curl -sf 127.0.0.1:$AP/readyz >/dev/null 2>&1 && break
	sleep 0.1
done
counters() { # ticks and context switches summed over the threads
	local t=0 c=0 f a b
	for f in /proc/$PID/task/*; do
		read -r a b < <(cut -d' ' -f14,15 "$f/stat")
		t=$((t + a + b))
		c=$((c + $(awk '/ctxt_switches/ {s += $2} END {print s}' "$f/status")))
	done
	echo "$t $c"
}
read -r T0 C0 < <(counters)
OUT=$("$BENCH" server-compare "${BTLS[@]}" --connect 127.0.0.1:$CPORT --producers "$P" \
	--payload "$PL" --seconds "$S" 2>&1 || true) # with --tls its plain point fails fast
read -r T1 C1 < <(counters)
ROW=$(echo "$OUT" | grep '^| parleyd' | tail -1) # parleyd-tls with TLS=1
ACKS=$(echo "$ROW" | awk -F'|' '{gsub(/ /, "", $6); print $6}')
RATE=$(echo "$ROW" | awk -F'|' '{gsub(/ /, "", $7); print $7}')
TCK=$(getconf CLK_TCK)
awk -v a="$ACKS" -v r="$RATE" -v t=$((T1 - T0)) -v c=$((C1 - C0)) \
	-v tck="$TCK" -v n="$(basename "$BIN")" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
	'BEGIN { if (a == 0) { print n ": no acks"; exit 1 }
		 printf "%-16s acks %8d  %7s SENDs/s  cpu %5.1f us/send  ctxsw %4.2f /send  load %s\n",
			n, a, r, t / tck * 1e6 / a, c / a, l }'
