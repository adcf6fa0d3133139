// safetensors files: a memory-mapped reader that validates the header against the file, a writer
// that produces files the Python `safetensors` package reads (byte for byte what it writes), and
// sharded checkpoints (`*.safetensors.index.json` with a `weight_map`, safetensors_index.cpp). The
// header format and its validation are in safetensors_header.h, which this header includes.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/io/safetensors_header.h"

namespace lookahead::common {
class MappedFile;
}  // namespace lookahead::common

namespace lookahead::model::io {

/// A read-only, memory-mapped safetensors file. Only the pages of tensors that are read are
/// touched, so opening a 10 GB checkpoint costs the header alone. get() is safe to call from
/// several threads at once.
///
/// Example:
///   auto f = SafetensorsFile::open("unet/diffusion_pytorch_model.safetensors");
///   at::Tensor w = f->get("conv_in.weight");
class SafetensorsFile {
 public:
  /// Maps and validates the file; throws c10::Error naming the file on any inconsistency
  /// (truncation, header length beyond the file, bad JSON, unknown dtype, bad offsets).
  /// The file must not be truncated while it is open (the mapping would fault); the writer here
  /// replaces files by rename, which leaves open mappings intact.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  bool contains(const std::string& name) const;
  /// Entry for `name`; throws naming the file if absent.
  const TensorInfo& info(const std::string& name) const;
  /// A new, contiguous CPU tensor holding a copy of `name`'s bytes, in memory aligned for its
  /// dtype even where the file's data section is not. Throws for a BOOL tensor whose bytes are
  /// not all 0 or 1, since torch assumes canonical booleans.
  at::Tensor get(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  Header header_;
  std::map<std::string, size_t> index_;
  const uint8_t* data_ = nullptr;  // start of the data section inside the mapping
  std::unique_ptr<common::MappedFile> map_;
};

/// All tensors of a safetensors file, or of a sharded checkpoint given its index (a path ending in
/// `.index.json`): shards are found relative to the index's folder, and every shard must hold
/// exactly the tensors the `weight_map` assigns to it.
std::map<std::string, at::Tensor> load_file(const std::string& path);

/// Writes `tensors` (contiguous CPU copies are made as needed, one tensor at a time) with optional
/// string metadata (written as `__metadata__` when not empty, keys sorted). Tensors are laid out as
/// the reference writer does: by dtype (wider first, in the reference's dtype order) then name, the
/// compact JSON header padded with spaces to a multiple of 8. The file is written to a temporary
/// name in the same folder, fsynced and renamed, so a crash never leaves a truncated file under
/// `path`. Throws c10::Error naming `path` (and the tensor) for duplicate or reserved names,
/// names or metadata that are not valid UTF-8, unsupported dtypes, and I/O failures.
void save_file(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
               const std::map<std::string, std::string>& metadata = {});

/// Produces the tensor of one declared entry (name, dtype, shape) when the writer reaches it.
using TensorSource = std::function<at::Tensor(const TensorInfo& entry)>;

/// save_file for tensors that do not exist yet: `entries` declare names, dtypes and shapes (their
/// offsets are ignored), and `source` is called once per entry, in file order, for its tensor,
/// which must have the declared dtype and shape. Only one tensor is alive at a time, so a file far
/// larger than memory can be written. Same layout, checks and atomic replacement as save_file.
void save_file_streamed(const std::string& path, const std::vector<TensorInfo>& entries, const TensorSource& source,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace lookahead::model::io
