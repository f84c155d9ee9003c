# find_package(dexec CONFIG) gives two imported targets:
#   dexec::client  the C++ client library (client/executor.h)
#   dexec::worker  the worker library (worker/worker.h, auth/curve_keys.h)
# Relocatable: the prefix is found from where this file is installed
# (PREFIX/lib/cmake/dexec).
include(CMakeFindDependencyMacro)
# What the public headers use inline; the libraries link gRPC, ZeroMQ and
# libsodium themselves.
find_dependency(absl CONFIG)
find_dependency(Protobuf)

get_filename_component(_dexec_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.."
                       ABSOLUTE)
set(_dexec_absl absl::status absl::statusor absl::time absl::strings
    absl::str_format absl::synchronization)

if(NOT TARGET dexec::client)
  add_library(dexec::client SHARED IMPORTED)
  set_target_properties(dexec::client PROPERTIES
    IMPORTED_LOCATION "${_dexec_prefix}/lib/libdexec_client.so"
    IMPORTED_SONAME "libdexec_client.so"
    INTERFACE_INCLUDE_DIRECTORIES "${_dexec_prefix}/include/dexec"
    INTERFACE_COMPILE_FEATURES cxx_std_17
    INTERFACE_LINK_LIBRARIES "${_dexec_absl};protobuf::libprotobuf")
endif()

if(NOT TARGET dexec::worker)
  add_library(dexec::worker SHARED IMPORTED)
  set_target_properties(dexec::worker PROPERTIES
    IMPORTED_LOCATION "${_dexec_prefix}/lib/libdexec_worker.so"
    IMPORTED_SONAME "libdexec_worker.so"
    INTERFACE_INCLUDE_DIRECTORIES "${_dexec_prefix}/include/dexec"
    INTERFACE_COMPILE_FEATURES cxx_std_17
    INTERFACE_LINK_LIBRARIES
      "${_dexec_absl};absl::flat_hash_map;protobuf::libprotobuf")
endif()

unset(_dexec_absl)
unset(_dexec_prefix)
