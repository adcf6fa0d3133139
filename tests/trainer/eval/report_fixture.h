// Synthetic evaluation runs for the report tests: metrics.json files in the schema that evaluation
// writes, with tiny single-colour PNGs (references green, generations magenta, so that a screenshot
// shows whether the images were loaded) and prompts full of HTML specials.
#pragma once

#include "data/image_io.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace lookahead::test::report {

inline constexpr uint8_t kReferenceColor[3] = {0, 255, 0};
inline constexpr uint8_t kGenerationColor[3] = {255, 0, 255};

inline const std::vector<std::string>& prompts() {
  static const std::vector<std::string> p = {"a photo of <script>alert(\"x\")</script> & friends",
                                             "a person's portrait in a caf\xC3\xA9, 'oil' painting"};
  return p;
}

/// Summary JSON with mean and a symmetric 95 % CI of half-width `half` (null mean when n = 0).
inline nlohmann::json summary(int64_t n, double mean, double half) {
  if (n == 0)
    return {{"n", 0}, {"mean", nullptr}, {"std", nullptr}, {"ci95", {nullptr, nullptr}}};
  return {{"n", n}, {"mean", mean}, {"std", half}, {"ci95", {mean - half, mean + half}}};
}

/// What a synthetic run reports overall; per-identity and per-prompt blocks are derived from it.
struct RunValues {
  std::string label;
  int64_t step = 0;
  std::string guidance = "lookahead";  // or "cfg"
  double id = 0.4, id_half = 0.03;
  double id_strict = 0.35, strict_half = 0.04;
  double failure = 0.125;
  double clip = 25.0, clip_half = 0.5;
  double cosine = 0.25, cosine_half = 0.005;
  bool one_image_not_saved = false;  // sample (identity 1, prompt 1, sample 1) has image ""
};

inline nlohmann::json metric_block(const RunValues& v, int64_t n) {
  return {{"n", n},
          {"id_similarity", summary(n, v.id, v.id_half)},
          {"id_similarity_strict", summary(n, v.id_strict, v.strict_half)},
          {"face_failure_rate", v.failure},
          {"clip_cosine", summary(n, v.cosine, v.cosine_half)},
          {"clip_score", summary(n, v.clip, v.clip_half)}};
}

inline void write_png(const std::filesystem::path& path, const uint8_t color[3], int64_t size = 16) {
  std::filesystem::create_directories(path.parent_path());
  at::Tensor image = at::empty({size, size, 3}, at::kByte);  // [H, W, 3]
  for (int c = 0; c < 3; ++c) image.select(2, c).fill_(color[c]);
  const std::vector<uint8_t> bytes = data::encode_png(image);
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!file) throw std::runtime_error("cannot write " + path.string());
}

/// Per-sample values: sample (identity i, prompt p, sample s) has ID 0.3 + 0.1 i + 0.01 p + 0.001 s,
/// CLIP score 20 + p + 0.5 s, cosine = score / 100; (identity 0, prompt 1, sample 1) has no face.
inline bool sample_has_face(int64_t i, int64_t p, int64_t s) { return !(i == 0 && p == 1 && s == 1); }
inline double sample_id(int64_t i, int64_t p, int64_t s) { return 0.3 + 0.1 * i + 0.01 * p + 0.001 * s; }
inline double sample_clip(int64_t p, int64_t s) { return 20.0 + p + 0.5 * s; }

inline constexpr int64_t kIdentities = 2, kPrompts = 2, kSamples = 2;

