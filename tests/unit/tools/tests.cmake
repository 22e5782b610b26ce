# Tools are tested as users run them: the real binaries on real files.
parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} CRITERION
                 LIBS parley_engine LABELS unit)
