# parley: the terminal chat client (tools/parley_cli.c) on libparley.
add_executable(parley ${CMAKE_CURRENT_LIST_DIR}/parley_cli.c)
target_link_libraries(parley PRIVATE parley_client)
