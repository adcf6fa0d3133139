// FFHQ metadata parsing (streaming, with nlohmann's parser callback so that only the two fields we
// use of each entry are ever materialised), the 68 -> 5 landmark reduction, MD5 and the conversion.
#include "data/ffhq.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/error.h"
#include "data/image_io.h"
#include "data/training_set.h"
#include "data/training_set_writer.h"

namespace lookahead::data {

namespace {

using json = nlohmann::json;

// iBUG 68-point indices (0-based) of the parts the 5-point template needs.
constexpr int kLeftEyeBegin = 36, kRightEyeBegin = 42, kEyePoints = 6;
constexpr int kNoseTip = 30, kMouthLeft = 48, kMouthRight = 54;

bool is_index_key(const std::string& key) {
  return !key.empty() && key.size() <= 9 &&
         std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// One parsed entry -> FfhqEntry; problems go to entry.error (prefixed by the field's JSON path).
FfhqEntry make_entry(const std::string& key, const json& j) {
  FfhqEntry e;
  if (!is_index_key(key)) {
    e.error = "key \"" + key + "\" is not an image index";
    return e;
  }
  e.index = std::stoll(key);
  if (!j.is_object()) {
    e.error = "entry is not an object";
    return e;
  }
  if (!j.contains("category") || !j["category"].is_string()) {
    e.error = "needs a string \"category\"";
    return e;
  }
  e.category = j["category"].get<std::string>();
  if (!j.contains("image") || !j["image"].is_object()) {
    e.error = "needs an object \"image\"";
    return e;
  }
  const json& img = j["image"];
  if (!img.contains("file_path") || !img["file_path"].is_string() || img["file_path"].get<std::string>().empty()) {
    e.error = "needs a string \"image.file_path\"";
    return e;
  }
  e.file_path = img["file_path"].get<std::string>();
  if (img.contains("file_md5") && img["file_md5"].is_string()) {
    e.file_md5 = img["file_md5"].get<std::string>();
    std::transform(e.file_md5.begin(), e.file_md5.end(), e.file_md5.begin(),
                   [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
  }
  const json* size = img.contains("pixel_size") ? &img["pixel_size"] : nullptr;
  if (!size || !size->is_array() || size->size() != 2 || !(*size)[0].is_number_integer() ||
      !(*size)[1].is_number_integer() || (*size)[0].get<int64_t>() <= 0 || (*size)[1].get<int64_t>() <= 0) {
    e.error = "\"image.pixel_size\" must be [width, height] positive integers";
    return e;
  }
  e.width = (*size)[0].get<int64_t>();
  e.height = (*size)[1].get<int64_t>();
  const json* lm = img.contains("face_landmarks") ? &img["face_landmarks"] : nullptr;
  if (!lm || !lm->is_array() || lm->size() != 68) {
    e.error = "\"image.face_landmarks\" must be 68 [x, y] points";
    return e;
  }
  at::Tensor pts = at::empty({68, 2}, at::kDouble);
  double* p = pts.data_ptr<double>();
  for (size_t k = 0; k < 68; ++k) {
    const json& q = (*lm)[k];
    if (!q.is_array() || q.size() != 2 || !q[0].is_number() || !q[1].is_number()) {
      e.error = "\"image.face_landmarks\"[" + std::to_string(k) + "] must be [x, y] numbers";
      return e;
    }
    p[2 * k] = q[0].get<double>();
    p[2 * k + 1] = q[1].get<double>();
  }
  e.landmarks = five_from_68_landmarks(pts);
  return e;
}

std::vector<uint8_t> read_bytes(const std::string& path, int64_t index) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path, index, "cannot read the image file");
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// What the parallel stage hands to the (sequential) writer for one selected entry.
struct Prepared {
  bool missing = false;
  RecordData record;
  std::exception_ptr error;
};

Prepared prepare(const FfhqEntry& e, const FfhqOptions& o) {
  Prepared out;
  const std::string path = (std::filesystem::path(o.root) / e.file_path).string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    if (o.skip_missing) {
      out.missing = true;
      return out;
    }
    throw DataError(path, e.index, "image file not found (FFHQ index " + std::to_string(e.index) +
                                       "; --skip-missing skips such entries)");
  }
  std::vector<uint8_t> bytes = read_bytes(path, e.index);
  if (o.verify_md5) {
    if (e.file_md5.empty()) throw DataError(o.json, e.index, "--verify-md5: the entry has no \"image.file_md5\"");
    const std::string got = md5_hex(bytes.data(), bytes.size());
    if (got != e.file_md5)
      throw DataError(path, e.index, "MD5 " + got + " differs from image.file_md5 " + e.file_md5 + " in " + o.json);
  }
  at::Tensor image = decode_image(bytes.data(), bytes.size(), path, e.index);  // uint8 [H,W,3]
  if (image.size(0) != e.height || image.size(1) != e.width)
    throw DataError(path, e.index, "image is " + std::to_string(image.size(1)) + "x" + std::to_string(image.size(0)) +
                                       " but image.pixel_size says " + std::to_string(e.width) + "x" +
                                       std::to_string(e.height) + " (the landmarks refer to that size)");
  RecordData& r = out.record;
  r.identity = e.index;
  r.photo = true;
  r.prompt = o.prompt;
  if (o.resize > 0) {
    CropTransform t;
    at::Tensor x = resize_center_crop(image, o.resize, &t);  // [3,S,S] in [-1,1]
    at::Tensor u8 = x.add(1.0).mul(127.5).round().clamp(0, 255).to(at::kByte).permute({1, 2, 0}).contiguous();
    r.image = encode_png(u8);
    r.height = r.width = o.resize;
    r.landmarks = transform_landmarks(e.landmarks, t);
  } else {
    r.image = std::move(bytes);
    r.height = e.height;
    r.width = e.width;
    r.landmarks = e.landmarks;
  }
  return out;
}

// MD5 round constants: K[i] = floor(|sin(i + 1)| * 2^32) (RFC 1321 §3.4), exact in double.
std::array<uint32_t, 64> md5_constants() {
  std::array<uint32_t, 64> k{};
  for (size_t i = 0; i < 64; ++i)
    k[i] = static_cast<uint32_t>(std::floor(std::fabs(std::sin(static_cast<double>(i + 1))) * 4294967296.0));
  return k;
}

uint32_t rotl(uint32_t x, int c) { return (x << c) | (x >> (32 - c)); }

}  // namespace

FfhqCategory parse_ffhq_category(const std::string& name) {
  if (name == "all") return FfhqCategory::kAll;
  if (name == "training") return FfhqCategory::kTraining;
  if (name == "validation") return FfhqCategory::kValidation;
  throw std::invalid_argument("FFHQ category must be all, training or validation, got '" + name + "'");
}

const char* to_string(FfhqCategory category) {
  switch (category) {
    case FfhqCategory::kAll: return "all";
    case FfhqCategory::kTraining: return "training";
    case FfhqCategory::kValidation: return "validation";
  }
  return "?";
}

at::Tensor five_from_68_landmarks(const at::Tensor& landmarks68) {
  TORCH_CHECK(landmarks68.dim() == 2 && landmarks68.size(0) == 68 && landmarks68.size(1) == 2,
              "five_from_68_landmarks: expected [68, 2] (x, y) points, got ", landmarks68.sizes());
  at::Tensor p = landmarks68.to(at::kDouble).cpu();  // [68,2]
  at::Tensor five = at::stack({p.slice(0, kLeftEyeBegin, kLeftEyeBegin + kEyePoints).mean(0),
                               p.slice(0, kRightEyeBegin, kRightEyeBegin + kEyePoints).mean(0), p[kNoseTip],
                               p[kMouthLeft], p[kMouthRight]});  // [5,2]
  return five.to(at::kFloat);
}

std::vector<FfhqEntry> read_ffhq_metadata(const std::string& json_path) {
  std::ifstream in(json_path, std::ios::binary);
  if (!in) throw DataError(json_path, -1, "cannot read the FFHQ metadata file");
  std::vector<FfhqEntry> entries;
  bool top_is_object = false;
  std::string key;  // the top-level key whose entry is being parsed
  // Depth 0 = the top-level object, 1 = its entries, 2 = an entry's fields. Every finished entry is
  // reduced to an FfhqEntry and discarded, so the parsed document never holds more than one.
  json::parser_callback_t callback = [&](int depth, json::parse_event_t event, json& parsed) {
    using E = json::parse_event_t;
    if (depth == 0) {
      if (event == E::object_start) top_is_object = true;
      return true;
    }
    if (depth == 1 && event == E::key) {
      key = parsed.get<std::string>();
      return true;
    }
    if (depth == 2 && event == E::key) {
      const auto& k = parsed.get_ref<const std::string&>();
      return k == "category" || k == "image";
    }
    if (depth == 1 && (event == E::object_end || event == E::array_end || event == E::value)) {
      if (top_is_object) entries.push_back(make_entry(key, parsed));
      return false;
    }
    return true;
  };
  try {
    const json rest = json::parse(in, callback);  // {}: every entry was taken out
    (void)rest;
  } catch (const json::exception& e) {
    throw DataError(json_path, -1, std::string("not valid JSON: ") + e.what());
  }
  if (!top_is_object)
    throw DataError(json_path, -1, "expected a JSON object keyed by image index (\"0\": {...}, ...)");
  for (const FfhqEntry& e : entries)
    if (e.index < 0) throw DataError(json_path, -1, e.error);  // a key that is no index: nothing to select it by
  std::stable_sort(entries.begin(), entries.end(),
                   [](const FfhqEntry& a, const FfhqEntry& b) { return a.index < b.index; });
  for (size_t i = 1; i < entries.size(); ++i)
    if (entries[i].index == entries[i - 1].index)
      throw DataError(json_path, entries[i].index, "the index appears twice");
  return entries;
}

FfhqReport convert_ffhq(const FfhqOptions& o) {
  TORCH_CHECK(o.first >= 0, "convert_ffhq: first must be >= 0, got ", o.first);
  TORCH_CHECK(o.count >= -1, "convert_ffhq: count must be >= 0 (or -1 = all), got ", o.count);
  TORCH_CHECK(o.resize >= 0, "convert_ffhq: resize must be >= 0, got ", o.resize);
  std::error_code ec;
  if (!std::filesystem::is_directory(o.root, ec))
    throw DataError(o.root, -1, "the FFHQ root is not a folder (it should hold images1024x1024/)");
  const std::vector<FfhqEntry> entries = read_ffhq_metadata(o.json);
  FfhqReport rep;
  rep.entries = static_cast<int64_t>(entries.size());
  std::vector<const FfhqEntry*> chosen;
  for (const FfhqEntry& e : entries) {
    if (o.count >= 0 && static_cast<int64_t>(chosen.size()) >= o.count) break;
    if (e.index < o.first) continue;
    // An entry without a readable category cannot be filtered; it is selected (and then reported).
    if (o.category != FfhqCategory::kAll && !e.category.empty() && e.category != to_string(o.category)) continue;
    chosen.push_back(&e);
  }
  rep.selected = static_cast<int64_t>(chosen.size());
  for (const FfhqEntry* e : chosen)
    if (!e->error.empty()) throw DataError(o.json, e->index, e->error);
  if (chosen.empty())
    throw DataError(o.json, -1, std::string("no entry selected (category ") + to_string(o.category) + ", first " +
                                    std::to_string(o.first) + ", " + std::to_string(rep.entries) + " entries)");

  TrainingSetWriter writer(o.out);
  // Reading, hashing and decoding a 1024^2 PNG dominate; they run in parallel in chunks, the writer
  // appends in index order, and the first failure in that order is the one reported.
  constexpr int64_t kChunk = 64;
  const int64_t n = rep.selected;
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t end = std::min(n, begin + kChunk);
    std::vector<Prepared> batch(static_cast<size_t>(end - begin));
    at::parallel_for(begin, end, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        Prepared& slot = batch[static_cast<size_t>(i - begin)];
        try {
          slot = prepare(*chosen[static_cast<size_t>(i)], o);
        } catch (...) {
          slot.error = std::current_exception();
        }
      }
    });
    for (int64_t i = begin; i < end; ++i) {
      Prepared& p = batch[static_cast<size_t>(i - begin)];
      if (p.error) std::rethrow_exception(p.error);
      if (p.missing) {
        ++rep.skipped_missing;
        continue;
      }
      if (o.verify_md5) ++rep.md5_verified;
      writer.add(p.record);
      if (rep.first_index < 0) {
        rep.first_index = p.record.identity;
        rep.height = p.record.height;
        rep.width = p.record.width;
      }
      rep.last_index = p.record.identity;
    }
  }
  if (writer.size() == 0)
    throw DataError(o.root, -1, "none of the " + std::to_string(n) + " selected images exists (all skipped)");
  rep.records = writer.finish();
  return rep;
}

