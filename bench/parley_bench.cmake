# parley-bench: load generator and capacity-planning harness (bench/).
# Sources: bench/parley_bench.c and bench/bench_*.c. Needs hiredis for the
# Redis peer (libhiredis-dev, installed by tools/install-deps.sh) and the
# engine implementation; without either the target is skipped with a
# message instead of breaking everyone's build.
# The histogram is its own tiny library so tests/unit/bench can test it
# whether or not the rest of parley-bench can be built.
add_library(parley_bench_hist STATIC ${CMAKE_CURRENT_LIST_DIR}/bench_hist.c)
# Likewise the NATS protocol parser of the delivery mode's reference peer.
add_library(parley_bench_natsproto STATIC ${CMAKE_CURRENT_LIST_DIR}/bench_natsproto.c)
# ... and the min/median/max of the --repeat summaries.
add_library(parley_bench_spread STATIC ${CMAKE_CURRENT_LIST_DIR}/bench_spread.c)
target_link_libraries(parley_bench_spread PUBLIC m)
# ... and the --parleyd-args template expansion.
add_library(parley_bench_args STATIC ${CMAKE_CURRENT_LIST_DIR}/bench_args.c)
# ... and the admin port's HTTP status line (compaction mode).
add_library(parley_bench_http STATIC ${CMAKE_CURRENT_LIST_DIR}/bench_http.c)
# ... and the result files (JSON writer and reader), the workload profiles
# and the capacity planner's arithmetic (issue 14).
add_library(parley_bench_json STATIC ${CMAKE_CURRENT_LIST_DIR}/bench_json.c)
target_link_libraries(parley_bench_json PUBLIC parley_bench_hist parley_common m)
add_library(parley_bench_profile STATIC ${CMAKE_CURRENT_LIST_DIR}/bench_profile.c)
target_link_libraries(parley_bench_profile PUBLIC parley_common m)
add_library(parley_bench_plan STATIC ${CMAKE_CURRENT_LIST_DIR}/bench_plan.c)
target_link_libraries(parley_bench_plan PUBLIC parley_bench_profile parley_common m)

pkg_check_modules(HIREDIS IMPORTED_TARGET hiredis)
if(NOT HIREDIS_FOUND)
  message(WARNING "parley-bench skipped: hiredis not found (run tools/install-deps.sh)")
elseif(NOT EXISTS ${CMAKE_SOURCE_DIR}/engine/open.c)
  message(STATUS "parley-bench skipped: engine/open.c not present yet")
else()
  file(GLOB PARLEY_BENCH_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/bench_*.c)
  list(REMOVE_ITEM PARLEY_BENCH_SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_hist.c
       ${CMAKE_CURRENT_LIST_DIR}/bench_natsproto.c ${CMAKE_CURRENT_LIST_DIR}/bench_spread.c
       ${CMAKE_CURRENT_LIST_DIR}/bench_args.c ${CMAKE_CURRENT_LIST_DIR}/bench_http.c
       ${CMAKE_CURRENT_LIST_DIR}/bench_json.c
       ${CMAKE_CURRENT_LIST_DIR}/bench_profile.c ${CMAKE_CURRENT_LIST_DIR}/bench_plan.c)
  add_executable(parley-bench ${CMAKE_CURRENT_LIST_DIR}/parley_bench.c
                 ${PARLEY_BENCH_SOURCES})
  target_include_directories(parley-bench PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_include_directories(parley-bench PRIVATE ${CMAKE_SOURCE_DIR}/proto)
  # server modes speak the wire protocol through the pure codec
  target_link_libraries(parley-bench PRIVATE parley_bench_hist parley_bench_natsproto parley_bench_spread parley_bench_args parley_bench_http
                        parley_bench_json parley_bench_profile parley_bench_plan parley_client parley_engine parley_proto
                        PkgConfig::HIREDIS PkgConfig::OPENSSL)
  set_target_properties(parley-bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                        ${CMAKE_BINARY_DIR}/bench)
endif()
