# Integration tests: real parleyd processes on loopback, libparley clients
# (see itest.h). Each test_*.c is one executable with its own main().
parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR}
  LIBS parley_client parley_proto PkgConfig::OPENSSL
  LABELS integration TIMEOUT 300)
# ctest runs what is built: make sure parleyd (and parleyctl, which mints
# RS256/ES256 tokens in test_admin_config) are built with the tests.
file(GLOB _it_srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/test_*.c)
foreach(_src ${_it_srcs})
  get_filename_component(_name ${_src} NAME_WE)
  if(TARGET parleyd AND TARGET integration_${_name})
    add_dependencies(integration_${_name} parleyd)
  endif()
  if(TARGET parleyctl AND TARGET integration_${_name})
    add_dependencies(integration_${_name} parleyctl)
  endif()
endforeach()
# test_cli drives the terminal client itself.
if(TARGET parley AND TARGET integration_test_cli)
  add_dependencies(integration_test_cli parley parleyctl)
endif()
# test_groups drives it too (/group, /add, /remove, /leave, /members).
if(TARGET parley AND TARGET integration_test_groups)
  add_dependencies(integration_test_groups parley)
endif()
if(TARGET parley AND TARGET integration_test_group_set)
  add_dependencies(integration_test_group_set parley)
endif()
if(TARGET parley AND TARGET integration_test_groups_large)
  add_dependencies(integration_test_groups_large parley)
endif()
if(TARGET parley AND TARGET integration_test_cli_receipts)
  add_dependencies(integration_test_cli_receipts parley)
endif()
