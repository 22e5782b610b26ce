#!/usr/bin/env bash
# netns.sh — network namespaces for the cluster tests (TESTING.md), to be
# sourced by a test script:
#
#   source tests/cluster/netns.sh
#   netns_require || exit 77        # no namespaces / nftables here: skip
#   trap netns_down EXIT            # cleans up even when the test fails
#   netns_up 3                      # nodes 1..3 at 10.99.0.1..3
#   netns_spawn 1 ./prog args...    # background process in node 1 (killed
#                                   # by netns_down)
#   netns_isolate 2                 # node 2 cut off both ways
#   netns_drop_from 1 3             # node 1 stops receiving from node 3
#   netns_loss 1 20                 # node 1 drops 20% of what it receives
#   netns_loss 1 20 3               # ... of what it receives from node 3
#   netns_heal                      # remove every fault rule
#   netns_down
#
# Layout: one namespace per node ("<prefix>n<i>", interface eth0 with
# NETNS_SUBNET.<i>/24) and one for the bridge ("<prefix>br", bridge br0 with
# the veth peers p<i>); nothing is created in the host namespace, so a
# failed test leaves no interface behind on the host. The prefix includes
# the shell's PID, so tests can run side by side.
#
# Quirks of this kernel (TESTING.md) handled here:
#   - the bridge lives in a namespace of its own, never on the host;
#   - br_netfilter is loaded: net.bridge.bridge-nf-call-{ip,ip6,arp}tables
#     are turned off inside the bridge namespace, so bridged frames do not
#     go through the host's netfilter hooks;
#   - IPv6 is off in every test namespace, so no traffic bypasses the
#     IPv4-only fault rules;
#   - faults are nftables rules in a `netdev` table hooked at ingress of the
#     RECEIVING node's eth0, so a sender sees silence (a drop in the
#     sender's own output path would return EPERM to the program instead).
#
# Every function returns non-zero on failure; netns_down never fails.

NETNS_PREFIX=${NETNS_PREFIX:-pt$$}
NETNS_SUBNET=${NETNS_SUBNET:-10.99.0}
NETNS_N=0
NETNS_PIDS=()

netns_log() {
  echo "netns: $*" >&2
}

netns_name() { echo "${NETNS_PREFIX}n$1"; }
netns_ip() { echo "${NETNS_SUBNET}.$1"; }

# 0 when this machine can run namespace tests, else 1 (with the reason).
netns_require() {
  local t="${NETNS_PREFIX}probe"
  for c in ip nft; do
    if ! command -v "$c" >/dev/null 2>&1; then
      netns_log "skip: '$c' is not installed (tools/install-deps.sh)"
      return 1
    fi
  done
  if ! ip netns add "$t" 2>/dev/null; then
    netns_log "skip: cannot create network namespaces here (need root / CAP_SYS_ADMIN)"
    return 1
  fi
  if ! ip netns exec "$t" nft list tables >/dev/null 2>&1; then
    ip netns del "$t" 2>/dev/null
    netns_log "skip: nftables does not work inside a namespace here"
    return 1
  fi
  ip netns del "$t" 2>/dev/null
  return 0
}

# netns_up N: the bridge namespace and nodes 1..N.
netns_up() {
  local n=$1 br="${NETNS_PREFIX}br" i ns
  ip netns add "$br" || return 1
  NETNS_N=$n
  ip netns exec "$br" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
    net.ipv6.conf.default.disable_ipv6=1 >/dev/null || return 1
  # br_netfilter would pass bridged frames through netfilter: off here
  for k in iptables ip6tables arptables; do
    if [ -e "/proc/sys/net/bridge/bridge-nf-call-$k" ]; then
      ip netns exec "$br" sysctl -qw "net.bridge.bridge-nf-call-$k=0" >/dev/null || return 1
    fi
  done
  ip -n "$br" link add br0 type bridge || return 1
  ip -n "$br" link set lo up || return 1
  ip -n "$br" link set br0 up || return 1
  for i in $(seq 1 "$n"); do
    ns=$(netns_name "$i")
    ip netns add "$ns" || return 1
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
      net.ipv6.conf.default.disable_ipv6=1 >/dev/null || return 1
    ip link add eth0 netns "$ns" type veth peer name "p$i" netns "$br" || return 1
    ip -n "$br" link set "p$i" master br0 up || return 1
    ip -n "$ns" link set lo up || return 1
    ip -n "$ns" addr add "$(netns_ip "$i")/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up || return 1
  done
  # every node reaches every other before the test starts
  for i in $(seq 1 "$n"); do
    for j in $(seq 1 "$n"); do
      [ "$i" = "$j" ] && continue
      local ok=0
      for _ in $(seq 1 50); do
        if netns_reaches "$i" "$j"; then
          ok=1
          break
        fi
        sleep 0.1
      done
      if [ $ok = 0 ]; then
        netns_log "node $i cannot reach node $j"
        return 1
      fi
    done
  done
  return 0
}

