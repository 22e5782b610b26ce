# parley-raft-bench: committed entries/s and CPU time per entry of the pure
# Raft core alone (issue 5): N in-process voters, instant in-memory
# persistence, a perfect network; with and without the wire codec in the
# loop. See bench/raft_bench.c. Skipped until engine/raft/raft.c exists.
if(EXISTS ${CMAKE_SOURCE_DIR}/engine/raft/raft.c)
  add_executable(parley-raft-bench ${CMAKE_CURRENT_LIST_DIR}/raft_bench.c)
  # a micro-benchmark of an engine module: links the engine internals
  target_link_libraries(parley-raft-bench PRIVATE parley_engine_internals)
  set_target_properties(parley-raft-bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                        ${CMAKE_BINARY_DIR}/bench)
else()
  message(STATUS "parley-raft-bench skipped: engine/raft/raft.c not present yet")
endif()
