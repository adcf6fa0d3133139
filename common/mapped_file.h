// MappedFile: a whole file mapped read-only, for readers that parse a file image in place
// (safetensors, torch.save archives) and touch only the pages they read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lookahead::common {

/// Move-only, read-only, private mapping of a regular file; unmapped on destruction. An empty
/// file maps to data() == nullptr, size() == 0, so the caller reports it in its own words.
/// The file must not be truncated while it is mapped (reading a page past the new end faults);
/// writers here replace files by rename, which leaves open mappings intact.
class MappedFile {
 public:
  /// Maps `path`. `what` names the kind of file in errors ("safetensors file"): c10::Error
  /// "cannot open <what> '<path>': <reason>" (also stat / map), or "<what> '<path>': not a
  /// regular file".
  MappedFile(const std::string& path, const std::string& what);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace lookahead::common
