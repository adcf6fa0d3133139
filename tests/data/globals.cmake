# File-level tensors of the training-set format (TrainingSetWriter::set_global / TrainingSet::global).
lookahead_add_test(data_globals_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/globals_test.cpp DEPS lookahead_data HDF5::HDF5)
