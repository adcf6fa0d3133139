# Shared target helpers: warnings, the torch precompiled header, libraries, tests and benchmarks.

add_library(lookahead_warnings INTERFACE)
target_compile_options(lookahead_warnings INTERFACE -Wall -Wextra -Wno-unused-parameter
                       $<$<BOOL:${LA_WERROR}>:-Werror>)

# One precompiled header for torch, built once and reused by every target (REUSE_FROM needs the
# same compile flags, so target-specific switches live in generated headers, not in -D flags).
add_library(lookahead_pch STATIC ${CMAKE_SOURCE_DIR}/cmake/pch.cpp)
target_link_libraries(lookahead_pch PUBLIC lookahead_torch lookahead_warnings)
# C bindings only: OpenMPI's mpi.h otherwise drags in its deprecated C++ bindings.
target_compile_definitions(lookahead_pch PUBLIC OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
target_include_directories(lookahead_pch PUBLIC ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/generated)
target_precompile_headers(lookahead_pch PRIVATE ${CMAKE_SOURCE_DIR}/cmake/torch_pch.h)

# lookahead_add_library(NAME SOURCES ... [DEPS ...]) — one per top-level folder.
function(lookahead_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_link_libraries(${name} PUBLIC lookahead_pch ${ARG_DEPS})
  target_precompile_headers(${name} REUSE_FROM lookahead_pch)
endfunction()

# Environment every test and mpiexec run needs: OpenMPI refuses root without these, and the CI
# machine has fewer cores than the largest rank count.
set(LA_TEST_ENV
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl=self,vader,tcp
    OMPI_MCA_btl_vader_single_copy_mechanism=none
    OMP_NUM_THREADS=1)

# lookahead_add_executable(NAME SOURCES ... DEPS ...)
function(lookahead_add_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE lookahead_pch ${ARG_DEPS})
  target_precompile_headers(${name} REUSE_FROM lookahead_pch)
endfunction()

# lookahead_add_test(NAME SOURCES ... DEPS ... [RANKS 2 3 4] [LABELS ...] [TIMEOUT s])
# Without RANKS: one ctest entry running the gtest binary. With RANKS: one entry per rank count,
# run under mpiexec (the same gtest binary; tests that need more ranks skip themselves).
function(lookahead_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;RANKS;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE lookahead_pch lookahead_test_main ${ARG_DEPS})
  target_precompile_headers(${name} REUSE_FROM lookahead_pch)
  if(NOT ARG_RANKS)
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES LABELS "unit;${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
                         ENVIRONMENT "${LA_TEST_ENV}")
  else()
    foreach(n IN LISTS ARG_RANKS)
      add_test(NAME ${name}_np${n}
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${n} --oversubscribe
                       --tag-output $<TARGET_FILE:${name}>)
      set_tests_properties(${name}_np${n} PROPERTIES LABELS "mpi;${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
                           ENVIRONMENT "${LA_TEST_ENV}" PROCESSORS 2)
    endforeach()
  endif()
endfunction()

# lookahead_add_bench(NAME SOURCES ... DEPS ... [SMOKE_ARGS ...] [RANKS n])
# Every benchmark binary is also a quick ctest smoke run (label bench).
function(lookahead_add_bench name)
  cmake_parse_arguments(ARG "" "RANKS" "SOURCES;DEPS;SMOKE_ARGS" ${ARGN})
  lookahead_add_executable(${name} SOURCES ${ARG_SOURCES} DEPS ${ARG_DEPS})
  if(LA_BUILD_TESTS)
    if(ARG_RANKS)
      add_test(NAME ${name}_smoke
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${ARG_RANKS} --oversubscribe
                       $<TARGET_FILE:${name}> ${ARG_SMOKE_ARGS})
    else()
      add_test(NAME ${name}_smoke COMMAND ${name} ${ARG_SMOKE_ARGS})
    endif()
    set_tests_properties(${name}_smoke PROPERTIES LABELS "bench" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}"
                         PROCESSORS 2)
  endif()
endfunction()
