// TrainingSetWriter: streams records into a new training-set file (format: training_set.h,
// docs/data.md).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/training_set.h"

namespace lookahead::data {

/// What one record of a new file holds.
struct RecordData {
  std::vector<uint8_t> image;  ///< encoded JPEG or PNG bytes, stored as they are
  int64_t height = 0, width = 0;  ///< 0: found by decoding (which also validates the bytes)
  int64_t identity = 0;
  std::string prompt;
  bool photo = false;
  at::Tensor landmarks;  ///< [5,2] float; undefined = unknown (stored as NaN)
  at::Tensor latents, prompt_embeds, pooled_prompt_embeds, clip_features;  ///< optional, see Record
};

/// Record `index` of `set` as a writer takes it: the checksum-verified image bytes, their size, the
/// identity, prompt, photo flag and landmarks; not its precomputed tensors (a copy into another set
/// recomputes or drops them).
RecordData record_data(const TrainingSet& set, int64_t index);

/// Streams records into a new training-set file. Bulk data is spooled to temporary files and
/// copied into contiguous datasets by finish(), which writes `path` + ".tmp" and renames it, so a
/// crashed pack never leaves a half-written file under the final name. The first record decides
/// which optional tensors exist and their shapes/dtypes; later records must match.
class TrainingSetWriter {
 public:
  explicit TrainingSetWriter(std::string path);
  /// Removes temporary files if finish() was not called.
  ~TrainingSetWriter();
  TrainingSetWriter(const TrainingSetWriter&) = delete;
  TrainingSetWriter& operator=(const TrainingSetWriter&) = delete;

  /// Appends one record; returns its index.
  int64_t add(const RecordData& record);
  /// Stores a file-level tensor (float16 or float32, any shape) under `name` (no '/'); a second
  /// call with the same name replaces it. Written by finish().
  void set_global(const std::string& name, const at::Tensor& t);
  /// Stores a per-record metadata column `name` (no '/'): [N, ...] int64, int32, float32 or uint8,
  /// row i belonging to record i. N must be the record count at finish(), which checks it (a
  /// DataError naming the column), so a column may be set before or after the records are added.
  /// A second call with the same name replaces the column (numeric or string).
  void set_column(const std::string& name, const at::Tensor& values);
  /// A per-record column of UTF-8 strings, one per record (same rules as set_column).
  void set_string_column(const std::string& name, const std::vector<std::string>& values);
  /// A file-level string attribute (e.g. a JSON of the generation settings), any length; a second
  /// call with the same name replaces it.
  void set_attribute(const std::string& name, const std::string& value);
  int64_t size() const { return static_cast<int64_t>(identity_.size()); }
  /// Writes the file and renames it into place; returns the record count.
  int64_t finish();

 private:
  struct Spool;
  std::string path_;
  bool finished_ = false;
  std::vector<int64_t> identity_;
  std::vector<uint8_t> photo_;
  std::vector<std::string> prompt_;
  std::vector<float> landmarks_;
  std::vector<int64_t> offsets_{0};
  std::vector<uint64_t> xxh64_;
  std::vector<int32_t> hw_;
  std::unique_ptr<Spool> images_;
  std::vector<std::unique_ptr<Spool>> extras_;
  std::map<std::string, at::Tensor> globals_;
  std::map<std::string, at::Tensor> columns_;
  std::map<std::string, std::vector<std::string>> string_columns_;
  std::map<std::string, std::string> attributes_;
};

}  // namespace lookahead::data
