# FFHQ conversion (data/ffhq.h): a synthetic FFHQ-like tree (PNGs in FFHQ's folders, a metadata JSON
# with 68 points around known 5-point landmarks) -> records, landmarks, selection, resize, errors;
# then `lookahead data ffhq` end to end, once under mpiexec -n 2.
lookahead_add_test(data_ffhq_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/ffhq_test.cpp DEPS lookahead_data
                   LABELS data TIMEOUT 120)

add_test(NAME data_ffhq_cli
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/ffhq_test.sh ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:lookahead>)
set_tests_properties(data_ffhq_cli PROPERTIES LABELS "mpi;launch;data" TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}"
                     PROCESSORS 2)
