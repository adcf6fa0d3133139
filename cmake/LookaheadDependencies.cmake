# Dependency discovery. libtorch comes from a Python installation's torch (never a hard-coded path):
# LA_PYTHON, else the repo's .venv, else python3 on PATH. A CUDA build of torch also needs the CUDA
# toolkit's nvcc and headers; missing runtime libraries are taken from the nvidia-* wheels beside torch.

set(LA_DEPENDENCY_REPORT "")
macro(la_report name value)
  list(APPEND LA_DEPENDENCY_REPORT "${name}|${value}")
endmacro()

# ---- Python and torch ---------------------------------------------------------------------------
if(NOT LA_PYTHON)
  if(EXISTS ${CMAKE_SOURCE_DIR}/.venv/bin/python)
    set(LA_PYTHON ${CMAKE_SOURCE_DIR}/.venv/bin/python CACHE FILEPATH "" FORCE)
  else()
    find_program(LA_PYTHON_FOUND NAMES python3 python REQUIRED)
    set(LA_PYTHON ${LA_PYTHON_FOUND} CACHE FILEPATH "" FORCE)
  endif()
endif()
execute_process(
  COMMAND ${LA_PYTHON} -c
    "import os, torch, torch.utils; print(torch.utils.cmake_prefix_path); print(torch.__version__); print(torch.version.cuda or ''); print(os.path.dirname(os.path.dirname(torch.__file__)))"
  OUTPUT_VARIABLE _la_torch_out ERROR_VARIABLE _la_torch_err RESULT_VARIABLE _la_torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _la_torch_rc EQUAL 0)
  message(FATAL_ERROR "Lookahead: '${LA_PYTHON}' cannot import torch (run ./launch/setup, or set "
                      "-DLA_PYTHON=/path/to/python with torch installed):\n${_la_torch_err}")
endif()
string(REPLACE "\n" ";" _la_torch_out "${_la_torch_out}")
list(GET _la_torch_out 0 LA_TORCH_CMAKE_PREFIX)
list(GET _la_torch_out 1 LA_TORCH_VERSION)
list(GET _la_torch_out 2 LA_TORCH_CUDA_VERSION)
list(GET _la_torch_out 3 LA_PYTHON_SITE)
list(APPEND CMAKE_PREFIX_PATH ${LA_TORCH_CMAKE_PREFIX})

