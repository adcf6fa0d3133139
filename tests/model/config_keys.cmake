# The config key walk (#13): tests/parity/config_keys_oracle.py writes, for every key of every
# diffusers / transformers config class our readers take, a tiny config with a non-default value
# (and the reference's outputs where it runs); model_config_keys checks that each key is in its
# reader's table (model/io/config_keys.h), that default-only keys are refused naming the key, and
# that every other key loads and matches the reference's outputs at that value.
add_executable(model_config_keys_test ${CMAKE_CURRENT_SOURCE_DIR}/config_keys_test.cpp)
target_link_libraries(model_config_keys_test PRIVATE lookahead_pch lookahead_model GTest::gtest_main)
target_precompile_headers(model_config_keys_test REUSE_FROM lookahead_pch)

set(LA_CONFIG_KEYS_DIR ${CMAKE_CURRENT_BINARY_DIR}/config_keys)
add_test(NAME model_config_keys_oracle
         COMMAND ${LA_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/config_keys_oracle.py ${LA_CONFIG_KEYS_DIR})
set_tests_properties(model_config_keys_oracle PROPERTIES FIXTURES_SETUP model_config_keys LABELS "parity"
                     TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
add_test(NAME model_config_keys COMMAND model_config_keys_test)
set_tests_properties(model_config_keys PROPERTIES FIXTURES_REQUIRED model_config_keys LABELS "parity" TIMEOUT 300
                     ENVIRONMENT "${LA_TEST_ENV};LA_CONFIG_KEYS_DIR=${LA_CONFIG_KEYS_DIR}")