# netns_reaches I J: node I gets an answer from node J (a TCP connect to
# a closed port answered by a reset; no ping binary needed).
netns_reaches() {
  local out
  out=$(ip netns exec "$(netns_name "$1")" timeout 2 bash -c \
    "exec 3<>/dev/tcp/$(netns_ip "$2")/9" 2>&1)
  case "$out" in
    *refused*) return 0 ;;
  esac
  return 1
}

# netns_exec I CMD...: run CMD in node I's namespace (foreground).
netns_exec() {
  local i=$1
  shift
  ip netns exec "$(netns_name "$i")" "$@"
}

# netns_spawn I CMD...: run CMD in node I's namespace in the background;
# its PID is remembered (and killed by netns_down). Sets NETNS_LAST_PID.
netns_spawn() {
  local i=$1
  shift
  ip netns exec "$(netns_name "$i")" "$@" &
  NETNS_LAST_PID=$!
  NETNS_PIDS+=("$NETNS_LAST_PID")
}

# The fault table of node I (created on first use).
netns_fault_table() {
  local ns
  ns=$(netns_name "$1")
  ip netns exec "$ns" nft list table netdev fault >/dev/null 2>&1 && return 0
  ip netns exec "$ns" nft -f - <<EOF
table netdev fault {
  chain ingress {
    type filter hook ingress device "eth0" priority -500; policy accept;
  }
}
EOF
}

# netns_drop_from R S: node R stops receiving anything from node S
# (one-way loss: S still hears R).
netns_drop_from() {
  netns_fault_table "$1" || return 1
  netns_exec "$1" nft add rule netdev fault ingress ip saddr "$(netns_ip "$2")" drop
}

# netns_isolate I: node I is cut off from every other node, both ways
# (each receiver drops what comes from the other side).
netns_isolate() {
  local i=$1 j
  for j in $(seq 1 "$NETNS_N"); do
    [ "$j" = "$i" ] && continue
    netns_drop_from "$i" "$j" || return 1
    netns_drop_from "$j" "$i" || return 1
  done
}

# netns_loss R PCT [S]: node R drops PCT% of the IPv4 packets it receives
# (from node S only, when given: a lossy one-way link S -> R).
netns_loss() {
  netns_fault_table "$1" || return 1
  local from=(meta protocol ip)
  [ -n "${3:-}" ] && from=(ip saddr "$(netns_ip "$3")")
  if [ "$2" -ge 100 ]; then
    netns_exec "$1" nft add rule netdev fault ingress "${from[@]}" drop
  else
    netns_exec "$1" nft add rule netdev fault ingress "${from[@]}" numgen random mod 100 \< "$2" drop
  fi
}

# netns_heal: every fault rule removed.
netns_heal() {
  local i
  for i in $(seq 1 "$NETNS_N"); do
    netns_exec "$i" nft delete table netdev fault 2>/dev/null
  done
  return 0
}

# netns_down: kill spawned processes, delete the namespaces. Idempotent.
netns_down() {
  local pid i
  for pid in "${NETNS_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${NETNS_PIDS[@]}"; do
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  NETNS_PIDS=()
  for i in $(seq 1 "$NETNS_N"); do
    ip netns del "$(netns_name "$i")" 2>/dev/null
  done
  ip netns del "${NETNS_PREFIX}br" 2>/dev/null
  NETNS_N=0
  return 0
}
