#!/usr/bin/env bash
# run-dev.sh — `make run`: start a single-node parleyd for development.
#
#   bash tools/run-dev.sh [BUILD_DIR]      (make run does: deps, build, this)
#
# What it does, idempotently:
#   1. checks the build has parleyd, parleyctl and parley;
#   2. creates, under the data directory, a development CA + server
#      certificate for localhost/127.0.0.1 and an HS256 JWT secret, if they
#      are absent (tools/gen-dev-cert.sh when it exists, else the openssl
#      commands below; never overwrites);
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

for b in "$PARLEYD" "$CLI"; do
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
  if [ -f "$HERE/gen-dev-cert.sh" ]; then
    bash "$HERE/gen-dev-cert.sh" "$DEV"
  else
    mkdir -p "$DEV"
    chmod 700 "$DEV"
    (
      cd "$DEV"
      umask 077
      [ -f ca.key ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -nodes -keyout ca.key -out ca.pem -days 825 -subj "/CN=parley development CA" 2>/dev/null
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.pem -days 825 -extfile server.ext 2>/dev/null
      rm -f server.csr server.ext
      [ -f jwt.secret ] || openssl rand -hex 32 | tr -d '\n' > jwt.secret
    )
  fi
fi
for f in ca.pem server.pem server.key jwt.secret; do
  if [ ! -f "$DEV/$f" ]; then
    echo "run-dev: $DEV/$f was not created by gen-dev-cert.sh" >&2
    exit 1
  fi
done

ABS_DEV=$(cd "$DEV" && pwd)
ABS_CLI=$(cd "$(dirname "$CLI")" && pwd)/parley
ABS_PARLEYD=$(cd "$(dirname "$PARLEYD")" && pwd)/parleyd
# Token minting: `parleyctl token` when this build has it, else parleyd's
# own development helper (same secret file).
if [ -x "$CTL" ] && "$CTL" token --help >/dev/null 2>&1; then
  MINT="$(cd "$(dirname "$CTL")" && pwd)/parleyctl token --secret-file $ABS_DEV/jwt.secret --sub"
else
  MINT="$ABS_PARLEYD --jwt-secret-file $ABS_DEV/jwt.secret --mint-token"
fi

cat <<EOF

parleyd (development) — data in $DATA, listening on 127.0.0.1:
  plain TCP $PORT, TLS $TLS_PORT, admin HTTP $ADMIN_PORT (/metrics /livez /readyz)

In two other terminals, mint a token for each user and chat over TLS:

  # terminal 1 (alice)
  export PARLEY_TOKEN=\$($MINT alice)
  $ABS_CLI --tls --ca $ABS_DEV/ca.pem --host localhost --port $TLS_PORT --device alice-laptop chat bob

  # terminal 2 (bob)
  export PARLEY_TOKEN=\$($MINT bob)
  $ABS_CLI --tls --ca $ABS_DEV/ca.pem --host localhost --port $TLS_PORT --device bob-phone chat alice

Other commands: $ABS_CLI ... history alice | list | watch.  Metrics:
  curl -s http://127.0.0.1:$ADMIN_PORT/metrics
Ctrl-C stops the server gracefully.

EOF

exec "$PARLEYD" --data "$DATA" --listen 127.0.0.1 \
  --port "$PORT" --tls-port "$TLS_PORT" --admin-port "$ADMIN_PORT" \
  --tls-cert "$DEV/server.pem" --tls-key "$DEV/server.key" \
  --jwt-secret-file "$DEV/jwt.secret"
