#!/usr/bin/env bash
# run-dev.sh — `make run`: start a single-node parleyd for development.
#
#   bash tools/run-dev.sh [BUILD_DIR]      (make run does: deps, build, this)
#
# What it does, idempotently:
#   1. checks the build has parleyd, parleyctl and parley;
#   2. creates, under the data directory, a development CA + server
#      certificate for localhost/127.0.0.1 and an HS256 JWT secret, if they
#      are absent (tools/gen-dev-cert.sh; never overwrites);
#   3. prints how to mint tokens and chat between two terminals over TLS;
#   4. runs parleyd in the foreground on loopback (Ctrl-C stops it
#      gracefully: clients get GOAWAY, in-flight messages are acked, exit 0).
#
# Environment: PARLEY_DATA (default ./parley-data), PARLEY_PORT (7411),
# PARLEY_TLS_PORT (7412), PARLEY_ADMIN_PORT (7480).
set -euo pipefail

BUILD=${1:-build}
DATA=${PARLEY_DATA:-./parley-data}
PORT=${PARLEY_PORT:-7411}
TLS_PORT=${PARLEY_TLS_PORT:-7412}
ADMIN_PORT=${PARLEY_ADMIN_PORT:-7480}
PARLEYD="$BUILD/server/parleyd"
CTL="$BUILD/tools/parleyctl"
CLI="$BUILD/tools/parley"
HERE=$(cd "$(dirname "$0")" && pwd)

for b in "$PARLEYD" "$CTL" "$CLI"; do
  if [ ! -x "$b" ]; then
    echo "run-dev: $b is missing: build first (make run builds everything)" >&2
    exit 1
  fi
done

DEV="$DATA/dev"
mkdir -p "$DATA"
if [ ! -f "$DEV/server.pem" ] || [ ! -f "$DEV/server.key" ] || \
   [ ! -f "$DEV/ca.pem" ] || [ ! -f "$DEV/jwt.secret" ]; then
  echo "run-dev: creating a development CA, server certificate and JWT secret in $DEV"
  bash "$HERE/gen-dev-cert.sh" "$DEV"
fi
for f in ca.pem server.pem server.key jwt.secret; do
  if [ ! -f "$DEV/$f" ]; then
    echo "run-dev: $DEV/$f was not created by gen-dev-cert.sh" >&2
    exit 1
  fi
done

ABS_DEV=$(cd "$DEV" && pwd)
ABS_CTL=$(cd "$(dirname "$CTL")" && pwd)/parleyctl
ABS_CLI=$(cd "$(dirname "$CLI")" && pwd)/parley

cat <<EOF

parleyd (development) — data in $DATA, listening on 127.0.0.1:
  plain TCP $PORT, TLS $TLS_PORT, admin HTTP $ADMIN_PORT (/metrics /livez /readyz)

In two other terminals, mint a token for each user and chat over TLS:

  # terminal 1 (alice)
  export PARLEY_TOKEN=\$($ABS_CTL token --secret-file $ABS_DEV/jwt.secret --sub alice)
  $ABS_CLI --tls --ca $ABS_DEV/ca.pem --host localhost --port $TLS_PORT --device alice-laptop chat bob

  # terminal 2 (bob)
  export PARLEY_TOKEN=\$($ABS_CTL token --secret-file $ABS_DEV/jwt.secret --sub bob)
  $ABS_CLI --tls --ca $ABS_DEV/ca.pem --host localhost --port $TLS_PORT --device bob-phone chat alice

Other commands: $ABS_CLI ... history alice | list | watch.  Metrics:
  curl -s http://127.0.0.1:$ADMIN_PORT/metrics
Ctrl-C stops the server gracefully.

EOF

exec "$PARLEYD" --data "$DATA" --listen 127.0.0.1 \
  --port "$PORT" --tls-port "$TLS_PORT" --admin-port "$ADMIN_PORT" \
  --tls-cert "$DEV/server.pem" --tls-key "$DEV/server.key" \
  --jwt-secret-file "$DEV/jwt.secret"
