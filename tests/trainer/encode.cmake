# `lookahead data encode`: encode_training_set against direct Conditioner calls at 1 and 2 ranks
# (gtest under mpiexec), and the CLI end to end (synth -> encode at np1 and np2, bit-identical ->
# a short tiny training run on the encoded set).
add_executable(trainer_encode_test ${CMAKE_CURRENT_LIST_DIR}/encode_test.cpp)
target_link_libraries(trainer_encode_test PRIVATE lookahead_pch lookahead_test_main lookahead_trainer)
target_precompile_headers(trainer_encode_test REUSE_FROM lookahead_pch)
foreach(n 1 2)
  add_test(NAME trainer_encode_test_np${n}
           COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${n} --oversubscribe --tag-output
                   $<TARGET_FILE:trainer_encode_test> --gtest_filter=-EncodedFiles.*)
  set_tests_properties(trainer_encode_test_np${n} PROPERTIES LABELS "mpi" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}"
                       PROCESSORS 2)
endforeach()

add_test(NAME trainer_encode_e2e
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/encode_e2e.sh ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:lookahead>
                 $<TARGET_FILE:trainer_encode_test> ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR})
set_tests_properties(trainer_encode_e2e PROPERTIES LABELS "e2e;mpi" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}"
                     PROCESSORS 2)
