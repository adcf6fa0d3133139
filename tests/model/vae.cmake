# Autoencoders (model/vae): structure and small-config runs, and parity with diffusers. The parity
# oracle runs first (a ctest fixture): fixed cases (seed 1234) plus cases drawn from a fresh random
# seed each run, which it prints; `vae_oracle.py OUTDIR SEED` (or LA_PARITY_SEED=SEED ctest -R vae)
# reproduces a failure. The parity binary also drives the `model run` runner (model/run/).
lookahead_add_test(model_vae_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/vae_test.cpp DEPS lookahead_model)

lookahead_add_test(model_vae_parity_test
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/vae_parity_test.cpp
  DEPS lookahead_model)

set(LA_VAE_PARITY_DIR ${CMAKE_CURRENT_BINARY_DIR}/vae_parity)
add_test(NAME model_vae_parity_oracle
         COMMAND ${LA_PYTHON} ${CMAKE_SOURCE_DIR}/tests/parity/vae_oracle.py ${LA_VAE_PARITY_DIR} random)
set_tests_properties(model_vae_parity_oracle PROPERTIES FIXTURES_SETUP model_vae_parity LABELS "parity"
                     TIMEOUT 300 ENVIRONMENT "${LA_TEST_ENV}")
set_tests_properties(model_vae_parity_test PROPERTIES FIXTURES_REQUIRED model_vae_parity LABELS "parity"
                     ENVIRONMENT "${LA_TEST_ENV};LA_VAE_PARITY_DIR=${LA_VAE_PARITY_DIR}")
