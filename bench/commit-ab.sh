#!/bin/bash
# commit-ab.sh — single-connection SEND p50 through parleyd for each WAL
# commit mode (engine/log/wal.h, PARLEY_WAL_COMMIT), each run next to
# Redis XADD (appendfsync always) in the same `parley-bench server-compare`
# run, the modes interleaved round by round so a neighbour's burst on a
# shared machine hits them alike. Prints one line per run and, at the end,
# per mode the median and min–max of parleyd's p50, of Redis's p50 and of
# their ratio.
#
# usage: bench/commit-ab.sh PARLEYD ROUNDS SECONDS [MODES...]
#        (MODES default: link dsync direct direct-link)
#        A MODE may be LABEL=BINARY instead: that parleyd binary with the
#        default commit mode (old and new builds alternated round by round:
#        bench/commit-ab.sh - 10 3 old=/tmp/parleyd-old new=build/server/parleyd).
# env:   PARLEY_BENCH (default build/bench/parley-bench), TMPDIR (data dir
#        parent; default /tmp), PAYLOAD (default 100), CONNS (default 1)
set -euo pipefail
BIN=$1; R=$2; S=$3; shift 3
MODES=("$@"); [ ${#MODES[@]} -gt 0 ] || MODES=(link dsync direct direct-link)
BENCH=${PARLEY_BENCH:-build/bench/parley-bench}
OUT=$(mktemp "${TMPDIR:-/tmp}/commit-ab.XXXXXX")
trap 'rm -f "$OUT"' EXIT
for r in $(seq "$R"); do
	for m in "${MODES[@]}"; do
		bin=$BIN; mode=$m
		if [[ $m == *=* ]]; then bin=${m#*=}; mode=; fi
		res=$(PARLEY_WAL_COMMIT=$mode "$BENCH" server-compare --parleyd "$bin" \
			--producers "${CONNS:-1}" --payload "${PAYLOAD:-100}" \
			--seconds "$S" --dir "${TMPDIR:-/tmp}" 2>&1 || true)
		p=$(echo "$res" | awk -F'|' '$2 ~ /^ parleyd / && $3 ~ /closed/ {gsub(/ /,"",$9); print $9; exit}')
		q=$(echo "$res" | awk -F'|' '$2 ~ /^ redis / && $3 ~ /closed/ {gsub(/ /,"",$9); print $9; exit}')
		l=$(cut -d' ' -f1 /proc/loadavg)
		echo "round $r  ${m%%=*}  parleyd p50 ${p:-?} us  redis p50 ${q:-?} us  load $l"
		[ -n "$p" ] && [ -n "$q" ] && echo "${m%%=*} $p $q" >>"$OUT"
	done
done
echo
echo "| mode | runs | parleyd p50 µs median (min–max) | redis p50 µs median (min–max) | parleyd ÷ redis median (min–max) |"
echo "|---|---:|---:|---:|---:|"
for m in "${MODES[@]}"; do
	m=${m%%=*}
	awk -v m="$m" '
	function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
	$1 == m { n++; p[n] = $2; q[n] = $3; x[n] = $2 / $3 }
	END { if (!n) exit
		printf "| %s | %d | %.1f (%.1f–%.1f) | ", m, n, med(p, n), p[1], p[n]
		printf "%.1f (%.1f–%.1f) | ", med(q, n), q[1], q[n]
		printf "%.2f (%.2f–%.2f) |\n", med(x, n), x[1], x[n] }' "$OUT"
done
