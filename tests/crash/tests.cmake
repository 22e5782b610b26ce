# Crash tier: real processes, real files, real fdatasync, kill -9.
parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} LIBS parley_engine
                 LABELS crash TIMEOUT 900)
