# parley-history-ratio: history-segment compression on a chat-like corpus
# (issue 4). Bytes on disk vs raw payload bytes, with the partition's
# trained zstd dictionary and without, side by side. See bench/history_ratio.c.
add_executable(parley-history-ratio ${CMAKE_CURRENT_LIST_DIR}/history_ratio.c)
target_include_directories(parley-history-ratio PRIVATE ${CMAKE_SOURCE_DIR}/engine)
target_link_libraries(parley-history-ratio PRIVATE parley_engine)
set_target_properties(parley-history-ratio PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                      ${CMAKE_BINARY_DIR}/bench)
