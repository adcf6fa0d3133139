# `lookahead eval` end to end on the tiny model (eval_e2e.sh MODE): 1 vs 3 ranks identical metrics,
# comparison of checkpoints x guidance settings, evaluation during training, named errors.
foreach(mode ranks compare train_eval errors)
  add_test(NAME trainer_eval_${mode}
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/eval_e2e.sh ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:lookahead>
                   ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR} ${mode})
  set_tests_properties(trainer_eval_${mode} PROPERTIES LABELS "e2e;mpi;eval" TIMEOUT 400
                       ENVIRONMENT "${LA_TEST_ENV}" PROCESSORS 2)
endforeach()
