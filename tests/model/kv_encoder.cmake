# KV encoder (reference K/V, IP K/V) and the decoder attending to them: parity with diffusers-based
# attention processors through `lookahead model run --model kv-encoder` (fixed and fresh random configs).
foreach(case fixed random)
  set(seed random)
  set(extra "")
  if(case STREQUAL "fixed")
    set(seed 1234)
    set(extra --fixed)
  endif()
  add_test(NAME parity_kv_encoder_${case}
           COMMAND ${CMAKE_SOURCE_DIR}/tests/parity/kv_encoder_parity.sh ${LA_PYTHON} $<TARGET_FILE:lookahead>
                   ${CMAKE_CURRENT_BINARY_DIR}/parity_kv_encoder_${case} ${seed} ${extra})
  set_tests_properties(parity_kv_encoder_${case} PROPERTIES LABELS "parity" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
endforeach()
