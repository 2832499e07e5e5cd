# The installable libraries, built from the layers' objects (compiled once, position
# independent):
#   libburst      tensors, kernels, the Communicator interface and its in-process backend,
#                 every strategy, the attention layer, the cost model, .npy I/O (target burst::burst, or
#                 burst::burst_static); needs no MPI
#   libburst_mpi  the MPI backend and run_world (target burst::mpi, or burst::mpi_static;
#                 the component `mpi` of find_package)
# `cmake --install` puts them, the public headers (include/burst), the CMake package
# (find_package(burst [COMPONENTS mpi])), pkg-config files (burst, burst-mpi) and the
# `burst` command under the prefix.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(burst_objects "")
foreach(layer burst_core burst_kernels burst_comm burst_algo burst_plan burst_api)
  list(APPEND burst_objects $<TARGET_OBJECTS:${layer}>)
endforeach()
add_library(burst_shared SHARED ${burst_objects})
add_library(burst_static STATIC ${burst_objects})
add_library(burst_mpi_shared SHARED $<TARGET_OBJECTS:burst_comm_mpi>)
add_library(burst_mpi_static STATIC $<TARGET_OBJECTS:burst_comm_mpi>)
set_target_properties(burst_shared PROPERTIES OUTPUT_NAME burst EXPORT_NAME burst VERSION ${PROJECT_VERSION}
                      SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
set_target_properties(burst_static PROPERTIES OUTPUT_NAME burst EXPORT_NAME burst_static)
set_target_properties(burst_mpi_shared PROPERTIES OUTPUT_NAME burst_mpi EXPORT_NAME mpi VERSION ${PROJECT_VERSION}
                      SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
set_target_properties(burst_mpi_static PROPERTIES OUTPUT_NAME burst_mpi EXPORT_NAME mpi_static)
foreach(lib burst_shared burst_static)
  target_include_directories(${lib} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
                             $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include> $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_compile_features(${lib} PUBLIC cxx_std_20)
  target_link_libraries(${lib} PUBLIC Threads::Threads PRIVATE ${CMAKE_DL_LIBS})  # dl: the BLAS is loaded at run time
endforeach()
# The same names for a project that adds Burst with add_subdirectory.
add_library(burst::burst ALIAS burst_shared)
add_library(burst::burst_static ALIAS burst_static)
add_library(burst::mpi ALIAS burst_mpi_shared)
add_library(burst::mpi_static ALIAS burst_mpi_static)
target_link_libraries(burst_mpi_shared PUBLIC burst_shared)
target_link_libraries(burst_mpi_static PUBLIC burst_static)
if(BURST_WITH_MPI)
  find_package(MPI REQUIRED COMPONENTS C)  # its targets are scoped to the folder that finds it
  target_link_libraries(burst_mpi_shared PRIVATE MPI::MPI_C)
  # Installed, the static library names MPI's libraries by path, so a consumer need not
  # find MPI (or enable C) itself.
  target_link_libraries(burst_mpi_static PRIVATE $<BUILD_INTERFACE:MPI::MPI_C> "$<INSTALL_INTERFACE:${MPI_C_LIBRARIES}>")
endif()

set(burst_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/burst)
install(TARGETS burst_shared burst_static EXPORT burstTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS burst_mpi_shared burst_mpi_static EXPORT burstMpiTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS burst RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/burst DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_BINARY_DIR}/include/burst/version.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/burst)
install(EXPORT burstTargets NAMESPACE burst:: DESTINATION ${burst_cmake_dir})
install(EXPORT burstMpiTargets NAMESPACE burst:: DESTINATION ${burst_cmake_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/burstConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/burstConfig.cmake INSTALL_DESTINATION ${burst_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/burstConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/burstConfig.cmake ${PROJECT_BINARY_DIR}/burstConfigVersion.cmake
        DESTINATION ${burst_cmake_dir})
# The .pc files find the prefix from where they lie, so an install to any --prefix works.
file(RELATIVE_PATH burst_pc_to_prefix /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
foreach(pc burst burst-mpi)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()