std::string md5_hex(const uint8_t* data, size_t size) {
  static const std::array<uint32_t, 64> K = md5_constants();
  static constexpr int S[4][4] = {{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};
  uint32_t h[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};
  // Message + 0x80 + zeros to 56 mod 64 + the bit length (little-endian 64-bit).
  const size_t padded = ((size + 8) / 64 + 1) * 64;
  std::vector<uint8_t> tail(padded - (size / 64) * 64, 0);
  const size_t full = size / 64 * 64;
  if (size > full) std::memcpy(tail.data(), data + full, size - full);
  tail[size - full] = 0x80;
  const uint64_t bits = static_cast<uint64_t>(size) * 8;
  for (int b = 0; b < 8; ++b) tail[tail.size() - 8 + static_cast<size_t>(b)] = static_cast<uint8_t>(bits >> (8 * b));
  auto block = [&](const uint8_t* p) {
    uint32_t m[16];
    for (int i = 0; i < 16; ++i)
      m[i] = static_cast<uint32_t>(p[4 * i]) | static_cast<uint32_t>(p[4 * i + 1]) << 8 |
             static_cast<uint32_t>(p[4 * i + 2]) << 16 | static_cast<uint32_t>(p[4 * i + 3]) << 24;
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    for (int i = 0; i < 64; ++i) {
      uint32_t f;
      int g;
      if (i < 16) {
        f = (b & c) | (~b & d), g = i;
      } else if (i < 32) {
        f = (d & b) | (~d & c), g = (5 * i + 1) % 16;
      } else if (i < 48) {
        f = b ^ c ^ d, g = (3 * i + 5) % 16;
      } else {
        f = c ^ (b | ~d), g = (7 * i) % 16;
      }
      f += a + K[static_cast<size_t>(i)] + m[g];
      a = d, d = c, c = b;
      b += rotl(f, S[i / 16][i % 4]);
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d;
  };
  for (size_t off = 0; off < full; off += 64) block(data + off);
  for (size_t off = 0; off < tail.size(); off += 64) block(tail.data() + off);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint32_t w : h)
    for (int b = 0; b < 4; ++b) {
      const uint8_t byte = static_cast<uint8_t>(w >> (8 * b));
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
    }
  return out;
}

}  // namespace lookahead::data
