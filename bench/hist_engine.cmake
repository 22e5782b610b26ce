# parley-hist-engine: the engine with its history tier on the real disk
# (issue 4): append ack latency with compaction idle vs running, and
# last-50 read latency hot / warm / cold vs Redis XREVRANGE. See
# bench/hist_engine.c. Redis part needs hiredis (optional).
add_executable(parley-hist-engine ${CMAKE_CURRENT_LIST_DIR}/hist_engine.c)
target_link_libraries(parley-hist-engine PRIVATE parley_engine)
find_package(PkgConfig)
pkg_check_modules(HIST_HIREDIS IMPORTED_TARGET hiredis)
if(HIST_HIREDIS_FOUND)
  target_compile_definitions(parley-hist-engine PRIVATE HAVE_HIREDIS=1)
  target_link_libraries(parley-hist-engine PRIVATE PkgConfig::HIST_HIREDIS)
endif()
set_target_properties(parley-hist-engine PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                      ${CMAKE_BINARY_DIR}/bench)
