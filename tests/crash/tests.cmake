# Crash tier: real processes, real files, real fdatasync, kill -9.
parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} LIBS parley_engine
                 LABELS crash TIMEOUT 900)
# Long tier: the history crash test on a 10-million-entry history (prefilled
# on the real directory, then kill -9 during flush/compaction/deletion).
add_test(NAME crash_history_10m COMMAND crash_test_crash_history)
set_tests_properties(crash_history_10m PROPERTIES LABELS "crash;long" TIMEOUT 3600
  ENVIRONMENT "PARLEY_CRASH_PREFILL=10000000;PARLEY_CRASH_CYCLES=10;PARLEY_BIN_DIR=${CMAKE_BINARY_DIR};PARLEY_SRC_DIR=${CMAKE_SOURCE_DIR}")
