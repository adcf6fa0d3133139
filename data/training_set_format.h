// What the training-set reader and writer share about the file beyond the public names in
// training_set.h: the optional tensors' per-record ranks, the float16 file type, the record
// checksum and how an HDF5 failure becomes a DataError. Internal to data/.
#pragma once

#include <hdf5.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/h5_handle.h"
#include "data/error.h"
#include "data/training_set.h"

namespace lookahead::data::detail {

/// The optional per-record tensors, and the rank of one record's tensor, in the same order.
inline constexpr const char* kExtraNames[] = {kLatents, kPromptEmbeds, kPooledPromptEmbeds, kClipFeatures};
inline constexpr int64_t kExtraRanks[] = {3, 2, 1, 2};
inline constexpr size_t kExtraCount = 4;

/// Per-record rank of optional tensor `name`; throws c10::Error for an unknown name.
int64_t extra_rank(const std::string& name);

/// IEEE half, little endian, as h5py spells it (HDF5 1.10 predefines no float16 type).
common::H5Handle make_f16(const std::string& file);

/// XXH64 (seed 0) of a record's image bytes.
uint64_t checksum(const void* data, size_t size);

/// "[2,3]".
std::string shape_str(const std::vector<int64_t>& shape);

/// The DataError a failed HDF5 call on `file` is reported as: "<file>: HDF5 call failed: <call>:
/// <HDF5's message>". DataError is what every data/ caller handles for a bad file.
DataError h5_data_error(const common::H5Error& e, const std::string& file);

}  // namespace lookahead::data::detail
