#!/usr/bin/env bash
# run_fuzz.sh SECONDS [TARGET...] — build every tests/fuzz/fuzz_<name>.c (or
# the named ones) with clang's libFuzzer + ASan + UBSan against the project's
# library sources, and run each for SECONDS. Exit 0 when none crashed, 1 when
# one did (the crashing input is saved under $OUT/crashes), 77 when clang's
# fuzzer runtime is missing.
set -euo pipefail
SECS=${1:-20}
shift || true
SRC=${PARLEY_SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
OUT=${PARLEY_BIN_DIR:-$SRC/build}/fuzz
mkdir -p "$OUT/obj" "$OUT/crashes"
CC=${FUZZ_CC:-clang}
if ! command -v "$CC" >/dev/null; then echo "no clang: skip"; exit 77; fi
if ! echo 'int LLVMFuzzerTestOneInput(const char*d,long n){return 0;}' |
     "$CC" -x c -fsanitize=fuzzer - -o "$OUT/probe" 2>/dev/null; then
  echo "clang has no libFuzzer runtime: skip"; exit 77
fi
CFLAGS=(-g -O1 -D_GNU_SOURCE -fsanitize=fuzzer-no-link,address,undefined
        -fno-sanitize-recover=undefined -I"$SRC/common" -I"$SRC/engine" -I"$SRC/engine/log" -I"$SRC/engine/history" -I"$SRC/engine/io" -I"$SRC/engine/raft" -I"$SRC/proto" -I"$SRC/server")
LIBS=(-luring -lzstd -lxxhash -lssl -lcrypto -lpthread)
# library objects (rebuilt only when a source is newer)
objs=()
# server/jwt.c: the token verifier is the first parser a client reaches
for f in "$SRC"/common/*.c "$SRC"/engine/*.c "$SRC"/engine/*/*.c "$SRC"/proto/*.c "$SRC"/server/jwt.c; do
  [ -e "$f" ] || continue
  o="$OUT/obj/$(echo "${f#$SRC/}" | tr / _).o"
  if [ ! -e "$o" ] || [ "$f" -nt "$o" ] || [ -n "$(find "$SRC" -name '*.h' -newer "$o" -print -quit)" ]; then
    "$CC" "${CFLAGS[@]}" -c "$f" -o "$o"
  fi
  objs+=("$o")
done
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$SRC"/tests/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c | sed 's/^fuzz_//')"); done
fi
status=0
for t in "${targets[@]}"; do
  bin="$OUT/fuzz_$t"
  "$CC" "${CFLAGS[@]}" -fsanitize=fuzzer "$SRC/tests/fuzz/fuzz_$t.c" "${objs[@]}" "${LIBS[@]}" -o "$bin"
  corpus="$OUT/corpus_$t"
  mkdir -p "$corpus"
  [ -d "$SRC/tests/fuzz/corpus/$t" ] && cp -n "$SRC/tests/fuzz/corpus/$t"/* "$corpus"/ 2>/dev/null || true
  echo "fuzz_$t: ${SECS}s"
  if ! "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$OUT/crashes/${t}-" -print_final_stats=1 "$corpus" 2>"$OUT/fuzz_$t.log"; then
    echo "fuzz_$t: FAILED (see $OUT/fuzz_$t.log and $OUT/crashes)"; tail -40 "$OUT/fuzz_$t.log"; status=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss" "$OUT/fuzz_$t.log" | sed "s/^/fuzz_$t: /"
  fi
done
exit $status
