# Sampling with the KV encoder (model/lookahead/generation): the guidance formula, repeatability,
# per-sample seeds, which conditioning reaches which guidance term, the samplers, a hand-written
# Euler + CFG loop; and the same loop through the sharded engine on 1 and 2 ranks.
lookahead_add_test(model_generation_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/generation_test.cpp DEPS lookahead_model)
lookahead_add_test(model_generation_engine_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/generation_engine_test.cpp
                   DEPS lookahead_dist lookahead_model RANKS 1 2 TIMEOUT 300)
