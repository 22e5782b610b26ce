#!/usr/bin/env bash
# test_peer_partition.sh — a 3-node Raft group over the peer transport, one
# process per network namespace (netns.sh), through a partition of its
# leader:
#   1. the three nodes (cluster_peer_node) elect a leader L and commit;
#   2. L is cut off with nftables (each receiver drops the other side),
#      long enough for the transport to declare its links dead;
#   3. the other two elect a new leader among themselves and keep
#      committing;
#   4. the rules are removed: the links are redialled (reconnects counted)
#      and L rejoins in the new term;
#   5. one-way loss: the two followers stop receiving from the current
#      leader (which still hears them): they elect one of themselves; the
#      rules are removed and all three follow one leader again;
#   6. once proposals stop, all three report the same applied index and
#      the same digest of their applied logs.
# Only behaviour is checked; every wait is bounded (WAIT seconds).
#
#   bash tests/cluster/test_peer_partition.sh PATH/TO/cluster_peer_node
# Exit: 0 pass, 1 fail, 77 skipped (no namespaces / nftables here).
set -u
NODE=${1:?usage: $0 PATH/TO/cluster_peer_node}
HERE=$(cd "$(dirname "$0")" && pwd)
WAIT=${PARLEY_CLUSTER_WAIT:-30}
PORT=7600
N=3

# shellcheck source=netns.sh
source "$HERE/netns.sh"
netns_require || exit 77

TMP=$(mktemp -d /tmp/parley-cluster-XXXXXX)
cleanup() {
  netns_down
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
  echo "FAIL: $*" >&2
  for i in $(seq 1 $N); do
    echo "  node $i: $(cat "$TMP/s$i" 2>/dev/null)" >&2
    tail -n 5 "$TMP/log$i" >&2 2>/dev/null
  done
  exit 1
}

# field I KEY: KEY's value in node I's status line
field() {
  sed -n "s/.* $2=\([^ ]*\).*/\1/p; s/^$2=\([^ ]*\).*/\1/p" "$TMP/s$1" 2>/dev/null | head -n1
}

# agreed_leader "1 2 3": the leader every listed node names, when it leads
# and all are in its term; empty otherwise.
agreed_leader() {
  local lead="" t="" i l
  for i in $1; do
    l=$(field "$i" leader)
    [ -n "$l" ] && [ "$l" != 0 ] || return 0
    [ -z "$lead" ] || [ "$lead" = "$l" ] || return 0
    lead=$l
    [ -z "$t" ] || [ "$t" = "$(field "$i" term)" ] || return 0
    t=$(field "$i" term)
  done
  case " $1 " in *" $lead "*) ;; *) return 0 ;; esac
  [ "$(field "$lead" role)" = leader ] && echo "$lead"
}

