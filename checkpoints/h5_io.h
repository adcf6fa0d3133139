// Checkpoint-file helpers over common/h5_handle.h: files, groups, datasets that carry their own
// xxh64 checksum, fixed-length string attributes and the object listing. Every call is
// LA_H5_CHECKed and every identifier lives in an H5Handle; a failed call throws common::H5Error,
// which save / load / validate turn into CheckpointError.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/h5_handle.h"

namespace lookahead::ckpt {

using common::H5Handle;

namespace h5 {

/// Name of the uint64 attribute every checkpoint dataset carries: XXH64 (seed 0) of its bytes.
inline constexpr const char* kChecksumAttr = "xxh64";

using QuietErrors = common::H5QuietErrors;

/// Creates (truncating) `path` for writing.
H5Handle create_file(const std::string& path);
/// Opens `path` read-only.
H5Handle open_file(const std::string& path);
/// Creates group `name` under `loc`, with any missing intermediate groups.
H5Handle create_group(hid_t loc, const std::string& name);
H5Handle open_group(hid_t loc, const std::string& name);
H5Handle open_dataset(hid_t loc, const std::string& name);

/// Writes a contiguous dataset `name` (intermediate groups created) of `mem_type` with `shape`
/// (empty: scalar) from `data` (`nbytes` bytes, native layout) and attaches its checksum.
void write_dataset(hid_t loc, const std::string& name, hid_t mem_type, const std::vector<hsize_t>& shape,
                   const void* data, size_t nbytes);
/// Reads the whole dataset as `mem_type` into `out` (`nbytes` must match).
void read_dataset(hid_t dataset, hid_t mem_type, void* out, size_t nbytes);
/// Full bytes of a dataset in its file type (what the checksum covers).
std::vector<uint8_t> raw_bytes(hid_t dataset);

/// A fixed-length string attribute as set_attr(std::string) writes it; variable-length strings
/// are refused (this library never writes them).
std::string attr_str(hid_t obj, const std::string& name);

/// Paths (relative to the file root, no leading '/') of every group and dataset, sorted.
std::vector<std::string> list_objects(hid_t file);
/// Paths (relative to the file root, no leading '/') of every dataset in the file, sorted.
std::vector<std::string> list_datasets(hid_t file);

}  // namespace h5
}  // namespace lookahead::ckpt
