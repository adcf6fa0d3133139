# safetensors reader/writer: unit tests, parity with the Python `safetensors` package (label
# parity: the same gtest binary runs SafetensorsParity.* with the interpreter and oracle named in
# its environment), and the fuzz target driven by deterministic mutations (label fuzz).
lookahead_add_test(model_safetensors_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/safetensors_test.cpp
                   DEPS lookahead_model)
set_tests_properties(model_safetensors_test PROPERTIES
                     ENVIRONMENT "${LA_TEST_ENV};GTEST_FILTER=-SafetensorsParity.*")
add_test(NAME model_safetensors_parity
         COMMAND model_safetensors_test --gtest_filter=SafetensorsParity.*)
set_tests_properties(model_safetensors_parity PROPERTIES LABELS "parity" TIMEOUT 300
                     ENVIRONMENT "${LA_TEST_ENV};LA_SAFETENSORS_PYTHON=${LA_PYTHON};LA_SAFETENSORS_ORACLE=${CMAKE_SOURCE_DIR}/tests/parity/safetensors_oracle.py")

lookahead_add_executable(model_safetensors_fuzz_driver
                         SOURCES ${CMAKE_CURRENT_LIST_DIR}/safetensors_fuzz_driver.cpp
                                 ${CMAKE_SOURCE_DIR}/model/io/fuzz_safetensors_header.cpp
                         DEPS lookahead_model)
add_test(NAME model_safetensors_fuzz COMMAND model_safetensors_fuzz_driver --iterations 100000)
set_tests_properties(model_safetensors_fuzz PROPERTIES LABELS "unit;fuzz" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
