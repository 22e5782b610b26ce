# parleyd: the server. parleyd_core holds everything but main() so that
# unit tests (tests/unit/server/chat) can link the pure chat model.
# jwt.c / admin.c / the configuration in main.c are parleyd's own (the
# planned parley_server_support modules had not landed when this was
# written); parleyd links parley_server_support too when it exists.
add_library(parleyd_core STATIC
  ${CMAKE_CURRENT_LIST_DIR}/chat.c
  ${CMAKE_CURRENT_LIST_DIR}/chat_group.c
  ${CMAKE_CURRENT_LIST_DIR}/chat_fanout_read.c
  ${CMAKE_CURRENT_LIST_DIR}/live.c
  ${CMAKE_CURRENT_LIST_DIR}/chat_receipt.c
  ${CMAKE_CURRENT_LIST_DIR}/chat_read.c
  ${CMAKE_CURRENT_LIST_DIR}/chat_edit.c
  ${CMAKE_CURRENT_LIST_DIR}/chat_retention.c
  ${CMAKE_CURRENT_LIST_DIR}/chat_list.c
  ${CMAKE_CURRENT_LIST_DIR}/errmap.c
  ${CMAKE_CURRENT_LIST_DIR}/srv.c
  ${CMAKE_CURRENT_LIST_DIR}/loop.c
  ${CMAKE_CURRENT_LIST_DIR}/conn.c
  ${CMAKE_CURRENT_LIST_DIR}/conn_req.c
  ${CMAKE_CURRENT_LIST_DIR}/conn_req_send.c
  ${CMAKE_CURRENT_LIST_DIR}/conn_req_sync.c
  ${CMAKE_CURRENT_LIST_DIR}/conn_req_group.c
  ${CMAKE_CURRENT_LIST_DIR}/conn_req_rcpt.c
  ${CMAKE_CURRENT_LIST_DIR}/conn_req_presence.c
  ${CMAKE_CURRENT_LIST_DIR}/membudget.c
  ${CMAKE_CURRENT_LIST_DIR}/jwt.c
  ${CMAKE_CURRENT_LIST_DIR}/ratelimit.c
  ${CMAKE_CURRENT_LIST_DIR}/presence.c
  ${CMAKE_CURRENT_LIST_DIR}/presence_relay.c
  ${CMAKE_CURRENT_LIST_DIR}/proxy.c
  ${CMAKE_CURRENT_LIST_DIR}/route.c
  ${CMAKE_CURRENT_LIST_DIR}/tail_relay.c
  ${CMAKE_CURRENT_LIST_DIR}/admin.c)
target_include_directories(parleyd_core PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(parleyd_core PUBLIC parley_engine parley_proto
                      PkgConfig::URING PkgConfig::OPENSSL Threads::Threads)

add_executable(parleyd ${CMAKE_CURRENT_LIST_DIR}/main.c
               ${CMAKE_CURRENT_LIST_DIR}/proxy_node.c)
target_link_libraries(parleyd PRIVATE parleyd_core parley_peer)
if(TARGET parley_server_support)
  target_link_libraries(parleyd PRIVATE parley_server_support)
endif()
