# Checks that a shared library exports only public clattn_ symbols: every defined dynamic
# symbol must start with "clattn_" and none with "clattn__" (the internal prefix).
#
# Usage: cmake -DLIBRARY=<path to libclattn.so> [-DNM=<nm>] -P check_exports.cmake
cmake_minimum_required(VERSION 3.16)

if(NOT DEFINED LIBRARY)
  message(FATAL_ERROR "check_exports.cmake: set -DLIBRARY=...")
endif()
if(NOT NM)
  set(NM nm)
endif()

execute_process(COMMAND "${NM}" -D --defined-only "${LIBRARY}"
  OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "${NM} -D --defined-only ${LIBRARY} failed (${_rc}): ${_err}")
endif()

string(REPLACE "\n" ";" _lines "${_out}")
set(_public "")
set(_bad "")
foreach(_line IN LISTS _lines)
  # "<address> <type> <name>[@@version]"
  if(NOT _line MATCHES "^[0-9a-fA-F]* *[A-Za-z] +([^ @]+)")
    continue()
  endif()
  set(_sym "${CMAKE_MATCH_1}")
  if(_sym MATCHES "^clattn_[^_]")
    list(APPEND _public "${_sym}")
  else()
    list(APPEND _bad "${_sym}")
  endif()
endforeach()

list(LENGTH _public _n_public)
if(_bad)
  list(JOIN _bad "\n  " _bad_text)
  message(FATAL_ERROR "${LIBRARY} exports symbols outside the public clattn_ namespace:\n"
    "  ${_bad_text}")
endif()
if(_n_public EQUAL 0)
  message(FATAL_ERROR "${LIBRARY} exports no clattn_ symbol at all")
endif()
message(STATUS "${LIBRARY}: ${_n_public} exported symbols, all clattn_*")
