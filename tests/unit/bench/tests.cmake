# Unit tests for parley-bench's helpers (bench/): the latency histogram.
if(TARGET parley_bench_hist)
  parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} CRITERION
                   LIBS parley_bench_hist m LABELS unit)
endif()
