# `parleyctl token` (tools/ctl_token.c, picked up by parleyctl.cmake's
# ctl_*.c glob) signs with OpenSSL: link it. Included after parleyctl.cmake
# (files are included in name order).
if(TARGET parleyctl)
  target_link_libraries(parleyctl PRIVATE PkgConfig::OPENSSL)
endif()
