# The cluster tier (TESTING.md): several processes in network namespaces
# made by the test itself (tests/cluster/netns.sh), label `cluster`; part of
# `make test` (ctest -LE long) since it is short, and exits 77 (skipped)
# where namespaces or nftables are unavailable.
#
# cluster_peer_node is the per-namespace process of test_peer_partition
# (a Raft node on the peer transport); each test_*.c here is a small
# launcher that runs its test_*.sh script with the build's paths.
add_executable(cluster_peer_node ${CMAKE_CURRENT_LIST_DIR}/peer_node.c)
target_link_libraries(cluster_peer_node PRIVATE parley_peer parley_engine parley_common)
target_include_directories(cluster_peer_node PRIVATE ${CMAKE_SOURCE_DIR}/tests)
# cluster_netns_chaos is the checker and fault driver of test_cluster_netns
# (real parleyd processes in namespaces, driven through libparley).
add_executable(cluster_netns_chaos ${CMAKE_CURRENT_LIST_DIR}/netns_chaos.c)
target_link_libraries(cluster_netns_chaos PRIVATE parley_client parley_proto
                      parley_common PkgConfig::OPENSSL Threads::Threads)
target_include_directories(cluster_netns_chaos PRIVATE
                           ${CMAKE_SOURCE_DIR}/tests/integration)
parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} LIBS parley_common
                 LABELS cluster TIMEOUT 180)
# the netns launchers need the checker and the server built
foreach(t cluster_test_cluster_netns cluster_test_cluster_netns_long
          cluster_test_cluster_netns5 cluster_test_cluster_netns5_long
          cluster_test_cluster_unsynced cluster_test_cluster_unsynced_long
          cluster_test_cluster_walhdr cluster_test_cluster_walrec)
  if(TARGET ${t})
    add_dependencies(${t} cluster_netns_chaos)
    if(TARGET parleyd)
      add_dependencies(${t} parleyd)
    endif()
  endif()
endforeach()
# the long tier: `make test-long` only
foreach(t cluster_test_cluster_netns_long cluster_test_cluster_netns5_long
          cluster_test_cluster_unsynced_long)
  if(TARGET ${t})
    set_tests_properties(${t} PROPERTIES LABELS "cluster;long" TIMEOUT 900)
  endif()
endforeach()
# test_cluster_failover drives real parleyd processes on loopback with
# libparley (itest.h); no namespaces needed.
# test_cluster_group_failover, test_cluster_group_follower,
# test_cluster_snapshot, test_cluster_forward, test_cluster_spread and
# test_cluster_route, test_cluster_rebalance, test_cluster_presence,
# test_cluster_placement, test_cluster_placement_spread,
# test_cluster_upgrade, test_cluster_tail, test_cluster_replace
# likewise.
foreach(t cluster_test_cluster_failover cluster_test_cluster_group_failover
          cluster_test_cluster_spread
          cluster_test_cluster_group_follower cluster_test_cluster_snapshot
          cluster_test_cluster_status cluster_test_cluster_membership
          cluster_test_cluster_forward cluster_test_cluster_ops
          cluster_test_cluster_route cluster_test_cluster_rebalance
          cluster_test_cluster_presence
          cluster_test_cluster_placement
          cluster_test_cluster_placement_spread
          cluster_test_cluster_upgrade cluster_test_cluster_tail
          cluster_test_cluster_replace)
  if(TARGET ${t})
    target_link_libraries(${t} PRIVATE parley_client parley_proto
                          PkgConfig::OPENSSL Threads::Threads)
    target_include_directories(${t} PRIVATE
                               ${CMAKE_SOURCE_DIR}/tests/integration)
    if(TARGET parleyd)
      add_dependencies(${t} parleyd)
    endif()
  endif()
endforeach()
# test_cluster_status runs parleyctl cluster status
if(TARGET cluster_test_cluster_status AND TARGET parleyctl)
  add_dependencies(cluster_test_cluster_status parleyctl)
endif()
# test_cluster_membership, test_cluster_ops and test_cluster_spread run
# parleyctl cluster remove-node / status / rebalance
foreach(t cluster_test_cluster_membership cluster_test_cluster_ops
          cluster_test_cluster_spread cluster_test_cluster_placement
          cluster_test_cluster_upgrade cluster_test_cluster_replace)
  if(TARGET ${t} AND TARGET parleyctl)
    add_dependencies(${t} parleyctl)
  endif()
endforeach()
# test_cluster_replace once more, first removing a founder so that every
# partition is short until nodes 4 and 5 are added (RR_REMOVE3)
if(TARGET cluster_test_cluster_replace)
  add_test(NAME cluster_test_cluster_replace_after_removal
           COMMAND cluster_test_cluster_replace)
  set_tests_properties(cluster_test_cluster_replace_after_removal PROPERTIES
    LABELS cluster TIMEOUT 180
    ENVIRONMENT "RR_REMOVE3=1;PARLEY_BIN_DIR=${CMAKE_BINARY_DIR};PARLEY_SRC_DIR=${CMAKE_SOURCE_DIR}")
endif()

