# Unit tests for parley-bench's helpers (bench/): the latency histogram and
# the NATS line parser of the delivery reference.
if(TARGET parley_bench_hist AND TARGET parley_bench_natsproto)
  parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} CRITERION
                   LIBS parley_bench_hist parley_bench_natsproto m LABELS unit)
endif()
