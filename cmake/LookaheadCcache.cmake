# ccache for every C/C++ compile. CCACHE_BASEDIR makes paths relative to the checkout, so a fresh
# clone in another folder (CI) reuses the cache; the sloppiness settings let precompiled headers hit.
find_program(LA_CCACHE ccache)
if(LA_CCACHE)
  set(CMAKE_C_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env CCACHE_BASEDIR=${CMAKE_SOURCE_DIR}
      "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      CCACHE_NOHASHDIR=1 ${LA_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CMAKE_C_COMPILER_LAUNCHER})
endif()
