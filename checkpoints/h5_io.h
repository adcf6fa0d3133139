// Small typed helpers over the HDF5 C API for checkpoint files: files, groups, datasets that carry
// their own xxh64 checksum, and scalar / string attributes. Every call is LA_H5_CHECKed and every
// identifier lives in an H5Handle.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoints/hdf5_handle.h"

namespace lookahead::ckpt::h5 {

/// Name of the uint64 attribute every checkpoint dataset carries: XXH64 (seed 0) of its bytes.
inline constexpr const char* kChecksumAttr = "xxh64";

/// Silences HDF5's automatic error-stack printing for its lifetime. Failures still surface as
/// LA_H5_CHECK exceptions (which read the stack); the printout would only duplicate them, and a
/// deliberately probed corrupt file must not spray pages of HDF5 internals over the log.
class QuietErrors {
 public:
  QuietErrors();
  ~QuietErrors();
  QuietErrors(const QuietErrors&) = delete;
  QuietErrors& operator=(const QuietErrors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

/// Creates (truncating) `path` for writing.
H5Handle create_file(const std::string& path);
/// Opens `path` read-only.
H5Handle open_file(const std::string& path);
/// Creates group `name` under `loc`, with any missing intermediate groups.
H5Handle create_group(hid_t loc, const std::string& name);
H5Handle open_group(hid_t loc, const std::string& name);
H5Handle open_dataset(hid_t loc, const std::string& name);
/// True when the link `path` ("a/b/c", relative to `loc`) exists, checking every component.
bool exists(hid_t loc, const std::string& path);

/// Writes a contiguous dataset `name` (intermediate groups created) of `mem_type` with `shape`
/// (empty: scalar) from `data` (`nbytes` bytes, native layout) and attaches its checksum.
void write_dataset(hid_t loc, const std::string& name, hid_t mem_type, const std::vector<hsize_t>& shape,
                   const void* data, size_t nbytes);
/// Dimensions of a dataset (empty for a scalar).
std::vector<hsize_t> shape(hid_t dataset);
/// Reads the whole dataset as `mem_type` into `out` (`nbytes` must match).
void read_dataset(hid_t dataset, hid_t mem_type, void* out, size_t nbytes);
/// Reads rows [row_begin, row_end) of dimension 0 (all of the other dimensions) as `mem_type`.
void read_rows(hid_t dataset, hid_t mem_type, hsize_t row_begin, hsize_t row_end, void* out);
/// Full bytes of a dataset in its file type (what the checksum covers).
std::vector<uint8_t> raw_bytes(hid_t dataset);

void set_attr(hid_t obj, const std::string& name, int64_t value);
void set_attr(hid_t obj, const std::string& name, uint64_t value);
void set_attr(hid_t obj, const std::string& name, double value);
void set_attr(hid_t obj, const std::string& name, const std::string& value);
bool has_attr(hid_t obj, const std::string& name);
int64_t attr_i64(hid_t obj, const std::string& name);
uint64_t attr_u64(hid_t obj, const std::string& name);
double attr_f64(hid_t obj, const std::string& name);
std::string attr_str(hid_t obj, const std::string& name);

/// Paths (relative to the file root, no leading '/') of every group and dataset, sorted.
std::vector<std::string> list_objects(hid_t file);
/// Paths (relative to the file root, no leading '/') of every dataset in the file, sorted.
std::vector<std::string> list_datasets(hid_t file);

}  // namespace lookahead::ckpt::h5
