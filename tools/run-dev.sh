#!/usr/bin/env bash
# run-dev.sh — `make run`: start a single-node parleyd for development.
set -euo pipefail
BUILD=${1:-build}
if [ ! -x "$BUILD/server/parleyd" ]; then
  echo "parleyd is not built yet (the server lands with the wire protocol issue)." >&2
  exit 1
fi
exec "$BUILD/server/parleyd" --dev --data ./parley-data
