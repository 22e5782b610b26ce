# parley_peer: the node-to-node transport (server/peer.h) and parleyd's
# replication glue (server/peer_node.h: the transport driving the
# replicated engine), linked into parleyd.
# It speaks the Raft codec (raft_codec.h), which sits in engine/ or, once the
# engine's sub-folders land, in engine/raft/ behind parley_engine_internals.
add_library(parley_peer STATIC ${CMAKE_CURRENT_LIST_DIR}/peer.c
            ${CMAKE_CURRENT_LIST_DIR}/peer_wire.c
            ${CMAKE_CURRENT_LIST_DIR}/peer_node.c
            ${CMAKE_CURRENT_LIST_DIR}/peer_fwd.c
            ${CMAKE_CURRENT_LIST_DIR}/placement.c)
target_include_directories(parley_peer PUBLIC ${CMAKE_CURRENT_LIST_DIR})
if(TARGET parley_engine_internals)
  target_link_libraries(parley_peer PUBLIC parley_engine_internals)
else()
  target_link_libraries(parley_peer PUBLIC parley_engine)
endif()
target_link_libraries(parley_peer PUBLIC parley_common PkgConfig::OPENSSL
                      Threads::Threads)
