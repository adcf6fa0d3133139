# Face networks (model/face): key layouts, meta construction, alignment geometry and gradients;
# parity with tests/parity/face_oracle.py (reference iresnet / IR-SE50 and alignment written from
# the specs), run once with a fixed seed and once with a fresh seed (printed; LA_PARITY_SEED=N
# reproduces it). MTCNN: facenet-pytorch 2.6.0 networks and detections on two real photos.
# The tests also drive the `model run` runner (model/run/).
lookahead_add_test(model_face_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/face_test.cpp
                   DEPS lookahead_model)

add_executable(model_face_parity_test ${CMAKE_CURRENT_SOURCE_DIR}/face_parity_test.cpp)
target_link_libraries(model_face_parity_test PRIVATE lookahead_pch lookahead_model GTest::gtest)
target_precompile_headers(model_face_parity_test REUSE_FROM lookahead_pch)

foreach(case fixed random)
  set(seed random)
  if(case STREQUAL "fixed")
    set(seed 1234)
  endif()
  set(dir ${CMAKE_CURRENT_BINARY_DIR}/face_parity_${case})
  add_test(NAME model_face_parity_oracle_${case}
           COMMAND ${LA_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/face_oracle.py ${dir} ${seed})
  set_tests_properties(model_face_parity_oracle_${case} PROPERTIES FIXTURES_SETUP model_face_parity_${case}
                       LABELS "parity" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
  add_test(NAME model_face_parity_${case} COMMAND model_face_parity_test ${dir})
  set_tests_properties(model_face_parity_${case} PROPERTIES FIXTURES_REQUIRED model_face_parity_${case}
                       LABELS "parity" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
endforeach()
