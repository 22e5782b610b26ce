#!/usr/bin/env bash
# run-cluster.sh — `make run-cluster`: build and start a local cluster of
# parleyd nodes for development (docs/CLUSTER.md §3.1 explains what runs).
#
#   bash tools/run-cluster.sh [BUILD_DIR]   (make run-cluster does: deps, then this)
#
# What it does, idempotently:
#   1. builds only what it runs (parleyd, parley, parleyctl), quietly (the
#      compiler's output goes to BUILD_DIR/make-run.log, shown on failure);
#   2. creates under the data directory, if absent (never overwrites): a
#      development CA, a client-facing server certificate for localhost /
#      127.0.0.1, an HS256 JWT secret (the same layout as `make run`), and
#      one certificate per node for mutual TLS on the peer links
#      (tools/dev-cluster-certs.sh, signed by the same CA);
#   3. checks that every port is free: one clear message if not;
#   4. starts N nodes (data in DATA/node-<i>, logs in DATA/node-<i>.log),
#      each with the others as peers, waits until every /readyz says ready,
#      then prints how to chat through the cluster and how to kill and
#      restart a node (each node's exact command line is kept in
#      DATA/node-<i>.cmd; `bash DATA/node-<i>.cmd` restarts it);
#   5. stays in the foreground: Ctrl-C stops every node gracefully.
#
# Ports of node i (1..N) on 127.0.0.1, from PARLEY_CLUSTER_BASE (default
# 7600; chosen not to overlap `make run`'s 7411/7412/7480):
#   client TCP  BASE + 10*i + 1    client TLS  BASE + 10*i + 2
#   admin HTTP  BASE + 10*i + 3    peer        BASE + 10*i + 4
# Environment:
#   PARLEY_CLUSTER_NODES  how many nodes, 3 or 5 (default 3)
#   PARLEY_CLUSTER_DATA   data directory (default ./parley-cluster)
#   PARLEY_CLUSTER_BASE   port base (default 7600)
#   PARLEY_RUN_NO_BUILD=1 skip step 1 (tests/integration/test_run_cluster.c)
set -euo pipefail

BUILD=${1:-build}
N=${PARLEY_CLUSTER_NODES:-3}
DATA=${PARLEY_CLUSTER_DATA:-./parley-cluster}
BASE=${PARLEY_CLUSTER_BASE:-7600}
CLUSTER_ID=77
JOBS=${JOBS:-$(nproc)}
PARLEYD="$BUILD/server/parleyd"
CTL="$BUILD/tools/parleyctl"
CLI="$BUILD/tools/parley"
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

say() { echo "run-cluster: $*"; }
die() { echo "run-cluster: $*" >&2; exit 1; }

case "$N" in 3|5) ;; *) die "PARLEY_CLUSTER_NODES must be 3 or 5, got '$N'";; esac
case "$BASE" in ''|*[!0-9]*) die "PARLEY_CLUSTER_BASE '$BASE' is not a number";; esac
[ "$BASE" -ge 1024 ] && [ "$BASE" -le 65400 ] || die "PARLEY_CLUSTER_BASE must be 1024..65400"

port_of() { echo $((BASE + 10 * $1 + $2)); } # node, 1 tcp / 2 tls / 3 admin / 4 peer

# ---- 1. build what runs ------------------------------------------------------
. "$HERE/dev-build.sh"
dev_build "$BUILD"

# ---- 2. ports (checked first: nothing is created when one is busy) -----------
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for i in $(seq 1 "$N"); do
  for k in 1 2 3 4; do
    p=$(port_of "$i" "$k")
    if port_busy "$p"; then
      die "port $p (node $i) is already in use (\`ss -ltnp 'sport = :$p'\` shows which process).
  Stop it, or choose another range, e.g. PARLEY_CLUSTER_BASE=8600 make run-cluster"
    fi
  done
done

# ---- 3. certificates and the JWT secret ---------------------------------------
DEV="$DATA/dev"
mkdir -p "$DATA"
bash "$HERE/dev-server-certs.sh" "$DEV" | sed "s/^/run-cluster: /" ||
  die "could not create the development credentials in $DEV"
bash "$HERE/dev-cluster-certs.sh" "$DEV" "$N" >/dev/null ||
  die "could not create the node certificates in $DEV"

# ---- 4. start every node, wait until all are ready ---------------------------
ABS_DATA=$(cd "$DATA" && pwd)
ABS_DEV=$ABS_DATA/dev
ABS_PARLEYD=$(cd "$(dirname "$PARLEYD")" && pwd)/parleyd
ABS_CLI=$(cd "$(dirname "$CLI")" && pwd)/parley
ABS_CTL=$(cd "$(dirname "$CTL")" && pwd)/parleyctl

