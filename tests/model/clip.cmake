# CLIP tokenizer, text and vision encoders (model/text, model/vision): structure tests, and parity
# with transformers (ids, hidden states, projections, CLIPModel logits, preprocessing, the runner).
# The oracle runs first (a ctest fixture) on fixed cases plus a fresh random seed each run (printed;
# LA_PARITY_SEED=SEED ctest -R clip reproduces). The tokenizer reads gzip vocabularies: zlib.
lookahead_add_test(model_clip_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/clip_test.cpp DEPS lookahead_model)

# Also drives the `model run --model clip-text|clip-vision` runner (model/run/).
add_executable(model_clip_parity_test ${CMAKE_CURRENT_SOURCE_DIR}/clip_parity_test.cpp)
target_link_libraries(model_clip_parity_test PRIVATE lookahead_pch lookahead_model GTest::gtest_main)
target_precompile_headers(model_clip_parity_test REUSE_FROM lookahead_pch)

set(LA_CLIP_PARITY_DIR ${CMAKE_CURRENT_BINARY_DIR}/clip_parity)
add_test(NAME model_clip_parity_oracle
         COMMAND ${LA_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/clip_oracle.py ${LA_CLIP_PARITY_DIR} random)
set_tests_properties(model_clip_parity_oracle PROPERTIES FIXTURES_SETUP model_clip_parity LABELS "parity"
                     TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
add_test(NAME model_clip_parity COMMAND model_clip_parity_test)
set_tests_properties(model_clip_parity PROPERTIES FIXTURES_REQUIRED model_clip_parity LABELS "parity" TIMEOUT 300
                     ENVIRONMENT "${LA_TEST_ENV};LA_CLIP_PARITY_DIR=${LA_CLIP_PARITY_DIR}")
