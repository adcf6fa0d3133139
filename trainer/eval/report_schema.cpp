// SchemaCheck walks a metrics.json document key by key; the first mismatch throws with the full key
// path, so a hand-edited or foreign file is rejected before any page is written.
#include "trainer/eval/report_schema.h"

#include <fstream>
#include <set>
#include <stdexcept>

namespace lookahead::trainer::report {
namespace {

using nlohmann::json;

constexpr const char* kFormat = "lookahead-eval";
constexpr int64_t kVersion = 1;

enum class Kind { kString, kInteger, kNumber, kNumberOrNull, kIntegerOrNull, kBool, kObject, kArray };

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kString: return "a string";
    case Kind::kInteger: return "an integer";
    case Kind::kNumber: return "a number";
    case Kind::kNumberOrNull: return "a number or null";
    case Kind::kIntegerOrNull: return "an integer or null";
    case Kind::kBool: return "true or false";
    case Kind::kObject: return "an object";
    case Kind::kArray: return "an array";
  }
  return "?";
}

bool has_kind(const json& value, Kind kind) {
  switch (kind) {
    case Kind::kString: return value.is_string();
    case Kind::kInteger: return value.is_number_integer();
    case Kind::kNumber: return value.is_number();
    case Kind::kNumberOrNull: return value.is_number() || value.is_null();
    case Kind::kIntegerOrNull: return value.is_number_integer() || value.is_null();
    case Kind::kBool: return value.is_boolean();
    case Kind::kObject: return value.is_object();
    case Kind::kArray: return value.is_array();
  }
  return false;
}

// Checks one metrics.json document; every error names the file and the key path
// ("identities[1].clip_score.ci95").
class SchemaCheck {
 public:
  explicit SchemaCheck(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw std::runtime_error("metrics file '" + file_ + "': " +
                             (key.empty() ? std::string("the document") : "key '" + key + "'") + " " + what);
  }

  const json& require(const json& object, const std::string& path, const std::string& key, Kind kind) const {
    const std::string full = path.empty() ? key : path + "." + key;
    if (!object.contains(key)) fail(full, "is missing");
    const json& value = object.at(key);
    if (!has_kind(value, kind)) fail(full, std::string("must be ") + kind_name(kind) + " (found " + value.type_name() + ")");
    return value;
  }

  void summary(const json& object, const std::string& path, const std::string& key) const {
    const std::string full = path + "." + key;
    const json& s = require(object, path, key, Kind::kObject);
    require(s, full, "n", Kind::kInteger);
    require(s, full, "mean", Kind::kNumberOrNull);
    require(s, full, "std", Kind::kNumberOrNull);
    if (!s.contains("ci95")) fail(full + ".ci95", "is missing");
    const json& ci = s.at("ci95");
    if (ci.is_null()) return;
    if (!ci.is_array() || ci.size() != 2 || !has_kind(ci[0], Kind::kNumberOrNull) ||
        !has_kind(ci[1], Kind::kNumberOrNull))
      fail(full + ".ci95", "must be [low, high] (numbers or null), found " + ci.dump());
  }

  void metric_block(const json& object, const std::string& path) const {
    require(object, path, "n", Kind::kInteger);
    for (const char* key : {"id_similarity", "id_similarity_strict", "clip_cosine", "clip_score"})
      summary(object, path, key);
    require(object, path, "face_failure_rate", Kind::kNumberOrNull);
  }