PIDS=()
NODES=""
for i in $(seq 1 "$N"); do
  peers=""
  for j in $(seq 1 "$N"); do
    [ "$j" = "$i" ] && continue
    peers="${peers:+$peers,}$j=127.0.0.1:$(port_of "$j" 4)"
  done
  NODES="${NODES:+$NODES,}127.0.0.1:$(port_of "$i" 1)"
  mkdir -p "$ABS_DATA/node-$i"
  cat > "$ABS_DATA/node-$i.cmd" <<EOF
# node $i of the development cluster (tools/run-cluster.sh); bash this file to restart it
exec "$ABS_PARLEYD" --data "$ABS_DATA/node-$i" --listen 127.0.0.1 \\
  --port $(port_of "$i" 1) --tls-port $(port_of "$i" 2) --admin-port $(port_of "$i" 3) \\
  --tls-cert "$ABS_DEV/server.pem" --tls-key "$ABS_DEV/server.key" \\
  --jwt-secret-file "$ABS_DEV/jwt.secret" \\
  --node-id $i --cluster-id $CLUSTER_ID --peer-port $(port_of "$i" 4) --peers $peers \\
  --peer-tls-ca "$ABS_DEV/ca.pem" --peer-tls-cert "$ABS_DEV/node-$i.pem" \\
  --peer-tls-key "$ABS_DEV/node-$i.key" >>"$ABS_DATA/node-$i.log" 2>&1
EOF
  bash "$ABS_DATA/node-$i.cmd" &
  PIDS+=("$!")
done
stop() { # the nodes started here, and any restarted by hand from a node-<i>.cmd
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  pkill -TERM -f -- "--data $ABS_DATA/node-" 2>/dev/null || true
}
trap stop INT TERM HUP

ready() { # /readyz of admin port $1 answers 200
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  IFS= read -r -t 2 line <&3 || line=
  exec 3<&- 3>&-
  case "$line" in *" 200 "*) return 0;; esac
  return 1
}
say "starting $N nodes (logs: $DATA/node-<i>.log)"
for _ in $(seq 1 600); do                     # up to 60 s
  all=1
  for i in $(seq 1 "$N"); do
    if ! kill -0 "${PIDS[$((i - 1))]}" 2>/dev/null; then
      tail -n 15 "$DATA/node-$i.log" >&2
      stop
      die "node $i exited during start-up (log above, full log: $DATA/node-$i.log)"
    fi
    ready "$(port_of "$i" 3)" 2>/dev/null || all=0
  done
  [ "$all" = 1 ] && break
  sleep 0.1
done
[ "$all" = 1 ] || say "not every node is ready after 60 s; still waiting (logs in $DATA)"

{
  echo
  echo "A $N-node parley cluster is ready — data in $DATA, on 127.0.0.1:"
  for i in $(seq 1 "$N"); do
    echo "  node $i (pid ${PIDS[$((i - 1))]}): client TCP $(port_of "$i" 1), TLS $(port_of "$i" 2), admin $(port_of "$i" 3), peer $(port_of "$i" 4) (mutual TLS)"
  done
  cat <<EOF

Chat through it in two other terminals; the client is given every node and
follows the leader (tokens are valid 24 h):

  # terminal 1 (alice)
  export PARLEY_NODES=$NODES
  export PARLEY_TOKEN=\$($ABS_CTL token --secret-file $ABS_DEV/jwt.secret --sub alice)
  $ABS_CLI chat bob

  # terminal 2 (bob): the same with --sub bob ... chat alice

Kill any one node (e.g. kill -9 ${PIDS[0]}) and keep chatting: every
acknowledged message stays, at its seq. Restart it with
  bash $ABS_DATA/node-1.cmd &
and it catches up. Each node's /metrics shows its role per partition;
  $ABS_CTL cluster status --admin 127.0.0.1:$(port_of 1 3)
shows every node, each partition's leader and every replica's lag.
Ctrl-C here stops every node gracefully.

EOF
}

# ---- 5. foreground until the nodes stop ---------------------------------------
set +e
rc=0
for p in "${PIDS[@]}"; do
  while :; do
    wait "$p"
    r=$?
    kill -0 "$p" 2>/dev/null || break      # a trapped signal interrupts wait
  done
  case "$r" in 0|130|137|143) ;; *) rc=$r;; esac
done
[ "$rc" -eq 0 ] || say "a node stopped with status $rc (logs in $DATA)"
exit "$rc"