# wait_for SECONDS CMD...: until CMD succeeds, or fail
wait_for() {
  local s=$1 end
  shift
  end=$(( $(date +%s) + s ))
  while [ "$(date +%s)" -le "$end" ]; do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

netns_up $N || fail "could not create the namespaces"

for i in $(seq 1 $N); do
  args=(--node "$i" --listen "$(netns_ip "$i"):$PORT" --status "$TMP/s$i"
        --stop-file "$TMP/stop")
  for j in $(seq 1 $N); do
    [ "$i" = "$j" ] || args+=(--peer "$j=$(netns_ip "$j"):$PORT")
  done
  netns_spawn "$i" "$NODE" "${args[@]}" 2>"$TMP/log$i"
done

have_leader() { L=$(agreed_leader "1 2 3"); [ -n "$L" ]; }
wait_for "$WAIT" have_leader || fail "no leader elected"
commits() { [ "$(field "$L" commit)" -gt 100 ]; }
wait_for "$WAIT" commits || fail "leader $L does not commit"
TERM0=$(field "$L" term)
echo "leader $L elected in term $TERM0, commit $(field "$L" commit)"

netns_isolate "$L" || fail "nftables partition of node $L"
OTHERS=$(for i in $(seq 1 $N); do [ "$i" = "$L" ] || echo -n "$i "; done)
new_leader() {
  M=$(agreed_leader "$OTHERS")
  [ -n "$M" ] && [ "$M" != "$L" ] && [ "$(field "$M" term)" -gt "$TERM0" ]
}
wait_for "$WAIT" new_leader || fail "the majority ($OTHERS) elected no new leader"
C1=$(field "$M" commit)
progress() { [ "$(field "$M" commit)" -gt $((C1 + 50)) ]; }
wait_for "$WAIT" progress || fail "new leader $M does not commit"
echo "leader $L partitioned: node $M leads term $(field "$M" term), commit $C1 -> $(field "$M" commit)"

# hold the partition until the transport itself declared L's links dead
# (read deadline), so healing exercises redial with backoff, not just TCP
# retransmission
links_dead() { [ "$(field "$L" links_up)" = 0 ] && [ "$(field "$L" dead)" -ge 1 ]; }
wait_for "$WAIT" links_dead || fail "node $L's links were not declared dead while cut off"
R0=$(( $(field 1 reconnects) + $(field 2 reconnects) + $(field 3 reconnects) ))
netns_heal
# rejoined: all three agree on a leader of a term after the partition,
# and L applied entries committed while it was cut off
rejoined() {
  local a
  a=$(agreed_leader "1 2 3")
  [ -n "$a" ] && [ "$(field "$L" term)" -gt "$TERM0" ] &&
    [ "$(field "$L" applied)" -gt "$C1" ]
}
wait_for "$WAIT" rejoined || fail "node $L did not rejoin after the rules were removed"
relinked() {
  local i
  for i in $(seq 1 $N); do [ "$(field "$i" links_up)" = $((N - 1)) ] || return 1; done
  [ $(( $(field 1 reconnects) + $(field 2 reconnects) + $(field 3 reconnects) )) -gt "$R0" ]
}
wait_for "$WAIT" relinked || fail "the links to node $L did not come back"
echo "rules removed: node $L rejoined, leader $(agreed_leader "1 2 3") term $(field "$L" term)"

# one-way loss: the followers stop hearing the current leader (it still
# hears them); they elect one of themselves, and after the rules are
# removed everyone follows the same leader again
L2=$(agreed_leader "1 2 3")
TERM1=$(field "$L2" term)
for i in $(seq 1 $N); do
  [ "$i" = "$L2" ] || netns_drop_from "$i" "$L2" || fail "nftables one-way rule"
done
OTHERS2=$(for i in $(seq 1 $N); do [ "$i" = "$L2" ] || echo -n "$i "; done)
oneway_leader() {
  M2=$(agreed_leader "$OTHERS2")
  [ -n "$M2" ] && [ "$M2" != "$L2" ] && [ "$(field "$M2" term)" -gt "$TERM1" ]
}
wait_for "$WAIT" oneway_leader || fail "followers deaf to leader $L2 elected no new leader"
echo "one-way loss from leader $L2: node $M2 leads term $(field "$M2" term)"
netns_heal
all_agree() {
  local a
  a=$(agreed_leader "1 2 3")
  [ -n "$a" ] && [ "$(field "$L2" term)" -gt "$TERM1" ]
}
wait_for "$WAIT" all_agree || fail "no common leader after the one-way rules were removed"

touch "$TMP/stop"
converged() {
  local a d i
  a=$(field 1 applied)
  d=$(field 1 digest)
  [ -n "$a" ] && [ "$a" -gt 0 ] || return 1
  for i in $(seq 2 $N); do
    [ "$(field "$i" applied)" = "$a" ] && [ "$(field "$i" digest)" = "$d" ] || return 1
    [ "$(field "$i" commit)" = "$a" ] || return 1
  done
}
wait_for "$WAIT" converged || fail "logs did not converge after the partition healed"
echo "PASS: all $N nodes applied $(field 1 applied) entries with digest $(field 1 digest)"
exit 0
