# proto: the wire codec (parley_proto, pure, fuzzed) and libparley
# (parley_client: TCP/TLS client library) plus its pkg-config file.
add_library(parley_proto STATIC ${CMAKE_CURRENT_LIST_DIR}/codec.c)
target_include_directories(parley_proto PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(parley_proto PUBLIC parley_common PkgConfig::ZSTD)
set_property(TARGET parley_proto PROPERTY POSITION_INDEPENDENT_CODE ON)

add_library(parley_client STATIC ${CMAKE_CURRENT_LIST_DIR}/client.c)
target_include_directories(parley_client PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(parley_client PUBLIC parley_proto PkgConfig::OPENSSL
                      Threads::Threads)
set_property(TARGET parley_client PROPERTY POSITION_INDEPENDENT_CODE ON)

# pkg-config: libparley.pc describes an installed copy (`cmake --install`);
# libparley-uninstalled.pc, both in the build directory, points at this
# build tree so programs can link against it without installing
# (PKG_CONFIG_PATH=<build> pkg-config --cflags --libs libparley-uninstalled).
include(GNUInstallDirs)
install(TARGETS parley_client parley_proto parley_common
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${CMAKE_CURRENT_LIST_DIR}/parley_client.h
              ${CMAKE_CURRENT_LIST_DIR}/parley_proto.h
              ${CMAKE_SOURCE_DIR}/common/parley_common.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/parley)
install(FILES ${CMAKE_BINARY_DIR}/libparley.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

set(PARLEY_PC_CFLAGS "-I${CMAKE_INSTALL_FULL_INCLUDEDIR}/parley")
set(PARLEY_PC_LIBS "-L${CMAKE_INSTALL_FULL_LIBDIR} -lparley_client -lparley_proto -lparley_common")
configure_file(${CMAKE_CURRENT_LIST_DIR}/libparley.pc.in
               ${CMAKE_BINARY_DIR}/libparley.pc @ONLY)
set(PARLEY_PC_CFLAGS "-I${CMAKE_CURRENT_LIST_DIR} -I${CMAKE_SOURCE_DIR}/common")
set(PARLEY_PC_LIBS "-L${CMAKE_BINARY_DIR}/proto -L${CMAKE_BINARY_DIR}/common -lparley_client -lparley_proto -lparley_common")
configure_file(${CMAKE_CURRENT_LIST_DIR}/libparley.pc.in
               ${CMAKE_BINARY_DIR}/libparley-uninstalled.pc @ONLY)
