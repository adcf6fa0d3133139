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

# Tests: every ctest entry is registered through lookahead_add_test; a binary that several entries
# (or a script) run is built by lookahead_test_binary.
#
# lookahead_test_binary(NAME SOURCES ... [DEPS ...] [MAIN world|plain|none] [STANDALONE])
#   A GoogleTest binary. MAIN world (default) links tests/test_main.cpp, which starts the World
#   (MPI); plain links GoogleTest's own main (for tests that fork); none links no main (probes
#   and tools that tests drive). STANDALONE: no torch and no MPI (for code that needs neither):
#   links only DEPS, the MAIN (plain or none) and the warning flags, no precompiled header; the
#   source root is on the include path.
function(lookahead_test_binary name)
  cmake_parse_arguments(ARG "STANDALONE" "MAIN" "SOURCES;DEPS" ${ARGN})
  if(NOT ARG_MAIN)
    set(ARG_MAIN world)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  if(ARG_STANDALONE)
    if(ARG_MAIN STREQUAL "plain")
      target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest_main)
    elseif(ARG_MAIN STREQUAL "none")
      target_link_libraries(${name} PRIVATE ${ARG_DEPS})
    else()
      message(FATAL_ERROR "lookahead_test_binary(${name}): STANDALONE takes MAIN plain or none, got '${ARG_MAIN}'")
    endif()
    target_link_libraries(${name} PRIVATE lookahead_warnings)
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR})
    return()
  endif()
  if(ARG_MAIN STREQUAL "world")
    target_link_libraries(${name} PRIVATE lookahead_pch lookahead_test_main ${ARG_DEPS})
  elseif(ARG_MAIN STREQUAL "plain")
    target_link_libraries(${name} PRIVATE lookahead_pch ${ARG_DEPS} GTest::gtest_main)
  elseif(ARG_MAIN STREQUAL "none")
    target_link_libraries(${name} PRIVATE lookahead_pch ${ARG_DEPS})
  else()
    message(FATAL_ERROR "lookahead_test_binary(${name}): MAIN must be world, plain or none, got '${ARG_MAIN}'")
  endif()
  target_precompile_headers(${name} REUSE_FROM lookahead_pch)
endfunction()

