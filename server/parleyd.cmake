# parleyd: the server. parleyd_core holds everything but main() so that
# unit tests (tests/unit/server/chat) can link the pure chat model.
# Uses the server support modules (auth, config, metrics, admin HTTP) of
# target parley_server_support.
add_library(parleyd_core STATIC
  ${CMAKE_CURRENT_LIST_DIR}/chat.c
  ${CMAKE_CURRENT_LIST_DIR}/loop.c
  ${CMAKE_CURRENT_LIST_DIR}/conn.c)
target_include_directories(parleyd_core PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(parleyd_core PUBLIC parley_engine parley_proto
                      PkgConfig::URING PkgConfig::OPENSSL Threads::Threads)

add_executable(parleyd ${CMAKE_CURRENT_LIST_DIR}/main.c)
target_link_libraries(parleyd PRIVATE parleyd_core)
if(TARGET parley_server_support)
  target_link_libraries(parleyd PRIVATE parley_server_support)
endif()
