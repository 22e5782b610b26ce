#!/usr/bin/env bash
# dev-server-certs.sh — the development credentials of `make run` and
# `make run-cluster` (tools/run-dev.sh, tools/run-cluster.sh).
#
#   bash tools/dev-server-certs.sh DIR
#
# In DIR (created, mode 700), idempotently (an existing file is never
# overwritten; server.pem/.key are made again only when one of the four
# files is missing):
#   ca.pem / ca.key      a development CA ("parley development CA")
#   server.pem / .key    a server certificate for localhost / 127.0.0.1
#                        (serverAuth), signed by that CA: what clients
#                        verify with --ca DIR/ca.pem
#   jwt.secret           a random HS256 JWT secret (64 hex characters)
# Keys are EC P-256; files are created with umask 077. Exit 1 (with a
# message) when a file could not be made.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
DEV=$1
if [ ! -f "$DEV/server.pem" ] || [ ! -f "$DEV/server.key" ] || \
   [ ! -f "$DEV/ca.pem" ] || [ ! -f "$DEV/jwt.secret" ]; then
  echo "creating a development CA, server certificate and JWT secret in $DEV"
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
for f in ca.pem server.pem server.key jwt.secret; do
  if [ ! -f "$DEV/$f" ]; then
    echo "$DEV/$f could not be created (is openssl installed?)" >&2
    exit 1
  fi
done
