# Fuzz tier: every tests/fuzz/fuzz_<name>.c runs under libFuzzer for a bounded
# time (20 s each in `make test`, 300 s each in `make test-long`).
add_test(NAME fuzz_all COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/run_fuzz.sh 20)
set_tests_properties(fuzz_all PROPERTIES LABELS "fuzz" TIMEOUT 1200 SKIP_RETURN_CODE 77
  ENVIRONMENT "PARLEY_BIN_DIR=${CMAKE_BINARY_DIR};PARLEY_SRC_DIR=${CMAKE_SOURCE_DIR}")
add_test(NAME fuzz_all_long COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/run_fuzz.sh 300)
set_tests_properties(fuzz_all_long PROPERTIES LABELS "fuzz;long" TIMEOUT 3600 SKIP_RETURN_CODE 77
  ENVIRONMENT "PARLEY_BIN_DIR=${CMAKE_BINARY_DIR};PARLEY_SRC_DIR=${CMAKE_SOURCE_DIR}")
