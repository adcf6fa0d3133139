// Sharded safetensors checkpoints (see safetensors_index.h), and load_file (safetensors.h), which
// dispatches between a single file and an index.
#include "model/io/safetensors_index.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "model/io/safetensors.h"

namespace lookahead::model::io {

namespace {

using json = nlohmann::json;

std::string errno_text() { return std::strerror(errno); }

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && std::string_view(s).substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

bool is_index_path(const std::string& path) {
  if (ends_with(path, ".index.json")) return true;
  // "<name>.safetensors.index.<variant>.json", the variant one dot-free word.
  const std::string file = std::filesystem::path(path).filename().string();
  const auto at = file.rfind(".safetensors.index.");
  if (at == std::string::npos || !ends_with(file, ".json")) return false;
  const std::string variant = file.substr(at + 19, file.size() - 5 - (at + 19));
  return !variant.empty() && variant.find('.') == std::string::npos;
}

namespace {

/// The index's shard paths and the tensors its weight_map assigns to each (see open_index).
std::map<std::string, std::set<std::string>> index_shards(const std::string& index_path) {
  namespace fs = std::filesystem;
  std::ifstream in(index_path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot open safetensors index '", index_path, "': ", errno_text());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();

  // Duplicate keys would silently keep the last one; track keys per open object to reject them.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty() && duplicate.empty()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(k).second) duplicate = k;
    }
    return true;
  };
  json index;
  try {
    index = json::parse(text, on_event);
  } catch (const json::exception& e) {
    TORCH_CHECK(false, "safetensors index '", index_path, "' is not valid JSON: ", e.what());
  }
  TORCH_CHECK(duplicate.empty(), "safetensors index '", index_path, "': duplicate key '", duplicate, "'");
  TORCH_CHECK(index.is_object(), "safetensors index '", index_path, "' must be a JSON object");
  auto wm = index.find("weight_map");
  TORCH_CHECK(wm != index.end() && wm->is_object(), "safetensors index '", index_path,
              "' has no 'weight_map' object");
  TORCH_CHECK(!wm->empty(), "safetensors index '", index_path, "': 'weight_map' lists no tensors");

  std::map<std::string, std::set<std::string>> listed;  // shard path -> its tensors
  for (const auto& [name, shard] : wm->items()) {
    TORCH_CHECK(shard.is_string(), "safetensors index '", index_path, "': tensor '", name,
                "': shard must be a file name string");
    // Normalized, so that "a.safetensors" and "./a.safetensors" name one shard.
    const auto& given = shard.get_ref<const std::string&>();
    const fs::path rel = fs::path(given).lexically_normal();
    const std::string file = rel.string();
    bool escapes = given.empty() || rel.is_absolute() ||
                   std::any_of(rel.begin(), rel.end(), [](const fs::path& part) { return part == ".."; });
    // Shards live beside the index; a path leaving that folder is a corrupt or hostile index.
    TORCH_CHECK(!escapes, "safetensors index '", index_path, "': tensor '", name, "': shard '", given,
                "' must be a relative path inside the index's folder");
    listed[(fs::path(index_path).parent_path() / file).string()].insert(name);
  }
  return listed;
}

}  // namespace

std::vector<std::shared_ptr<SafetensorsFile>> open_index(const std::string& index_path) {
  const std::map<std::string, std::set<std::string>> listed = index_shards(index_path);
  std::map<std::string, std::string> shard_of;  // tensor -> shard path
  for (const auto& [shard, names] : listed)
    for (const auto& name : names) shard_of[name] = shard;
  std::vector<std::shared_ptr<SafetensorsFile>> out;
  for (const auto& [shard_path, names] : listed) {
    auto shard = SafetensorsFile::open(shard_path);
    for (const auto& name : names) {
      TORCH_CHECK(shard->contains(name), "safetensors index '", index_path, "': tensor '", name,
                  "' is listed in shard '", shard_path, "', which does not contain it");
    }
    for (const auto& t : shard->tensors()) {
      auto it = shard_of.find(t.name);
      TORCH_CHECK(it != shard_of.end(), "safetensors index '", index_path, "': tensor '", t.name, "' in shard '",
                  shard_path, "' is not listed in the weight_map");
      TORCH_CHECK(it->second == shard_path, "safetensors index '", index_path, "': tensor '", t.name,
                  "' appears in two shards: '", shard_path, "' and '", it->second, "'");
    }
    out.push_back(std::move(shard));
  }
  return out;
}

std::map<std::string, at::Tensor> load_index(const std::string& index_path) {
  std::map<std::string, at::Tensor> out;
  for (const auto& shard : open_index(index_path))
    for (const auto& t : shard->tensors()) out.emplace(t.name, shard->get(t.name));
  return out;
}

std::map<std::string, at::Tensor> load_file(const std::string& path) {
  if (is_index_path(path)) return load_index(path);
  auto file = SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& t : file->tensors()) out.emplace(t.name, file->get(t.name));
  return out;
}

}  // namespace lookahead::model::io
