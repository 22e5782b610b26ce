#!/usr/bin/env bash
# run_fuzz.sh SECONDS [TARGET...] — build every tests/fuzz/fuzz_<name>.c (or
# the named ones) with clang's libFuzzer + ASan + UBSan against the project's
# library sources, and run each for SECONDS. Exit 0 when none crashed, 1 when
# one did (the crashing input is saved under $OUT/crashes), 77 when clang's
# fuzzer runtime is missing.
# A target that needs more than the library sources names them in its
# opening comment on one line " * sources: server/a.c server/b.c" (linked
# into that target only). A generator tests/fuzz/gen_<name>_corpus.c, when
# there is one, is built against the same objects and run before the
# target with the corpus directory as its argument: the seeds come from
# the real encoders of this tree.
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
# library objects (rebuilt only when a source is newer); obj_of prints the
# object of source $1, building it first when needed
obj_of() {
  local f=$1 o
  o="$OUT/obj/$(echo "${f#$SRC/}" | tr / _).o"
  if [ ! -e "$o" ] || [ "$f" -nt "$o" ] || [ -n "$(find "$SRC" -name '*.h' -newer "$o" -print -quit)" ]; then
    "$CC" "${CFLAGS[@]}" -c "$f" -o "$o"
  fi
  echo "$o"
}
objs=()
# server/jwt.c: the token verifier is the first parser a client reaches
for f in "$SRC"/common/*.c "$SRC"/engine/*.c "$SRC"/engine/*/*.c "$SRC"/proto/*.c "$SRC"/server/jwt.c; do
  [ -e "$f" ] || continue
  objs+=("$(obj_of "$f")")
done
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$SRC"/tests/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c | sed 's/^fuzz_//')"); done
fi
status=0
for t in "${targets[@]}"; do
  bin="$OUT/fuzz_$t"
  extra=()
  for f in $(sed -n 's/^ \* sources: //p' "$SRC/tests/fuzz/fuzz_$t.c"); do
    extra+=("$(obj_of "$SRC/$f")")
  done
  "$CC" "${CFLAGS[@]}" -fsanitize=fuzzer "$SRC/tests/fuzz/fuzz_$t.c" "${objs[@]}" ${extra[@]+"${extra[@]}"} "${LIBS[@]}" -o "$bin"
  corpus="$OUT/corpus_$t"
  mkdir -p "$corpus"
  [ -d "$SRC/tests/fuzz/corpus/$t" ] && cp -n "$SRC/tests/fuzz/corpus/$t"/* "$corpus"/ 2>/dev/null || true
  gen="$SRC/tests/fuzz/gen_${t}_corpus.c"
  if [ -e "$gen" ]; then
    "$CC" "${CFLAGS[@]}" "$gen" "${objs[@]}" ${extra[@]+"${extra[@]}"} "${LIBS[@]}" -o "$OUT/gen_${t}_corpus"
    "$OUT/gen_${t}_corpus" "$corpus"
  fi
  echo "fuzz_$t: ${SECS}s"
  if ! "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$OUT/crashes/${t}-" -print_final_stats=1 "$corpus" 2>"$OUT/fuzz_$t.log"; then
    echo "fuzz_$t: FAILED (see $OUT/fuzz_$t.log and $OUT/crashes)"; tail -40 "$OUT/fuzz_$t.log"; status=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss" "$OUT/fuzz_$t.log" | sed "s/^/fuzz_$t: /"
  fi
done
exit $status
