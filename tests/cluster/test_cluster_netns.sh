#!/usr/bin/env bash
# test_cluster_netns.sh — real parleyd processes in network namespaces
# under faults, checked through libparley (netns_chaos.c does the work):
# three or five server namespaces and one client namespace on a bridge
# (netns.sh: nodes 1..N are the servers, node N+1 the checker, whose
# traffic is never dropped). The checker starts the servers with `ip netns exec`,
# cuts links with nftables (through netns.sh's functions), and verifies
# that nothing acknowledged is lost, doubled, reordered or renumbered.
#
#   bash tests/cluster/test_cluster_netns.sh PATH/TO/cluster_netns_chaos short|long [3|5]
# Exit: 0 pass, 1 fail, 77 skipped (no namespaces / nftables here).
set -u
CHAOS=${1:?usage: $0 PATH/TO/cluster_netns_chaos short|long}
MODE=${2:-short}
NODES=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)

# shellcheck source=netns.sh
source "$HERE/netns.sh"
netns_require || exit 77

cleanup() {
  netns_down
}
trap cleanup EXIT
trap 'exit 1' INT TERM

netns_up $((NODES + 1)) || { echo "FAIL: could not create the namespaces" >&2; exit 1; }
# the checker runs in node 4's namespace; it exports the names so the
# checker's own calls into netns.sh address the same namespaces
NETNS_PREFIX=$NETNS_PREFIX NETNS_SUBNET=$NETNS_SUBNET \
  ip netns exec "$(netns_name $((NODES + 1)))" "$CHAOS" "$MODE" "$NODES"
rc=$?
exit $rc
