# parley-history-ratio: history-segment compression on a chat-like corpus
# (issue 4). Bytes on disk vs raw payload bytes, with the partition's
# trained zstd dictionary and without, side by side; and (issue 14) bytes
# per stored record against Cassandra's default table compression (LZ4
# over 16 KiB chunks, liblz4 from tools/install-deps.sh) and a zstd -19
# floor, with --json. See bench/history_ratio.c.
add_executable(parley-history-ratio ${CMAKE_CURRENT_LIST_DIR}/history_ratio.c)
# a micro-benchmark of engine modules (segments, dictionaries): links the
# engine internals
target_link_libraries(parley-history-ratio PRIVATE parley_engine_internals parley_bench_json)
find_package(PkgConfig)
pkg_check_modules(RATIO_LZ4 IMPORTED_TARGET liblz4)
if(RATIO_LZ4_FOUND)
  target_compile_definitions(parley-history-ratio PRIVATE HAVE_LZ4=1)
  target_link_libraries(parley-history-ratio PRIVATE PkgConfig::RATIO_LZ4)
else()
  message(STATUS "parley-history-ratio: liblz4 not found, the LZ4 peer is skipped (tools/install-deps.sh installs liblz4-dev)")
endif()
set_target_properties(parley-history-ratio PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                      ${CMAKE_BINARY_DIR}/bench)
