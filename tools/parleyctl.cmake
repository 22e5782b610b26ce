# parleyctl: the admin CLI. Subcommands in tools/ctl_*.c.
file(GLOB CTL_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/ctl_*.c)
add_executable(parleyctl ${CMAKE_CURRENT_LIST_DIR}/parleyctl.c ${CTL_SOURCES})
target_include_directories(parleyctl PRIVATE ${CMAKE_CURRENT_LIST_DIR}
                           ${CMAKE_SOURCE_DIR}/server)
target_link_libraries(parleyctl PRIVATE parley_engine)
if(TARGET parley_server_support)
  target_link_libraries(parleyctl PRIVATE parley_server_support)
endif()
