// Manifest of a sharded training set: reading, validating and writing it (see manifest.h).
#include "data/manifest.h"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <c10/util/Exception.h>

#include "common/atomic_file.h"
#include "data/error.h"

namespace lookahead::data {

using json = nlohmann::json;

namespace {

// The keys the format owns; everything else at the top level is the writer's.
constexpr const char* kManifestOwnKeys[] = {"format", "version", "shards"};

bool is_own_key(const std::string& key) {
  for (const char* k : kManifestOwnKeys)
    if (key == k) return true;
  return false;
}

std::string shard_label(size_t k, const json& entry) {
  std::string s = "shard " + std::to_string(k);
  if (entry.is_object() && entry.contains("path") && entry["path"].is_string())
    s += " ('" + entry["path"].get<std::string>() + "')";
  return s;
}

// A non-negative integer key of a shard entry; JSON has no integer type, so 3.0 is refused too (a
// count written as a float is a writer bug worth hearing about).
int64_t shard_count(const json& entry, const char* key, const std::string& manifest, const std::string& label) {
  if (!entry.contains(key)) throw DataError(manifest, -1, label + ": missing key '" + key + "'");
  const json& v = entry[key];
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0))
    throw DataError(manifest, -1, label + ": key '" + key + "' must be a non-negative integer, got " + v.dump());
  return v.get<int64_t>();
}

}  // namespace

Manifest read_manifest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path, -1, std::filesystem::exists(path) ? "cannot read manifest" : "no such file");
  json j;
  try {
    j = json::parse(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
  } catch (const json::exception& e) {
    throw DataError(path, -1, std::string("manifest is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw DataError(path, -1, "manifest must be a JSON object");
  if (!j.contains("format") || !j["format"].is_string() || j["format"].get<std::string>() != kManifestFormatName)
    throw DataError(path, -1,
                    "key 'format' is " + (j.contains("format") ? j["format"].dump() : std::string("missing")) +
                        ", expected \"" + kManifestFormatName + "\"");
  if (!j.contains("version") || !j["version"].is_number_integer())
    throw DataError(path, -1, "key 'version' must be an integer");
  const int64_t version = j["version"].get<int64_t>();
  if (version < 1 || version > kManifestVersion)
    throw DataError(path, -1,
                    "manifest version " + std::to_string(version) + " is not supported (this build reads 1.." +
                        std::to_string(kManifestVersion) + ")");
  if (!j.contains("shards") || !j["shards"].is_array()) throw DataError(path, -1, "key 'shards' must be an array");
  Manifest m;
  const json& shards = j["shards"];
  for (size_t k = 0; k < shards.size(); ++k) {
    const json& entry = shards[k];
    const std::string label = shard_label(k, entry);
    if (!entry.is_object()) throw DataError(path, -1, label + ": must be an object, got " + entry.dump());
    if (!entry.contains("path") || !entry["path"].is_string() || entry["path"].get<std::string>().empty())
      throw DataError(path, -1, label + ": key 'path' must be a non-empty string");
    ShardEntry s;
    s.path = entry["path"].get<std::string>();
    s.records = shard_count(entry, "records", path, label);
    s.bytes = shard_count(entry, "bytes", path, label);
    m.shards.push_back(std::move(s));
  }
  m.extra = json::object();
  for (const auto& [key, value] : j.items())
    if (!is_own_key(key)) m.extra[key] = value;
  return m;
}

void write_manifest(const std::string& path, const Manifest& m) {
  json j = json::object();
  j["format"] = kManifestFormatName;
  j["version"] = kManifestVersion;
  json shards = json::array();
  for (size_t k = 0; k < m.shards.size(); ++k) {
    const ShardEntry& s = m.shards[k];
    if (s.path.empty() || s.records < 0 || s.bytes < 0)
      throw DataError(path, -1,
                      "shard " + std::to_string(k) + " ('" + s.path +
                          "'): needs a non-empty path and non-negative records and bytes");
    shards.push_back({{"path", s.path}, {"records", s.records}, {"bytes", s.bytes}});
  }
  j["shards"] = std::move(shards);
  if (!m.extra.is_null()) {
    if (!m.extra.is_object()) throw DataError(path, -1, "the manifest's extra keys must be a JSON object");
    for (const auto& [key, value] : m.extra.items()) {
      if (is_own_key(key)) throw DataError(path, -1, "extra key '" + key + "' is one of the manifest's own keys");
      j[key] = value;
    }
  }
  try {
    common::write_file_atomically(path, j.dump(2) + "\n");
  } catch (const c10::Error& e) {
    throw DataError(path, -1, std::string("cannot write manifest: ") + e.what_without_backtrace());
  }
}

bool is_manifest(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  if (std::filesystem::path(path).extension() == ".json") return true;
  std::ifstream in(path, std::ios::binary);
  char c = 0;
  while (in.get(c))
    if (!std::isspace(static_cast<unsigned char>(c))) return c == '{';
  return false;
}

std::string shard_file(const std::string& manifest_path, const ShardEntry& shard) {
  const std::filesystem::path p(shard.path);
  if (p.is_absolute()) return p.string();
  return (std::filesystem::path(manifest_path).parent_path() / p).string();
}

}  // namespace lookahead::data
