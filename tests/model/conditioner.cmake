# model::Conditioner (the input encoders as one object) and ClipTokenizer::byte_level. One binary,
# two entries: the units, and the tokenizer's parity with transformers (its oracle is a fixture).
add_executable(model_conditioner_test ${CMAKE_CURRENT_LIST_DIR}/conditioner_test.cpp)
target_link_libraries(model_conditioner_test PRIVATE lookahead_pch lookahead_test_main lookahead_model)
target_precompile_headers(model_conditioner_test REUSE_FROM lookahead_pch)
add_test(NAME model_conditioner_test COMMAND model_conditioner_test --gtest_filter=-ByteTokenizerParity.*)
set_tests_properties(model_conditioner_test PROPERTIES LABELS "unit" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")

set(LA_BYTE_TOKENIZER_DIR ${CMAKE_CURRENT_BINARY_DIR}/byte_tokenizer)
add_test(NAME model_byte_tokenizer_oracle
         COMMAND ${LA_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/byte_tokenizer_oracle.py ${LA_BYTE_TOKENIZER_DIR})
set_tests_properties(model_byte_tokenizer_oracle PROPERTIES FIXTURES_SETUP model_byte_tokenizer LABELS "parity"
                     TIMEOUT 120 ENVIRONMENT "${LA_TEST_ENV}")
add_test(NAME model_byte_tokenizer_parity COMMAND model_conditioner_test --gtest_filter=ByteTokenizerParity.*)
set_tests_properties(model_byte_tokenizer_parity PROPERTIES FIXTURES_REQUIRED model_byte_tokenizer LABELS "parity"
                     TIMEOUT 120 ENVIRONMENT "${LA_TEST_ENV};LA_BYTE_TOKENIZER_DIR=${LA_BYTE_TOKENIZER_DIR}")
