# parley: the terminal chat client (tools/parley_cli.c) on libparley; the
# interactive mode (cli_chat.c) edits lines with libedit (BSD licence).
pkg_check_modules(LIBEDIT REQUIRED IMPORTED_TARGET libedit)
add_library(parley_cli_core STATIC ${CMAKE_CURRENT_LIST_DIR}/cli_core.c
            ${CMAKE_CURRENT_LIST_DIR}/cli_outbox.c)
target_include_directories(parley_cli_core PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(parley_cli_core PUBLIC parley_client)
add_executable(parley ${CMAKE_CURRENT_LIST_DIR}/parley_cli.c
               ${CMAKE_CURRENT_LIST_DIR}/cli_chat.c)
target_link_libraries(parley PRIVATE parley_cli_core PkgConfig::LIBEDIT Threads::Threads)
