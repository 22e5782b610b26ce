# Unit tests for parley-bench's helpers (bench/): the latency histogram, the
# NATS line parser of the delivery reference, the --repeat spread and the
# --parleyd-args expansion.
if(TARGET parley_bench_hist AND TARGET parley_bench_natsproto AND TARGET parley_bench_spread
   AND TARGET parley_bench_args)
  parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} CRITERION
                   LIBS parley_bench_hist parley_bench_natsproto parley_bench_spread
                        parley_bench_args m
                   LABELS unit)
endif()
