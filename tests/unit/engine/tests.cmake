parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} CRITERION
                 LIBS parley_engine_internals LABELS unit)
# test_engine_history runs the 10-million-entry history run under
# PARLEY_LONG=1 (make test-long): a few minutes, more on a busy machine.
set_tests_properties(unit_engine_test_engine_history PROPERTIES TIMEOUT 3600)
