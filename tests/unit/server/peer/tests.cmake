# Unit tests of the peer transport (server/peer.c, server/peer_wire.c), all
# Criterion: test_peer_wire.c (the pure frame/HELLO/REJECT codec and the
# backoff), test_peer.c (real loopback sockets: handshake refusals,
# backpressure, deadlines, limits, mutual TLS), test_peer_raft.c (Raft
# groups of 3 and 5 over real peer links, raft_node.h).
parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} CRITERION
                 LIBS parley_peer parley_engine parley_common
                 LABELS unit TIMEOUT 600)
