# The LCM-Lookahead network as one object (model/lookahead): sharding-unit coverage and live
# tensors, SDXL role counts on the meta device, split-invariant step draws, gradients of both
# losses, the α schedule's statistics.
lookahead_add_test(model_lookahead_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/lookahead_model_test.cpp DEPS lookahead_model)
