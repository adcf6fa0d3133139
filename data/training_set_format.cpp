// Helpers shared by the training-set reader and writer (see training_set_format.h).
#include "data/training_set_format.h"

#include <xxhash.h>

#include <c10/util/Exception.h>

namespace lookahead::data::detail {

int64_t extra_rank(const std::string& name) {
  for (size_t i = 0; i < kExtraCount; ++i)
    if (name == kExtraNames[i]) return kExtraRanks[i];
  TORCH_CHECK(false, "unknown optional tensor '", name, "'");
}

common::H5Handle make_f16(const std::string& file) {
  common::H5Handle t(H5Tcopy(H5T_IEEE_F32LE), "H5Tcopy", file);
  LA_H5_CHECK(H5Tset_fields(t.get(), 15, 10, 5, 0, 10), file);
  LA_H5_CHECK(H5Tset_size(t.get(), 2), file);
  LA_H5_CHECK(H5Tset_ebias(t.get(), 15), file);
  return t;
}

uint64_t checksum(const void* data, size_t size) { return XXH64(data, size, 0); }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(s[i]);
  }
  return out + "]";
}

DataError h5_data_error(const common::H5Error& e, const std::string& file) {
  return DataError(file, -1, "HDF5 call failed: " + e.call() + ": " + e.detail());
}

}  // namespace lookahead::data::detail
