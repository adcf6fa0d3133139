// The HDF5 training-set format (docs/data.md) and its reader, TrainingSet (the writer is
// TrainingSetWriter, training_set_writer.h). One file holds every record: encoded image bytes,
// identity, prompt, photo/style flag, 5 landmarks and optional precomputed tensors, plus optional
// file-level tensors.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/error.h"

namespace lookahead::data {

/// Format name and version written as file attributes; the reader refuses anything else.
inline constexpr const char* kFormatName = "lookahead-trainingset";
inline constexpr int64_t kFormatVersion = 1;

/// Names of the optional per-record tensors, as datasets in the file ([N, ...row shape]).
inline constexpr const char* kLatents = "latents";                            // [N,4,h,w]
inline constexpr const char* kPromptEmbeds = "prompt_embeds";                 // [N,M,D]
inline constexpr const char* kPooledPromptEmbeds = "pooled_prompt_embeds";    // [N,P]
inline constexpr const char* kClipFeatures = "clip_features";                 // [N,T,D]

/// Group of the file-level ("global") tensors; a file without it has none.
inline constexpr const char* kGlobalsGroup = "globals";
/// Global: CLIP image-encoder features of the all-zero image, IP-Adapter's unconditional input.
inline constexpr const char* kClipUncond = "clip_uncond";                     // [1,T,D]

/// One decoded record.
struct Record {
  int64_t index = -1;
  at::Tensor image;  ///< uint8 [H,W,3] RGB
  int64_t identity = 0;
  std::string prompt;
  bool photo = false;     ///< a "vanilla" photo, usable as a reference
  at::Tensor landmarks;   ///< float32 [5,2] (x,y) in source pixels; NaN = unknown
  at::Tensor latents;     ///< [4,h,w] float16/float32, undefined when the file has none
  at::Tensor prompt_embeds;          ///< [M,D], or undefined
  at::Tensor pooled_prompt_embeds;   ///< [P], or undefined
  at::Tensor clip_features;          ///< [T,D], or undefined
};

/// Read-only view of a training-set file. Metadata (identities, flags, prompts, landmarks, offsets,
/// checksums) is loaded at open; image bytes and optional tensors are read per record with pread()
/// from the contiguous datasets, so get() is thread-safe and never calls HDF5 concurrently.
class TrainingSet {
 public:
  /// Opens and validates `path` (format, version, every dataset's shape and type). Throws
  /// DataError naming the file and the offending dataset or attribute.
  static std::shared_ptr<TrainingSet> open(const std::string& path);
  ~TrainingSet();
  TrainingSet(const TrainingSet&) = delete;
  TrainingSet& operator=(const TrainingSet&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return static_cast<int64_t>(identity_.size()); }

  /// Decoded record `index`. Throws DataError(path, index) for an index out of range, a checksum
  /// mismatch or undecodable bytes. Thread-safe.
  Record get(int64_t index) const;
  /// Checksum-verified encoded image bytes of record `index`. Thread-safe.
  std::vector<uint8_t> image_bytes(int64_t index) const;
  /// Optional tensor `name` (kLatents, ...) of record `index`; undefined when absent.
  at::Tensor extra(const std::string& name, int64_t index) const;
  /// Per-record shape of optional tensor `name`; empty when the file has none.
  std::vector<int64_t> extra_shape(const std::string& name) const;
  bool has_extra(const std::string& name) const { return !extra_shape(name).empty(); }
  /// File-level tensor `name` (e.g. kClipUncond) as stored (float16/float32, CPU); undefined when
  /// the file has none. Thread-safe (read at open).
  at::Tensor global(const std::string& name) const;
  /// Names of the file-level tensors, sorted.
  std::vector<std::string> global_names() const;

  int64_t identity(int64_t index) const { return identity_.at(check(index)); }
  bool photo(int64_t index) const { return photo_.at(check(index)) != 0; }
  const std::string& prompt(int64_t index) const { return prompt_.at(check(index)); }
  /// float32 [5,2].
  at::Tensor landmarks(int64_t index) const;
  /// (height, width) of the encoded image.
  std::array<int64_t, 2> image_size(int64_t index) const;
  const std::vector<int64_t>& identities() const { return identity_; }
  const std::vector<uint8_t>& photo_flags() const { return photo_; }

 private:
  struct Extra;
  struct Opener;  // the steps of open(): layout check, index, bulk datasets, globals
  TrainingSet() = default;
  int64_t check(int64_t index) const;
  void read_bytes(const Extra* ex, int64_t byte_offset, int64_t count, void* out, int64_t record) const;

  std::string path_;
  int fd_ = -1;
  std::vector<int64_t> identity_;
  std::vector<uint8_t> photo_;
  std::vector<std::string> prompt_;
  std::vector<float> landmarks_;  // [N,5,2]
  std::vector<int64_t> offsets_;  // [N+1]
  std::vector<uint64_t> xxh64_;   // [N]
  std::vector<int32_t> hw_;       // [N,2]
  std::unique_ptr<Extra> images_;
  std::vector<std::unique_ptr<Extra>> extras_;
  std::map<std::string, at::Tensor> globals_;
  mutable std::mutex h5_mutex_;  // HDF5 (serial build) is not thread-safe: fallback reads only
};

}  // namespace lookahead::data
