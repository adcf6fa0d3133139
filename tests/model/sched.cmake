# Noise schedules and samplers (model/sched): unit tests against the spec's reference values, and
# parity with diffusers. The parity oracle runs first (a ctest fixture) and writes a JSON fixture
# from fixed cases plus cases drawn from a fresh random seed each run; the seed is printed, and
# `sched_oracle.py OUTDIR SEED` (or LA_PARITY_SEED=SEED ctest -R sched) reproduces a failure.
lookahead_add_test(model_sched_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/sched_test.cpp DEPS lookahead_model)

# Own main (the fixture path is argv[1]); no MPI World needed.
add_executable(model_sched_parity_test ${CMAKE_CURRENT_SOURCE_DIR}/sched_parity_test.cpp)
target_link_libraries(model_sched_parity_test PRIVATE lookahead_pch lookahead_model GTest::gtest)
target_precompile_headers(model_sched_parity_test REUSE_FROM lookahead_pch)

set(LA_SCHED_PARITY_DIR ${CMAKE_CURRENT_BINARY_DIR}/sched_parity)
add_test(NAME model_sched_parity_oracle
         COMMAND ${LA_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/sched_oracle.py ${LA_SCHED_PARITY_DIR} random)
set_tests_properties(model_sched_parity_oracle PROPERTIES FIXTURES_SETUP model_sched_parity LABELS "parity"
                     TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
add_test(NAME model_sched_parity COMMAND model_sched_parity_test ${LA_SCHED_PARITY_DIR}/sched_fixture.json)
set_tests_properties(model_sched_parity PROPERTIES FIXTURES_REQUIRED model_sched_parity LABELS "parity"
                     TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