/// Writes <folder>/metrics.json and its images; returns the metrics.json path.
inline std::string write_run(const std::filesystem::path& folder, const RunValues& v) {
  namespace fs = std::filesystem;
  fs::create_directories(folder);
  nlohmann::json guidance = v.guidance == "cfg"
                                ? nlohmann::json{{"mode", "cfg"}, {"cfg_scale", 5}}
                                : nlohmann::json{{"mode", "lookahead"}, {"scale_nokv", 3}, {"scale_full", 2},
                                                 {"scale_kv", 2}, {"cfg_scale", 5}};
  nlohmann::json doc = {
      {"format", "lookahead-eval"},
      {"version", 1},
      {"label", v.label},
      {"settings",
       {{"checkpoint", "run/checkpoints/ckpt-" + std::to_string(v.step) + ".h5"},
        {"step", v.step},
        {"eval_set", "eval.h5"},
        {"prompts", prompts()},
        {"identities", kIdentities},
        {"samples", kSamples},
        {"sampler", "dpm_solver"},
        {"steps", 50},
        {"guidance", guidance},
        {"encoder_prompt", "A photo of a face"},
        {"resolution", 1024},
        {"seed", 0},
        {"id_model", "irse50"},
        {"face_detector", "mtcnn"},
        {"clip_model", "openai/clip-vit-large-patch14"}}}};
  nlohmann::json samples = nlohmann::json::array(), identities = nlohmann::json::array(),
                 prompt_blocks = nlohmann::json::array();
  for (int64_t i = 0; i < kIdentities; ++i) {
    const int64_t identity = 3 + 4 * i;
    char dir[32];
    std::snprintf(dir, sizeof(dir), "images/id%04lld", static_cast<long long>(identity));
    write_png(folder / dir / "reference.png", kReferenceColor);
    nlohmann::json block = metric_block(v, kPrompts * kSamples);
    block["identity"] = identity;
    block["identity_index"] = i;
    block["reference"] = std::string(dir) + "/reference.png";
    identities.push_back(block);
    for (int64_t p = 0; p < kPrompts; ++p) {
      for (int64_t s = 0; s < kSamples; ++s) {
        char name[32];
        std::snprintf(name, sizeof(name), "/p%02lld_s%02lld.png", static_cast<long long>(p), static_cast<long long>(s));
        std::string image = std::string(dir) + name;
        if (v.one_image_not_saved && i == 1 && p == 1 && s == 1)
          image = "";
        else
          write_png(folder / image, kGenerationColor);
        const bool face = sample_has_face(i, p, s);
        samples.push_back({{"identity", identity},
                           {"identity_index", i},
                           {"prompt_index", p},
                           {"prompt", prompts()[p]},
                           {"sample", s},
                           {"seed", 100 * i + 10 * p + s},
                           {"image", image},
                           {"face_found", face},
                           {"id_similarity", face ? nlohmann::json(sample_id(i, p, s)) : nlohmann::json()},
                           {"clip_cosine", sample_clip(p, s) / 100},
                           {"clip_score", sample_clip(p, s)}});
      }
    }
  }
  for (int64_t p = 0; p < kPrompts; ++p) {
    nlohmann::json block = metric_block(v, kIdentities * kSamples);
    block["prompt_index"] = p;
    block["prompt"] = prompts()[p];
    prompt_blocks.push_back(block);
  }
  doc["samples"] = samples;
  doc["identities"] = identities;
  doc["prompts"] = prompt_blocks;
  doc["overall"] = metric_block(v, kIdentities * kPrompts * kSamples);
  const fs::path path = folder / "metrics.json";
  std::ofstream(path) << doc.dump(2);
  return path.string();
}

/// The two runs of the unit and browser tests: "step-40" has the better ID similarity and face
/// rate, "cfg <baseline>" (a label with HTML specials) the better CLIP score; the baseline's
/// (identity 1, prompt 1, sample 1) image was not saved.
inline std::vector<RunValues> two_runs() {
  RunValues a;
  a.label = "step-40";
  a.step = 40;
  a.id = 0.412, a.id_half = 0.030, a.id_strict = 0.371, a.strict_half = 0.041, a.failure = 0.125;
  a.clip = 24.37, a.clip_half = 0.52, a.cosine = 0.2437, a.cosine_half = 0.0052;
  RunValues b;
  b.label = "cfg <baseline>";
  b.step = 0;
  b.guidance = "cfg";
  b.id = 0.268, b.id_half = 0.021, b.id_strict = 0.201, b.strict_half = 0.033, b.failure = 0.25;
  b.clip = 26.82, b.clip_half = 0.61, b.cosine = 0.2682, b.cosine_half = 0.0061;
  b.one_image_not_saved = true;
  return {a, b};
}

}  // namespace lookahead::test::report
