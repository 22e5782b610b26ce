# dev-build.sh — sourced by tools/run-dev.sh and tools/run-cluster.sh (not
# run by itself): dev_build builds only what they run (parleyd, parley,
# parleyctl), quietly — the compiler's output goes to BUILD/make-run.log
# and its tail is shown only when a step fails — and checks the three
# binaries exist. Uses the caller's say/die, ROOT, JOBS and TYPE;
# PARLEY_RUN_NO_BUILD=1 skips the build (the tests run the scripts on a
# build they made themselves).
dev_build() {
  local build=$1 log="$1/make-run.log"
  mkdir -p "$build"
  if [ "${PARLEY_RUN_NO_BUILD:-0}" != 1 ]; then
    : > "$log"
    if [ ! -f "$build/CMakeCache.txt" ]; then
      say "configuring the build in $build (first run only)"
      cmake -S "$ROOT" -B "$build" -DCMAKE_BUILD_TYPE="${TYPE:-Release}" >>"$log" 2>&1 ||
        { tail -n 30 "$log" >&2; die "cmake configure failed (full log: $log)"; }
    fi
    say "building parleyd, parley and parleyctl (log: $log)"
    cmake --build "$build" -j "$JOBS" --target parleyd parley parleyctl >>"$log" 2>&1 ||
      { tail -n 40 "$log" >&2; die "build failed (full log: $log)"; }
  fi
  local b
  for b in "$build/server/parleyd" "$build/tools/parley" "$build/tools/parleyctl"; do
    [ -x "$b" ] || die "$b is missing after the build (log: $log)"
  done
}
