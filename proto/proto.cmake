# proto: the wire codec (parley_proto, pure, fuzzed) and libparley
# (parley_client: TCP/TLS client library) plus its pkg-config file.
add_library(parley_proto STATIC ${CMAKE_CURRENT_LIST_DIR}/codec.c)
target_include_directories(parley_proto PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(parley_proto PUBLIC parley_common PkgConfig::ZSTD)
set_property(TARGET parley_proto PROPERTY POSITION_INDEPENDENT_CODE ON)
