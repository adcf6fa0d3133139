# Random crop and flip (data/image_io resize_crop, data/loader's per-sample draws).
lookahead_add_test(data_augment_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/augment_test.cpp DEPS lookahead_data HDF5::HDF5)
