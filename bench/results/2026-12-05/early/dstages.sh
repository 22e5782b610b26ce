#!/bin/bash
# delivery-stages.sh — `parley-bench delivery` at one rate against a
# parleyd started here with its admin port, and the per-stage breakdown
# behind the headline: the deltas of parley_send_stage_seconds,
# parley_delivery_stage_seconds and parley_engine_stage_seconds over the
# run (docs/SERVER.md, "Reading the server's stage histograms"). Quantiles
# are the upper bounds of the log2 buckets the histograms keep ("<= x").
#
# usage: bench/delivery-stages.sh PARLEYD RATE SECONDS
# env:   PARLEY_BENCH (default build/bench/parley-bench), TMPDIR (data dir
#        parent; default /tmp), PARLEYD_ARGS (more parleyd flags)
# Prints the bench's delivery row (p50 / p99 / p99.9 / max µs), parleyd's
# CPU time and context switches per message over the run (every thread;
# these follow the server's own work where latency follows the
# neighbours), then one line per stage: samples, mean, p50, p99, p99.9,
# and the load at the end.
set -euo pipefail
BIN=$1; RATE=$2; S=$3
BENCH=${PARLEY_BENCH:-build/bench/parley-bench}
D=$(mktemp -d "${TMPDIR:-/tmp}/parley-dlv.XXXXXX")
PORT=$((26500 + RANDOM % 400)); AP=$((PORT + 1000))
"$BIN" --dev --data "$D" --listen 127.0.0.1:$PORT --tls-port 0 \
	--admin-port $AP --rate-send-user-per-min 0 --rate-send-conn-per-min 0 \
	--rate-history-user-per-min 0 --rate-history-conn-per-min 0 \
	--max-handshakes 0 ${PARLEYD_ARGS:-} >"$D/parleyd.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$D"' EXIT
for _ in $(seq 100); do
	curl -sf 127.0.0.1:$AP/readyz >/dev/null 2>&1 && break
	sleep 0.1
done
scrape() { curl -sf 127.0.0.1:$AP/metrics | grep -E '^parley_(send|delivery|engine)_stage_seconds_(bucket|sum|count)'; }
counters() { # ticks and context switches summed over the threads
	local t=0 c=0 f a b
	for f in /proc/$PID/task/*; do
		read -r a b < <(cut -d' ' -f14,15 "$f/stat")
		t=$((t + a + b))
		c=$((c + $(awk '/ctxt_switches/ {s += $2} END {print s}' "$f/status")))
	done
	echo "$t $c"
}
scrape >"$D/m0"
read -r T0 C0 < <(counters)
OUT=$("$BENCH" delivery --connect 127.0.0.1:$PORT --rate "$RATE" --seconds "$S" \
	--no-floor --no-nats ${BENCH_ARGS:-} 2>&1 || true)
read -r T1 C1 < <(counters)
scrape >"$D/m1"
echo "$OUT" | grep '^| parleyd' | awk -F'|' -v n="$(basename "$BIN")" \
	'{ gsub(/ /, ""); printf "%-18s rate %s  deliver p50 %s  p99 %s  p99.9 %s  max %s us  (ack p99 %s)  %s\n", n, $3, $8, $9, $10, $11, $13, $15 }'
awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v t=$((T1 - T0)) -v c=$((C1 - C0)) \
	-v tck="$(getconf CLK_TCK)" '
function fam(s) { sub(/_stage_seconds.*/, "", s); sub(/^parley_/, "", s); return s }
function stg(s) { match(s, /stage="[a-z_]+"/); return substr(s, RSTART + 7, RLENGTH - 8) }
function le(s) { match(s, /le="[^"]+"/); return substr(s, RSTART + 4, RLENGTH - 5) }
FNR == NR { v0[$1] = $2; next }
{
	d = $2 - v0[$1]; k = fam($1) "/" stg($1)
	if ($1 ~ /_count\{/) { cnt[k] = d; if (!(k in seen)) { seen[k] = 1; order[++no] = k } }
	else if ($1 ~ /_sum\{/) sum[k] = d
	else { nb[k]++; bl[k, nb[k]] = le($1); bc[k, nb[k]] = d }
}
function q(k, f,   i, t) {
	for (i = 1; i <= nb[k]; i++) if (bc[k, i] >= f * cnt[k]) {
		t = bl[k, i]; if (t == "+Inf") return "inf"
		t += 0; return (t < 1e-3) ? sprintf("%.0fus", t * 1e6) : sprintf("%.2fms", t * 1e3) }
	return "-"
}
END {
	m = cnt["delivery/fanout"]
	if (m) printf "  parleyd cpu %.1f us/msg  ctxsw %.2f /msg  (%d msgs)\n", t / tck * 1e6 / m, c / m, m
	for (i = 1; i <= no; i++) { k = order[i]; if (cnt[k] == 0) continue
		printf "  %-22s n %7d  mean %8.1f us  p50 <= %-8s p99 <= %-8s p99.9 <= %s\n",
			k, cnt[k], sum[k] / cnt[k] * 1e6, q(k, .5), q(k, .99), q(k, .999) }
	printf "  load %s\n", l
}' "$D/m0" "$D/m1"
