# Unit tests of parleyd's own modules: server/chat.c (keys, records, the chat_hset table (test_chat_hset.c),
# idempotency keys, the fan-out planner, fan-out recovery on the
# in-memory engine), server/jwt.c (test_jwt.c) and server/membudget.c
# (test_membudget.c), the chat service's reads and list (test_chat_read.c,
# test_chat_list.c), server/conn.c against a fake loop (test_conn.c) and
# the request handlers of server/conn_req*.c on it (test_conn_req.c); the
# fake loop (conn_fx.h) defines the loop side of loop_conn.h, so loop.c
# is not linked. Owned by the parleyd engineer (the
# tests/unit/server/tests.cmake next door belongs to the support modules).
parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} CRITERION
                 LIBS parleyd_core parley_engine parley_proto parley_common
                 LABELS unit)
# test_conn's and test_conn_req's allocation-failure tests fail chosen
# allocations of the loop thread through these wrappers (conn_fx.h).
foreach(t unit_server_parleyd_test_conn unit_server_parleyd_test_conn_req
          unit_server_parleyd_test_conn_fwd)
  target_link_options(${t} PRIVATE
                      "-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc")
endforeach()
