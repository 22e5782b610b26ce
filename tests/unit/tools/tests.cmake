# Tools are tested as users run them: the real binaries on real files; the
# terminal client's pure parts (tools/cli_*.c) directly.
parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} CRITERION
                 LIBS parley_engine parley_cli_core LABELS unit)