  void document(const json& doc) const {
    if (!doc.is_object()) fail("", std::string("must be a JSON object (found ") + doc.type_name() + ")");
    const std::string format = require(doc, "", "format", Kind::kString).get<std::string>();
    if (format != kFormat)
      fail("format", "is '" + format + "' but must be '" + kFormat + "' (written by lookahead's evaluation)");
    const int64_t version = require(doc, "", "version", Kind::kInteger).get<int64_t>();
    if (version != kVersion)
      fail("version", "is " + std::to_string(version) + " but this build reads version " + std::to_string(kVersion));
    require(doc, "", "label", Kind::kString);

    const json& settings = require(doc, "", "settings", Kind::kObject);
    require(settings, "settings", "step", Kind::kIntegerOrNull);
    const json& guidance = require(settings, "settings", "guidance", Kind::kObject);
    const std::string mode = require(guidance, "settings.guidance", "mode", Kind::kString).get<std::string>();
    if (mode == "lookahead") {
      for (const char* key : {"scale_nokv", "scale_full", "scale_kv"})
        require(guidance, "settings.guidance", key, Kind::kNumber);
    } else if (mode == "cfg") {
      require(guidance, "settings.guidance", "cfg_scale", Kind::kNumber);
    }

    std::set<int64_t> identity_indices, prompt_indices;
    const json& identities = require(doc, "", "identities", Kind::kArray);
    for (size_t i = 0; i < identities.size(); ++i) {
      const std::string path = "identities[" + std::to_string(i) + "]";
      if (!identities[i].is_object()) fail(path, "must be an object");
      require(identities[i], path, "identity", Kind::kInteger);
      const int64_t index = require(identities[i], path, "identity_index", Kind::kInteger).get<int64_t>();
      if (!identity_indices.insert(index).second)
        fail(path + ".identity_index", "repeats identity_index " + std::to_string(index));
      require(identities[i], path, "reference", Kind::kString);
      metric_block(identities[i], path);
    }
    const json& prompts = require(doc, "", "prompts", Kind::kArray);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const std::string path = "prompts[" + std::to_string(i) + "]";
      if (!prompts[i].is_object()) fail(path, "must be an object");
      const int64_t index = require(prompts[i], path, "prompt_index", Kind::kInteger).get<int64_t>();
      if (!prompt_indices.insert(index).second)
        fail(path + ".prompt_index", "repeats prompt_index " + std::to_string(index));
      require(prompts[i], path, "prompt", Kind::kString);
      metric_block(prompts[i], path);
    }
    const json& samples = require(doc, "", "samples", Kind::kArray);
    for (size_t i = 0; i < samples.size(); ++i) {
      const std::string path = "samples[" + std::to_string(i) + "]";
      const json& s = samples[i];
      if (!s.is_object()) fail(path, "must be an object");
      require(s, path, "identity", Kind::kInteger);
      const int64_t identity = require(s, path, "identity_index", Kind::kInteger).get<int64_t>();
      if (!identity_indices.count(identity))
        fail(path + ".identity_index", "is " + std::to_string(identity) + " but no identities[] entry has it");
      const int64_t prompt = require(s, path, "prompt_index", Kind::kInteger).get<int64_t>();
      if (!prompt_indices.count(prompt))
        fail(path + ".prompt_index", "is " + std::to_string(prompt) + " but no prompts[] entry has it");
      require(s, path, "prompt", Kind::kString);
      if (require(s, path, "sample", Kind::kInteger).get<int64_t>() < 0) fail(path + ".sample", "must be >= 0");
      require(s, path, "image", Kind::kString);
      const bool face = require(s, path, "face_found", Kind::kBool).get<bool>();
      const json& id = require(s, path, "id_similarity", Kind::kNumberOrNull);
      if (face && id.is_null()) fail(path + ".id_similarity", "is null although face_found is true");
      if (!face && !id.is_null()) fail(path + ".id_similarity", "is a number although face_found is false");
      require(s, path, "clip_cosine", Kind::kNumber);
      require(s, path, "clip_score", Kind::kNumber);
    }
    metric_block(require(doc, "", "overall", Kind::kObject), "overall");
  }

 private:
  std::string file_;
};

}  // namespace

void check_metrics(const json& doc, const std::string& where) { SchemaCheck(where).document(doc); }

json read_metrics(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("metrics file '" + path + "': cannot be opened");
  json doc;
  try {
    doc = json::parse(file);
  } catch (const json::parse_error& e) {
    throw std::runtime_error("metrics file '" + path + "': not valid JSON (" + e.what() + ")");
  }
  check_metrics(doc, path);
  return doc;
}

std::optional<double> number(const json& value) {
  if (value.is_number()) return value.get<double>();
  return std::nullopt;
}

Stat stat(const json& summary, double scale) {
  Stat s;
  s.n = summary.at("n").get<int64_t>();
  if (auto m = number(summary.at("mean"))) s.mean = *m * scale;
  const json& ci = summary.at("ci95");
  if (ci.is_array()) {
    if (auto lo = number(ci[0])) s.low = *lo * scale;
    if (auto hi = number(ci[1])) s.high = *hi * scale;
  }
  return s;
}

}  // namespace lookahead::trainer::report
