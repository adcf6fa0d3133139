# Device-dependent decisions of the trainer (dtype = auto, the dry-run memory report) for a CUDA
# device, checked on a machine without one.
lookahead_add_test(trainer_device_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/device_test.cpp DEPS lookahead_trainer
                   TIMEOUT 120)
