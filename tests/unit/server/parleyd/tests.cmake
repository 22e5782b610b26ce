# Unit tests of parleyd's own modules: server/chat.c (keys, records, the chat_hset table (test_chat_hset.c),
# idempotency keys, the fan-out planner, fan-out recovery on the
# in-memory engine), server/jwt.c (test_jwt.c) and server/membudget.c
# (test_membudget.c), the chat service's reads and list (test_chat_read.c,
# test_chat_list.c), and server/conn.c against a fake loop (test_conn.c:
# it defines the loop side of loop_conn.h, so loop.c is not linked). Owned by the parleyd engineer (the
# tests/unit/server/tests.cmake next door belongs to the support modules).
parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} CRITERION
                 LIBS parleyd_core parley_engine parley_proto parley_common
                 LABELS unit)
# test_conn's allocation-failure tests fail chosen allocations of the
# loop thread through these wrappers (defined in test_conn.c).
target_link_options(unit_server_parleyd_test_conn PRIVATE
                    "-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc")
