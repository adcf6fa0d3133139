# UNet structure and small-config runs; parity with diffusers (fixed and fresh random configs).
lookahead_add_test(model_unet_test SOURCES unet_test.cpp DEPS lookahead_model)

foreach(case fixed random1 random2)
  set(seed random)
  set(extra "")
  if(case STREQUAL "fixed")
    set(seed 1234)
    set(extra --fixed)
  endif()
  add_test(NAME parity_unet_${case}
           COMMAND ${CMAKE_SOURCE_DIR}/tests/parity/unet_parity.sh ${LA_PYTHON} $<TARGET_FILE:lookahead>
                   ${CMAKE_CURRENT_BINARY_DIR}/parity_unet_${case} ${seed} ${extra})
  set_tests_properties(parity_unet_${case} PROPERTIES LABELS "parity" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
endforeach()
lookahead_add_test(model_lora_test SOURCES lora_test.cpp DEPS lookahead_model)
lookahead_add_test(model_ip_adapter_test SOURCES ip_adapter_test.cpp DEPS lookahead_model)
lookahead_add_test(model_kv_encoder_test SOURCES kv_encoder_test.cpp DEPS lookahead_model)
lookahead_add_test(model_gradient_path_test SOURCES gradient_path_test.cpp DEPS lookahead_model)
