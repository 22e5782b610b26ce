#!/usr/bin/env bash
# run-dev.sh — `make run`: build and start a single-node parleyd for development.
#
#   bash tools/run-dev.sh [BUILD_DIR]      (make run does: deps, then this)
#
# What it does, idempotently:
#   1. builds only what it runs (parleyd, parley, parleyctl; not the tests),
#      quietly: the compiler's output goes to BUILD_DIR/make-run.log and is
#      shown only when the build fails;
#   2. creates, under the data directory, a development CA + server
#      certificate for localhost/127.0.0.1 and an HS256 JWT secret, if they
#      are absent (never overwrites);
#   3. checks that its three ports are free: one clear message if not;
#   4. starts parleyd (logs in DATA/parleyd.log), waits until /readyz says
#      ready, and only then prints how to chat between two terminals;
#   5. stays in the foreground: Ctrl-C stops parleyd gracefully (clients get
#      GOAWAY, in-flight messages are acknowledged) and returns its status.
#
# Ports and places (the same environment keys parleyd itself reads):
#   PARLEY_PORT        plain TCP port          (default 7411)
#   PARLEY_TLS_PORT    TLS port                (default 7412)
#   PARLEY_ADMIN_PORT  admin HTTP port         (default 7480: /metrics /livez /readyz)
#   PARLEY_DATA        data directory          (default ./parley-data)
#   PARLEY_RUN_NO_BUILD=1  skip step 1 (tests/integration/test_run_dev.c)
# e.g.  PARLEY_PORT=8411 PARLEY_TLS_PORT=8412 PARLEY_ADMIN_PORT=8480 make run
# The client reads PARLEY_SERVER_PORT for the port it connects to (not
# PARLEY_PORT, which is the server's listen port).
set -euo pipefail

BUILD=${1:-build}
DATA=${PARLEY_DATA:-./parley-data}
PORT=${PARLEY_PORT:-7411}
TLS_PORT=${PARLEY_TLS_PORT:-7412}
ADMIN_PORT=${PARLEY_ADMIN_PORT:-7480}
JOBS=${JOBS:-$(nproc)}
PARLEYD="$BUILD/server/parleyd"
CTL="$BUILD/tools/parleyctl"
CLI="$BUILD/tools/parley"
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

say() { echo "run-dev: $*"; }
die() { echo "run-dev: $*" >&2; exit 1; }

# ---- 1. build what runs ------------------------------------------------------
. "$HERE/dev-build.sh"
dev_build "$BUILD"

# ---- 2. ports (checked first: nothing is created when they are busy) ----------------------------------------------------------------
port_busy() { # something accepts connections on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for p in "$PORT" "$TLS_PORT" "$ADMIN_PORT"; do
  case "$p" in ''|*[!0-9]*) die "port '$p' is not a number";; esac
done
if [ "$PORT" = "$TLS_PORT" ] || [ "$PORT" = "$ADMIN_PORT" ] || [ "$TLS_PORT" = "$ADMIN_PORT" ]; then
  die "the ports must differ: PARLEY_PORT=$PORT PARLEY_TLS_PORT=$TLS_PORT PARLEY_ADMIN_PORT=$ADMIN_PORT"
fi
for p in "$PORT" "$TLS_PORT" "$ADMIN_PORT"; do
  if port_busy "$p"; then
    die "port $p is already in use (another parleyd? \`ss -ltnp 'sport = :$p'\` shows which process).
  Stop it, or choose other ports, e.g.:
  PARLEY_PORT=8411 PARLEY_TLS_PORT=8412 PARLEY_ADMIN_PORT=8480 make run"
  fi
done

# ---- 3. development CA, certificate, JWT secret ------------------------------
DEV="$DATA/dev"
mkdir -p "$DATA"
bash "$HERE/dev-server-certs.sh" "$DEV" | sed "s/^/run-dev: /" ||
  die "could not create the development credentials in $DEV"

# ---- 4. start, wait until ready ---------------------------------------------
ABS_DEV=$(cd "$DEV" && pwd)
ABS_CLI=$(cd "$(dirname "$CLI")" && pwd)/parley
ABS_CTL=$(cd "$(dirname "$CTL")" && pwd)/parleyctl
SRVLOG="$DATA/parleyd.log"

# --admin-compact 1: the development server's admin port (loopback only)
# accepts POST /admin/compact, which parley-bench's compaction scenario uses
"$PARLEYD" --data "$DATA" --listen 127.0.0.1 \
  --port "$PORT" --tls-port "$TLS_PORT" --admin-port "$ADMIN_PORT" \
  --admin-compact 1 \
  --tls-cert "$DEV/server.pem" --tls-key "$DEV/server.key" \
  --jwt-secret-file "$DEV/jwt.secret" >>"$SRVLOG" 2>&1 &
PID=$!
stop() { kill -TERM "$PID" 2>/dev/null || true; }
trap stop INT TERM HUP

ready() { # /readyz answers 200
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$ADMIN_PORT" || return 1
  printf 'GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  IFS= read -r -t 2 line <&3 || line=
  exec 3<&- 3>&-
  case "$line" in *" 200 "*) return 0;; esac
  return 1
}
say "starting parleyd (log: $SRVLOG)"
for _ in $(seq 1 600); do                     # up to 60 s (recovery of a big data dir)
  if ! kill -0 "$PID" 2>/dev/null; then
    wait "$PID" || true
    tail -n 15 "$SRVLOG" >&2
    die "parleyd exited during start-up (log above, full log: $SRVLOG)"
  fi
  if ready 2>/dev/null; then break; fi
  sleep 0.1
done
ready 2>/dev/null || say "parleyd is not ready yet after 60 s; still waiting (log: $SRVLOG)"

cat <<EOF

parleyd is ready — data in $DATA, on 127.0.0.1:
  plain TCP $PORT, TLS $TLS_PORT, admin HTTP $ADMIN_PORT (/metrics /livez /readyz)
  (change with PARLEY_PORT, PARLEY_TLS_PORT, PARLEY_ADMIN_PORT; see README)

Chat in two other terminals (tokens are valid 24 h):

  # terminal 1 (alice)
  export PARLEY_TOKEN=\$($ABS_CTL token --secret-file $ABS_DEV/jwt.secret --sub alice)
  $ABS_CLI --ca $ABS_DEV/ca.pem --host localhost --port $TLS_PORT chat bob

  # terminal 2 (bob)
  export PARLEY_TOKEN=\$($ABS_CTL token --secret-file $ABS_DEV/jwt.secret --sub bob)
  $ABS_CLI --ca $ABS_DEV/ca.pem --host localhost --port $TLS_PORT chat alice

Ctrl-C here stops the server gracefully.

EOF

# ---- 5. foreground until parleyd stops ------------------------------------------
set +e
rc=0
while :; do
  wait "$PID"
  rc=$?
  kill -0 "$PID" 2>/dev/null || break     # a trapped signal interrupts wait
done
if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; then
  tail -n 15 "$SRVLOG" >&2
  say "parleyd stopped with status $rc (log: $SRVLOG)"
fi
exit "$rc"
