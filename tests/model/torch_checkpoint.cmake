# torch.save reader (model/io/torch_checkpoint): files written by the installed torch (zip and
# legacy formats), facenet-pytorch's shipped MTCNN .pt files and hostile / broken inputs, all made by
# tests/parity/torch_checkpoint_oracle.py next to what torch.load returns for them.
add_executable(model_torch_checkpoint_test ${CMAKE_CURRENT_SOURCE_DIR}/torch_checkpoint_test.cpp)
target_link_libraries(model_torch_checkpoint_test PRIVATE lookahead_pch lookahead_model GTest::gtest)
target_precompile_headers(model_torch_checkpoint_test REUSE_FROM lookahead_pch)

set(_la_tc_dir ${CMAKE_CURRENT_BINARY_DIR}/torch_checkpoint_fixtures)
add_test(NAME model_torch_checkpoint_oracle
         COMMAND ${LA_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/torch_checkpoint_oracle.py ${_la_tc_dir})
set_tests_properties(model_torch_checkpoint_oracle PROPERTIES FIXTURES_SETUP model_torch_checkpoint
                     LABELS "parity" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
add_test(NAME model_torch_checkpoint_test COMMAND model_torch_checkpoint_test ${_la_tc_dir})
set_tests_properties(model_torch_checkpoint_test PROPERTIES FIXTURES_REQUIRED model_torch_checkpoint
                     LABELS "parity" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
