# parley-apply-bench: CPU time per command of the partition state machine
# (engine/log/part_apply.c) applying a replicated chat load as a
# follower's shard does, with and without the look-ahead (issue 12). See
# bench/apply_bench.c.
add_executable(parley-apply-bench ${CMAKE_CURRENT_LIST_DIR}/apply_bench.c)
# a micro-benchmark of an engine module: links the engine internals
target_link_libraries(parley-apply-bench PRIVATE parley_engine_internals)
set_target_properties(parley-apply-bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                      ${CMAKE_BINARY_DIR}/bench)
