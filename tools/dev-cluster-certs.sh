#!/usr/bin/env bash
# dev-cluster-certs.sh — development certificates for an N-node local
# cluster's peer links (mutual TLS between nodes, docs/CLUSTER.md).
#
#   bash tools/dev-cluster-certs.sh DIR N [IP...]
#
# In DIR (created, mode 700), idempotently (an existing file is never
# overwritten):
#   ca.pem / ca.key          the cluster CA: the development CA that
#                            tools/run-dev.sh keeps in the same directory is
#                            reused when present, else a new one is made
#   node-<i>.pem / .key      for i = 1..N: the certificate of node i, signed
#                            by the CA, with CN and DNS SAN "node-<i>" (what
#                            the peer transport checks against the node id
#                            a peer claims), IP SANs 127.0.0.1 and each IP
#                            given, and extendedKeyUsage serverAuth +
#                            clientAuth (each node both dials and accepts)
# Keys are EC P-256; files are created with umask 077.
# run-dev.sh can call this with its own development directory so a local
# cluster shares the CA that clients already trust.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 DIR N [IP...]" >&2
  exit 2
fi
DIR=$1
N=$2
shift 2
case "$N" in
  ''|*[!0-9]*) echo "dev-cluster-certs: N must be a positive number, got '$N'" >&2; exit 2 ;;
esac
if [ "$N" -lt 1 ] || [ "$N" -gt 64 ]; then
  echo "dev-cluster-certs: N must be 1..64, got $N" >&2
  exit 2
fi
if ! command -v openssl >/dev/null; then
  echo "dev-cluster-certs: openssl is missing (tools/install-deps.sh installs it)" >&2
  exit 1
fi

mkdir -p "$DIR"
chmod 700 "$DIR"
cd "$DIR"
umask 077

if [ ! -f ca.pem ] || [ ! -f ca.key ]; then
  if [ -f ca.pem ] || [ -f ca.key ]; then
    echo "dev-cluster-certs: $DIR has only one of ca.pem / ca.key; refusing to guess" >&2
    exit 1
  fi
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.pem -days 825 \
    -subj "/CN=parley development CA" 2>/dev/null
fi

SANS="IP:127.0.0.1"
for ip in "$@"; do
  SANS="$SANS,IP:$ip"
done

for i in $(seq 1 "$N"); do
  name="node-$i"
  if [ -f "$name.pem" ] && [ -f "$name.key" ]; then
    continue
  fi
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
  printf 'subjectAltName=DNS:%s,%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' \
    "$name" "$SANS" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$name.pem" -days 825 -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
done
echo "dev-cluster-certs: CA and node-1..node-$N certificates in $DIR"
