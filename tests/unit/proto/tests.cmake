# proto unit tests: test_codec.c (wire codec), test_client.c (libparley
# against a fake server thread on 127.0.0.1, plain TCP and TLS).
parley_add_tests(DIR ${CMAKE_CURRENT_LIST_DIR} CRITERION
                 LIBS parley_client parley_proto parley_common
                      PkgConfig::ZSTD PkgConfig::OPENSSL Threads::Threads
                 LABELS unit)
# lets test_codec find docs/PROTOCOL.md when run by hand outside ctest
target_compile_definitions(unit_proto_test_codec PRIVATE
                           PARLEY_SRC_DIR_DEFAULT="${CMAKE_SOURCE_DIR}")
