// FFHQ (NVlabs/ffhq-dataset) -> training-set file: reads the metadata `ffhq-dataset-v2.json`, turns
// each aligned image's 68 dlib landmarks into the 5 points of our pipeline and packs the 1024x1024
// PNGs (or re-encoded smaller copies) as records whose identity is the FFHQ index. docs/ffhq.md.
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lookahead::data {

/// Which part of FFHQ to convert: the metadata's "category" ("training" = indices 0..59999,
/// "validation" = 60000..69999 in the published file), or everything.
enum class FfhqCategory { kAll, kTraining, kValidation };

/// "all" | "training" | "validation"; throws std::invalid_argument otherwise.
FfhqCategory parse_ffhq_category(const std::string& name);
const char* to_string(FfhqCategory category);

/// The 5 points of model/face/align.h's arcface_template (left eye, right eye, nose tip, left and
/// right mouth corner; "left" = the one on the image's left, i.e. the subject's right) from the 68
/// iBUG/dlib points (0-based): eye centres = mean of 36..41 and of 42..47, nose tip = 30, mouth
/// corners = 48 and 54, the same points FFHQ's own alignment uses.
/// landmarks68 [68, 2] (x, y) -> float32 [5, 2] (computed in float64).
at::Tensor five_from_68_landmarks(const at::Tensor& landmarks68);

/// One entry of ffhq-dataset-v2.json, reduced to what the conversion needs.
struct FfhqEntry {
  int64_t index = -1;      ///< the JSON key ("0".."69999")
  std::string category;    ///< "training" / "validation" ("" when missing: see error)
  std::string file_path;   ///< image.file_path, relative to the FFHQ root
  std::string file_md5;    ///< image.file_md5 (lower-case hex), "" when absent
  int64_t width = 0, height = 0;  ///< image.pixel_size = [width, height]
  at::Tensor landmarks;    ///< float32 [5, 2] from image.face_landmarks (five_from_68_landmarks)
  std::string error;       ///< non-empty: why the entry is unusable (reported only if it is selected)
};

/// Parses the metadata file as a stream, keeping only "category" and "image" of each entry (the
/// 255 MB file never sits in memory: ~2 KB per entry remain). Entries are sorted by index. A malformed entry does not
/// throw here: its `error` says what is wrong, so that converting other entries still works.
/// Throws DataError naming `json_path` for an unreadable file, invalid JSON, a top level that is
/// not an object, or an index that appears twice.
std::vector<FfhqEntry> read_ffhq_metadata(const std::string& json_path);

struct FfhqOptions {
  std::string root;       ///< folder holding images1024x1024/ (image.file_path is relative to it)
  std::string json;       ///< ffhq-dataset-v2.json
  std::string out;        ///< training-set file to write
  FfhqCategory category = FfhqCategory::kValidation;
  int64_t first = 0;      ///< smallest FFHQ index considered
  int64_t count = -1;     ///< entries taken (in index order, after the category filter); -1 = all
  int64_t resize = 0;     ///< > 0: re-encode as resize x resize PNG, landmarks mapped alike
  bool verify_md5 = false;    ///< check every PNG against image.file_md5 before packing it
  bool skip_missing = false;  ///< skip (and count) entries whose image file does not exist
  std::string prompt;     ///< the prompt of every record
};

struct FfhqReport {
  int64_t entries = 0;          ///< entries in the metadata file
  int64_t selected = 0;         ///< entries chosen by category / first / count
  int64_t records = 0;          ///< records written
  int64_t skipped_missing = 0;  ///< selected entries skipped because the image file is missing
  int64_t md5_verified = 0;     ///< images whose file MD5 was checked
  int64_t first_index = -1, last_index = -1;  ///< FFHQ indices of the first and last record
  int64_t height = 0, width = 0;              ///< size of the stored images (of the first record)
};

/// Converts the selected FFHQ entries into `options.out`: one record per image, identity = FFHQ
/// index, photo = true, prompt = options.prompt, landmarks = five_from_68_landmarks (mapped through
/// the resize when there is one). Each PNG is decoded once (its size must equal image.pixel_size);
/// without `resize` its bytes are stored as they are. Throws DataError naming the FFHQ index and
/// the JSON file (malformed entry) or the image path (missing, unreadable, wrong size, MD5
/// mismatch); a failed conversion leaves no file under `out`.
FfhqReport convert_ffhq(const FfhqOptions& options);

/// MD5 (RFC 1321) of `size` bytes as 32 lower-case hex digits (what FFHQ's file_md5 holds).
std::string md5_hex(const uint8_t* data, size_t size);

}  // namespace lookahead::data