set(LA_TORCH_HAS_CUDA OFF)
if(LA_TORCH_CUDA_VERSION)
  set(LA_TORCH_HAS_CUDA ON)
  # The nvidia-* wheels (nvidia/cu13, nvidia/cuda_runtime, ...) hold the runtime libraries torch uses.
  file(GLOB _la_nv_libdirs ${LA_PYTHON_SITE}/nvidia/*/lib)
  if(NOT CUDA_TOOLKIT_ROOT_DIR)
    find_program(LA_NVCC nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME PATH_SUFFIXES bin)
    if(NOT LA_NVCC)
      message(FATAL_ERROR "Lookahead: torch ${LA_TORCH_VERSION} is a CUDA ${LA_TORCH_CUDA_VERSION} build, "
                          "and its CMake config needs the CUDA toolkit (nvcc), which was not found. "
                          "Install it, or use a CPU build of torch (LA_PYTHON).")
    endif()
    get_filename_component(_la_nvcc_real ${LA_NVCC} REALPATH)
    get_filename_component(_la_cuda_root ${_la_nvcc_real} DIRECTORY)
    get_filename_component(_la_cuda_root ${_la_cuda_root} DIRECTORY)
    set(CUDA_TOOLKIT_ROOT_DIR ${_la_cuda_root} CACHE PATH "CUDA toolkit used by torch's CMake config")
  endif()
  find_library(CUDA_nvrtc_LIBRARY NAMES nvrtc libnvrtc.so.13 libnvrtc.so.12
               HINTS ${CUDA_TOOLKIT_ROOT_DIR}/lib64 ${_la_nv_libdirs})
  # No GPU to probe at configure time: name the architectures instead of letting torch try_run.
  if(NOT TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(TORCH_CUDA_ARCH_LIST "8.0;9.0" CACHE STRING "CUDA architectures for torch's CMake config")
  endif()
endif()

find_package(Torch REQUIRED)
# libtorch's exported flags carry -D_GLIBCXX_USE_CXX11_ABI and friends; keep them on every target.
add_library(lookahead_torch INTERFACE)
target_link_libraries(lookahead_torch INTERFACE ${TORCH_LIBRARIES})
target_compile_options(lookahead_torch INTERFACE ${TORCH_CXX_FLAGS})
la_report("torch" "${LA_TORCH_VERSION} (${LA_PYTHON})")
if(LA_TORCH_HAS_CUDA)
  la_report("torch CUDA" "${LA_TORCH_CUDA_VERSION} (toolkit ${CUDA_TOOLKIT_ROOT_DIR})")
else()
  la_report("torch CUDA" "no (CPU build)")
endif()

# ---- NCCL -----------------------------------------------------------------------------------------
set(LA_HAVE_NCCL OFF)
if(NOT LA_USE_NCCL STREQUAL "OFF" AND LA_TORCH_HAS_CUDA)
  find_path(LA_NCCL_INCLUDE_DIR nccl.h HINTS ${LA_PYTHON_SITE}/nvidia/nccl/include ENV NCCL_HOME
            PATH_SUFFIXES include)
  find_library(LA_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${LA_PYTHON_SITE}/nvidia/nccl/lib ENV NCCL_HOME
               PATH_SUFFIXES lib lib64)
  if(LA_NCCL_INCLUDE_DIR AND LA_NCCL_LIBRARY)
    set(LA_HAVE_NCCL ON)
    add_library(lookahead_nccl INTERFACE)
    target_include_directories(lookahead_nccl SYSTEM INTERFACE ${LA_NCCL_INCLUDE_DIR})
    target_link_libraries(lookahead_nccl INTERFACE ${LA_NCCL_LIBRARY})
    file(STRINGS ${LA_NCCL_INCLUDE_DIR}/nccl.h _la_nccl_ver REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) ")
    string(REGEX REPLACE "[^0-9;]" "" _la_nccl_ver "${_la_nccl_ver}")
    string(REPLACE ";" "." _la_nccl_ver "${_la_nccl_ver}")
    la_report("NCCL" "${_la_nccl_ver} (${LA_NCCL_LIBRARY})")
  endif()
endif()
if(LA_USE_NCCL STREQUAL "ON" AND NOT LA_HAVE_NCCL)
  message(FATAL_ERROR "Lookahead: LA_USE_NCCL=ON but torch has no CUDA or nccl.h/libnccl were not found.")
endif()
if(NOT LA_HAVE_NCCL)
  la_report("NCCL" "disabled (torch CUDA=${LA_TORCH_HAS_CUDA}, LA_USE_NCCL=${LA_USE_NCCL})")
endif()

# ---- MPI, HDF5, Boost, JSON, utf8proc, xxhash ---------------------------------------------------
find_package(MPI REQUIRED COMPONENTS C)
la_report("MPI" "${MPI_C_VERSION} (${MPIEXEC_EXECUTABLE})")
find_package(HDF5 REQUIRED COMPONENTS C)
la_report("HDF5" "${HDF5_VERSION}")
find_package(Boost 1.71 REQUIRED COMPONENTS program_options)
la_report("Boost.Program_options" "${Boost_VERSION}")
find_package(nlohmann_json 3.9 REQUIRED)
la_report("nlohmann_json" "${nlohmann_json_VERSION}")
find_package(ZLIB REQUIRED)  # CLIP's gzip-compressed BPE vocabulary
la_report("zlib" "${ZLIB_VERSION_STRING}")
# The CLIP tokenizer's Unicode tables: categories, lowercase mapping, NFC (Debian libutf8proc-dev).
find_path(LA_UTF8PROC_INCLUDE_DIR utf8proc.h REQUIRED)
find_library(LA_UTF8PROC_LIBRARY utf8proc REQUIRED)
add_library(lookahead_utf8proc INTERFACE)
target_include_directories(lookahead_utf8proc SYSTEM INTERFACE ${LA_UTF8PROC_INCLUDE_DIR})
target_link_libraries(lookahead_utf8proc INTERFACE ${LA_UTF8PROC_LIBRARY})
la_report("utf8proc" "${LA_UTF8PROC_LIBRARY}")
find_path(LA_XXHASH_INCLUDE_DIR xxhash.h REQUIRED)
find_library(LA_XXHASH_LIBRARY xxhash REQUIRED)
add_library(lookahead_xxhash INTERFACE)
target_include_directories(lookahead_xxhash SYSTEM INTERFACE ${LA_XXHASH_INCLUDE_DIR})
target_link_libraries(lookahead_xxhash INTERFACE ${LA_XXHASH_LIBRARY})
la_report("xxhash" "${LA_XXHASH_LIBRARY}")

if(LA_BUILD_TESTS)
  find_package(GTest REQUIRED)
  la_report("GoogleTest" "${GTest_VERSION}")
endif()
if(LA_BUILD_BENCH)
  find_package(benchmark REQUIRED)
  la_report("Google Benchmark" "${benchmark_VERSION}")
endif()

function(lookahead_report_dependencies)
  message(STATUS "")
  message(STATUS "Lookahead ${PROJECT_VERSION} configuration (${CMAKE_BUILD_TYPE}):")
  foreach(entry IN LISTS LA_DEPENDENCY_REPORT)
    string(REPLACE "|" ";" entry "${entry}")
    list(GET entry 0 name)
    list(GET entry 1 value)
    string(LENGTH "${name}" len)
    math(EXPR pad "24 - ${len}")
    string(REPEAT "." ${pad} dots)
    message(STATUS "  ${name} ${dots} ${value}")
  endforeach()
  message(STATUS "  CUDA code ................ ${LA_TORCH_HAS_CUDA}")
  message(STATUS "  NCCL communicator ........ ${LA_HAVE_NCCL}")
  message(STATUS "  warnings as errors ....... ${LA_WERROR}")
  message(STATUS "  unity build .............. ${LA_UNITY_BUILD}")
  message(STATUS "  ccache ................... ${LA_CCACHE}")
  message(STATUS "")
endfunction()
