// The safetensors header: its dtypes, tensor entries and the validation of the JSON header
// against the data section. Validated by a streaming (SAX) JSON handler, so a hostile header costs
// no memory beyond its own size and duplicate keys are caught (a DOM parser would keep the last one
// silently).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace lookahead::model::io {

/// Largest header (JSON) the reader accepts, as in the reference implementation.
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

/// One tensor entry of a safetensors header.
struct TensorInfo {
  std::string name;
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  ///< byte offset in the data section (after the 8 + N header bytes)
  uint64_t end = 0;
  /// Product of `shape` (1 for a rank-0 tensor).
  int64_t numel() const;
};

/// Parsed safetensors header.
struct Header {
  std::vector<TensorInfo> tensors;  ///< in file (offset) order
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  ///< file offset of the data section: 8 + the JSON header's length
};

/// Parses and validates a header: JSON object, known dtypes, shapes consistent with byte counts,
/// offsets inside `data_size`, non-overlapping and covering the data section, no duplicate keys.
/// Throws c10::Error whose message names `origin` (a file path) and the offending tensor.
Header parse_header(std::string_view json, uint64_t data_size, const std::string& origin);

/// Validates a whole file image held in memory (`size` bytes: the 8-byte length, the header and
/// the data section) and returns its header. Reads nothing outside [bytes, bytes + size); this is
/// what SafetensorsFile::open runs on its mapping, and what the fuzz target drives.
Header parse_image(const uint8_t* bytes, size_t size, const std::string& origin);

/// safetensors dtype string ("F32", "BF16", ...) of a torch dtype; throws for unsupported ones.
std::string dtype_to_string(at::ScalarType dtype);
/// torch dtype of a safetensors dtype string; throws for unknown ones.
at::ScalarType dtype_from_string(const std::string& dtype);


namespace detail {

/// One safetensors dtype: its name in the header, the torch dtype and the element size.
struct DtypeEntry {
  const char* name;
  at::ScalarType type;
  size_t itemsize;
};

/// The entry for a header dtype name / a torch dtype; null when unsupported.
const DtypeEntry* find_dtype(std::string_view name);
const DtypeEntry* find_dtype(at::ScalarType type);
/// Position of a supported dtype in the reference implementation's dtype order (its writer lays
/// tensors out by descending position, then by name).
size_t dtype_rank(at::ScalarType type);
/// "BOOL, U8, ...", for error messages.
std::string supported_dtypes();

/// Prefixes of every error message, so each names the file (and the tensor) it is about.
std::string in_file(const std::string& origin);
std::string in_tensor(const std::string& origin, const std::string& name);

}  // namespace detail
}  // namespace lookahead::model::io
