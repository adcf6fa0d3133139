// The generic refusal of kDefaultOnly keys (see config_keys.h).
#include "model/io/config_keys.h"

#include <c10/util/Exception.h>

#include <nlohmann/json.hpp>

namespace lookahead::model::io {

namespace {

bool same_value(const nlohmann::json& a, const nlohmann::json& b) {
  if (a.is_number() && b.is_number()) return a.get<double>() == b.get<double>();
  return a == b;
}

bool is_default(const nlohmann::json& value, const nlohmann::json& fallback) {
  if (value.is_null() || same_value(value, fallback)) return true;
  if (!value.is_array() || value.empty() || fallback.is_array()) return false;
  for (const auto& e : value)
    if (!same_value(e, fallback)) return false;
  return true;
}

}  // namespace

void refuse_unsupported(const nlohmann::json& config, ConfigKeyTable table, const std::string& origin) {
  TORCH_CHECK(config.is_object(), origin, ": a config must be a JSON object");
  for (const ConfigKey& key : table) {
    if (key.use != KeyUse::kDefaultOnly) continue;
    auto it = config.find(key.name);
    if (it == config.end()) continue;
    TORCH_CHECK(is_default(*it, nlohmann::json::parse(key.default_json)), origin, ": ", key.name, " = ", it->dump(),
                " is not supported (", key.why, "; only ", key.default_json, " is implemented)");
  }
}

const ConfigKey* find_config_key(ConfigKeyTable table, std::string_view name) {
  for (const ConfigKey& key : table)
    if (name == key.name) return &key;
  return nullptr;
}

const char* to_string(KeyUse use) {
  switch (use) {
    case KeyUse::kHonoured: return "honoured";
    case KeyUse::kDefaultOnly: return "default-only";
    case KeyUse::kInert: return "inert";
    case KeyUse::kMetadata: return "metadata";
  }
  return "?";
}

}  // namespace lookahead::model::io
