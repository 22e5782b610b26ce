# Unit tests for parley-bench's helpers (bench/): the latency histogram, the
# NATS line parser of the delivery reference, the --repeat spread, the
# --parleyd-args expansion, the admin port's HTTP status line, the JSON result files, the workload profiles
# and the capacity planner's arithmetic.
if(TARGET parley_bench_hist AND TARGET parley_bench_natsproto AND TARGET parley_bench_spread
   AND TARGET parley_bench_args AND TARGET parley_bench_http AND TARGET parley_bench_json AND TARGET parley_bench_plan)
  parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} CRITERION
                   LIBS parley_bench_hist parley_bench_natsproto parley_bench_spread
                        parley_bench_args parley_bench_http parley_bench_json parley_bench_profile
                        parley_bench_plan m
                   LABELS unit)
endif()
