// The HDF5 training-set format (docs/data.md) and its reader, TrainingSet (the writer is
// TrainingSetWriter, training_set_writer.h). One file holds every record: encoded image bytes,
// identity, prompt, photo/style flag, 5 landmarks and optional precomputed tensors, plus optional
// file-level tensors, per-record metadata columns and string attributes. A sharded set is a
// manifest (manifest.h) listing such files; TrainingSet reads it as their concatenation.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
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

/// Group of the per-record metadata columns ([N, ...] datasets); a file without it has none.
inline constexpr const char* kColumnsGroup = "columns";
/// Group whose string attributes are the file-level attributes; a file without it has none.
inline constexpr const char* kAttributesGroup = "attributes";

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

/// Read-only view of a training-set file or of a manifest of shard files. Metadata (identities,
/// flags, prompts, landmarks, offsets, checksums, columns, attributes) is loaded at open; image
/// bytes and optional tensors are read per record with pread() from the contiguous datasets, so
/// get() is thread-safe and never calls HDF5 concurrently.
///
/// A manifest set presents its shards' records concatenated in manifest order: every accessor
/// takes the global index. An error about one record is a DataError whose file() is the shard's
/// file and record() the index within that shard; its message adds the global index and the
/// manifest. Globals and attributes are the first shard's.
class TrainingSet {
 public:
  /// Opens and validates `path` (format, version, every dataset's shape and type), or, when
  /// is_manifest(path), the manifest and every shard it lists (each file's size and record count
  /// against the manifest, the optional tensors' shapes and the columns' types across shards).
  /// Throws DataError naming the file and the offending dataset or attribute; for a manifest,
  /// naming the manifest and the shard.
  static std::shared_ptr<TrainingSet> open(const std::string& path);
  ~TrainingSet();
  TrainingSet(const TrainingSet&) = delete;
  TrainingSet& operator=(const TrainingSet&) = delete;

  /// The file, or the manifest, given to open().
  const std::string& path() const { return path_; }
  int64_t size() const { return size_; }
  /// True when open() was given a manifest.
  bool from_manifest() const { return manifest_; }
  /// Shard files of a manifest set (1 for a single file).
  int64_t num_shards() const { return manifest_ ? static_cast<int64_t>(parts_.size()) : 1; }

  /// Decoded record `index`. Throws DataError(path, index) for an index out of range, a checksum
  /// mismatch or undecodable bytes (for a manifest: the shard's file and index within it). Thread-safe.
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

  /// Names of the per-record metadata columns, numeric and string, sorted.
  std::vector<std::string> column_names() const;
  bool has_column(const std::string& name) const;
  /// Numeric column `name`: [N, ...] int64, int32, float32 or uint8 on the CPU, as stored (a copy);
  /// undefined when absent or a string column.
  at::Tensor column(const std::string& name) const;
  /// String column `name`: N UTF-8 strings (a copy); empty when absent or a numeric column
  /// (has_column tells an absent column from a present one of a 0-record set).
  std::vector<std::string> string_column(const std::string& name) const;
  /// File-level string attribute `name` (e.g. a JSON of the generation settings); "" when absent.
  std::string attribute(const std::string& name) const;
  /// Names of the attributes, sorted.
  std::vector<std::string> attribute_names() const;

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
  struct Opener;  // the steps of open(): layout check, index, bulk datasets, globals, columns
  struct Merger;  // the steps of opening a manifest: shards, their checks, the concatenation
  TrainingSet() = default;
  static std::shared_ptr<TrainingSet> open_hdf5(const std::string& path);
  static std::shared_ptr<TrainingSet> open_manifest(const std::string& path);
  int64_t check(int64_t index) const;
  /// The file holding record `index` (this one, or a shard) and the index within it.
  std::pair<const TrainingSet*, int64_t> locate(int64_t index) const;
  /// Runs `read` on the file holding record `index`; a DataError from a shard gains the global
  /// index and the manifest.
  template <class F>
  auto in_file(int64_t index, F&& read) const;
  // Reads from this file alone, by index within it (a shard's metadata vectors are moved into the
  // manifest set, so only these, which need none of them, are called on a shard).
  std::vector<uint8_t> file_image_bytes(int64_t index) const;
  at::Tensor file_extra(const std::string& name, int64_t index) const;
  void read_bytes(const Extra* ex, int64_t byte_offset, int64_t count, void* out, int64_t record) const;

  std::string path_;
  int fd_ = -1;
  int64_t size_ = 0;
  // A manifest set: its shards and the global index of each one's first record ([shards + 1]).
  std::vector<std::shared_ptr<const TrainingSet>> parts_;
  std::vector<int64_t> part_begin_;
  bool manifest_ = false;
  const TrainingSet* layout_ = this;  // whose extras_ describe the optional tensors (a non-empty shard)
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
  std::map<std::string, at::Tensor> columns_;
  std::map<std::string, std::vector<std::string>> string_columns_;
  std::map<std::string, std::string> attributes_;
  mutable std::mutex h5_mutex_;  // HDF5 (serial build) is not thread-safe: fallback reads only
};

}  // namespace lookahead::data