# lookahead_add_test(NAME
#     SOURCES file... [DEPS lib...] [MAIN world|plain]   builds the gtest binary NAME and runs it
#   | TARGET binary                                      runs a binary built elsewhere
#   | COMMAND program arg...                             runs a script or program as is
#   [ARGS arg...]             arguments after the binary (SOURCES / TARGET)
#   [RANKS n...]              one entry per rank count, NAME_npN, under mpiexec (label mpi)
#   [MPI n]                   one entry, NAME, under mpiexec with n ranks (label mpi)
#   [LABELS ...] [TIMEOUT s] [ENV KEY=VALUE...] [PROCESSORS n]
#   [FIXTURES_SETUP f...] [FIXTURES_REQUIRED f...] [WORKING_DIRECTORY dir]
#   [STANDALONE])             SOURCES: build it as lookahead_test_binary STANDALONE (MAIN plain)
# Entries of a SOURCES binary run single-process get the label unit. Every entry gets LA_TEST_ENV (MPI as root,
# oversubscription, one OpenMP thread) plus ENV, except STANDALONE ones (no MPI, no OpenMP: ENV
# only); timeout 300 s unless TIMEOUT; mpiexec entries reserve 2 processors unless PROCESSORS.
function(lookahead_add_test name)
  cmake_parse_arguments(ARG "STANDALONE" "TARGET;MAIN;MPI;TIMEOUT;PROCESSORS;WORKING_DIRECTORY"
                        "SOURCES;DEPS;COMMAND;ARGS;RANKS;LABELS;ENV;FIXTURES_SETUP;FIXTURES_REQUIRED" ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "lookahead_add_test(${name}): unknown arguments ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  set(kinds 0)
  foreach(kind SOURCES TARGET COMMAND)
    if(ARG_${kind})
      math(EXPR kinds "${kinds} + 1")
    endif()
  endforeach()
  if(NOT kinds EQUAL 1)
    message(FATAL_ERROR "lookahead_add_test(${name}): give exactly one of SOURCES, TARGET, COMMAND")
  endif()
  if(ARG_SOURCES)
    if(ARG_STANDALONE)
      if(NOT ARG_MAIN)
        set(ARG_MAIN plain)
      endif()
      lookahead_test_binary(${name} SOURCES ${ARG_SOURCES} DEPS ${ARG_DEPS} MAIN ${ARG_MAIN} STANDALONE)
    else()
      if(NOT ARG_MAIN)
        set(ARG_MAIN world)
      endif()
      lookahead_test_binary(${name} SOURCES ${ARG_SOURCES} DEPS ${ARG_DEPS} MAIN ${ARG_MAIN})
    endif()
    set(ARG_TARGET ${name})
  endif()
  if(ARG_STANDALONE AND (ARG_RANKS OR ARG_MPI))
    message(FATAL_ERROR "lookahead_add_test(${name}): a STANDALONE test has no MPI (RANKS/MPI)")
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()

  if(ARG_COMMAND)
    if(ARG_RANKS OR ARG_MPI)
      message(FATAL_ERROR "lookahead_add_test(${name}): RANKS/MPI run a binary; a COMMAND starts its own mpiexec")
    endif()
    add_test(NAME ${name} COMMAND ${ARG_COMMAND})
    set(names ${name})
    set(default_label "")
  elseif(ARG_RANKS OR ARG_MPI)
    set(names "")
    if(ARG_MPI)
      add_test(NAME ${name}
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${ARG_MPI} --oversubscribe --tag-output
                       $<TARGET_FILE:${ARG_TARGET}> ${ARG_ARGS})
      list(APPEND names ${name})
    endif()
    foreach(n IN LISTS ARG_RANKS)
      add_test(NAME ${name}_np${n}
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${n} --oversubscribe --tag-output
                       $<TARGET_FILE:${ARG_TARGET}> ${ARG_ARGS})
      list(APPEND names ${name}_np${n})
    endforeach()
    set(default_label mpi)
    if(NOT ARG_PROCESSORS)
      set(ARG_PROCESSORS 2)
    endif()
  else()
    add_test(NAME ${name} COMMAND ${ARG_TARGET} ${ARG_ARGS})
    set(names ${name})
    set(default_label "")
    if(ARG_SOURCES)
      set(default_label unit)
    endif()
  endif()

  set(labels ${default_label} ${ARG_LABELS})
  if(ARG_STANDALONE)
    set(env ${ARG_ENV})
  else()
    set(env ${LA_TEST_ENV} ${ARG_ENV})
  endif()
  set(prop_TIMEOUT ${ARG_TIMEOUT})
  set(prop_ENVIRONMENT ${env})
  set(prop_LABELS ${labels})
  set(prop_PROCESSORS ${ARG_PROCESSORS})
  set(prop_FIXTURES_SETUP ${ARG_FIXTURES_SETUP})
  set(prop_FIXTURES_REQUIRED ${ARG_FIXTURES_REQUIRED})
  set(prop_WORKING_DIRECTORY ${ARG_WORKING_DIRECTORY})
  foreach(prop TIMEOUT ENVIRONMENT LABELS PROCESSORS FIXTURES_SETUP FIXTURES_REQUIRED WORKING_DIRECTORY)
    if(prop_${prop})
      set_tests_properties(${names} PROPERTIES ${prop} "${prop_${prop}}")
    endif()
  endforeach()
endfunction()

# lookahead_add_oracle(NAME SCRIPT file.py DIR dir [ARGS arg...] [TIMEOUT s])
#   A third-party oracle as a ctest fixture named NAME (label parity): runs tests/parity/SCRIPT DIR
#   ARGS with the test environment's Python. Tests that read DIR list NAME in FIXTURES_REQUIRED.
function(lookahead_add_oracle name)
  cmake_parse_arguments(ARG "" "SCRIPT;DIR;TIMEOUT" "ARGS" ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS OR NOT ARG_SCRIPT OR NOT ARG_DIR)
    message(FATAL_ERROR "lookahead_add_oracle(${name}): takes SCRIPT file.py DIR dir [ARGS ...] [TIMEOUT s]")
  endif()
  set(timeout)
  if(ARG_TIMEOUT)
    set(timeout TIMEOUT ${ARG_TIMEOUT})
  endif()
  lookahead_add_test(${name} COMMAND ${LA_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/${ARG_SCRIPT} ${ARG_DIR} ${ARG_ARGS}
                     LABELS parity FIXTURES_SETUP ${name} ${timeout})
endfunction()

# lookahead_add_parity_test(NAME TARGET binary ORACLE file.py DIR dir [ORACLE_NAME n] [ORACLE_ARGS arg...]
#     [ARGS arg...] [ENV KEY=VALUE...] [TIMEOUT s])
#   The usual parity pair, both labelled parity: the oracle ORACLE_NAME (default NAME_oracle, see
#   lookahead_add_oracle) writes DIR, then NAME runs TARGET ARGS, which finds DIR through its ARGS
#   or ENV.
function(lookahead_add_parity_test name)
  cmake_parse_arguments(ARG "" "TARGET;ORACLE;DIR;ORACLE_NAME;TIMEOUT" "ORACLE_ARGS;ARGS;ENV" ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS OR NOT ARG_TARGET OR NOT ARG_ORACLE OR NOT ARG_DIR)
    message(FATAL_ERROR "lookahead_add_parity_test(${name}): takes TARGET binary ORACLE file.py DIR dir [...]")
  endif()
  if(NOT ARG_ORACLE_NAME)
    set(ARG_ORACLE_NAME ${name}_oracle)
  endif()
  set(timeout)
  if(ARG_TIMEOUT)
    set(timeout TIMEOUT ${ARG_TIMEOUT})
  endif()
  lookahead_add_oracle(${ARG_ORACLE_NAME} SCRIPT ${ARG_ORACLE} DIR ${ARG_DIR} ARGS ${ARG_ORACLE_ARGS} ${timeout})
  set(env)
  if(ARG_ENV)
    set(env ENV ${ARG_ENV})
  endif()
  lookahead_add_test(${name} TARGET ${ARG_TARGET} ARGS ${ARG_ARGS} ${env} ${timeout}
                     LABELS parity FIXTURES_REQUIRED ${ARG_ORACLE_NAME})
endfunction()

# lookahead_add_bench(NAME SOURCES ... DEPS ... [SMOKE_ARGS ...] [RANKS n])
# Every benchmark binary is also a quick ctest smoke run (label bench).
function(lookahead_add_bench name)
  cmake_parse_arguments(ARG "" "RANKS" "SOURCES;DEPS;SMOKE_ARGS" ${ARGN})
  lookahead_add_executable(${name} SOURCES ${ARG_SOURCES} DEPS ${ARG_DEPS})
  if(LA_BUILD_TESTS)
    if(ARG_RANKS)
      set(launch MPI ${ARG_RANKS})
    else()
      set(launch PROCESSORS 2)
    endif()
    lookahead_add_test(${name}_smoke TARGET ${name} ARGS ${ARG_SMOKE_ARGS} ${launch} LABELS bench)
  endif()
endfunction()
