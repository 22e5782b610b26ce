# parley-history-ratio: history-segment compression on a chat-like corpus
# (issue 4). Bytes on disk vs raw payload bytes, with the partition's
# trained zstd dictionary and without, side by side. See bench/history_ratio.c.
add_executable(parley-history-ratio ${CMAKE_CURRENT_LIST_DIR}/history_ratio.c)
# a micro-benchmark of engine modules (segments, dictionaries): links the
# engine internals
target_link_libraries(parley-history-ratio PRIVATE parley_engine_internals)
set_target_properties(parley-history-ratio PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                      ${CMAKE_BINARY_DIR}/bench)
