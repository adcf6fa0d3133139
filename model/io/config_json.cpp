// Typed, checked access to config.json keys (see config_json.h for the semantics).
#include "model/io/config_json.h"

#include <nlohmann/json.hpp>

#include <c10/util/Exception.h>

namespace lookahead::model::io {

namespace {

// Null counts as absent: diffusers writes `"trained_betas": null` for "not set".
const nlohmann::json* find_key(const nlohmann::json& config, const char* key, const std::string& origin) {
  TORCH_CHECK(config.is_object(), origin, " must be a JSON object, got ", config.type_name());
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) {
    return nullptr;
  }
  return &*it;
}

[[noreturn]] void wrong_type(const nlohmann::json& value, const char* key, const std::string& origin) {
  TORCH_CHECK(false, origin, ": ", key, " = ", value.dump(), " has the wrong type");
}

}  // namespace

void read_key(const nlohmann::json& config, const char* key, double& out, const std::string& origin) {
  if (const auto* v = find_key(config, key, origin)) {
    if (!v->is_number()) wrong_type(*v, key, origin);
    out = v->get<double>();
  }
}

void read_key(const nlohmann::json& config, const char* key, int64_t& out, const std::string& origin,
              WholeFloats whole_floats) {
  if (const auto* v = find_key(config, key, origin)) {
    const bool whole_float = whole_floats == WholeFloats::kAccept && v->is_number_float() &&
                             v->get<double>() == static_cast<double>(static_cast<int64_t>(v->get<double>()));
    TORCH_CHECK(v->is_number_integer() || whole_float, origin, ": ", key, " = ", v->dump(), " must be an integer");
    out = v->is_number_integer() ? v->get<int64_t>() : static_cast<int64_t>(v->get<double>());
  }
}

void read_key(const nlohmann::json& config, const char* key, bool& out, const std::string& origin) {
  if (const auto* v = find_key(config, key, origin)) {
    if (!v->is_boolean()) wrong_type(*v, key, origin);
    out = v->get<bool>();
  }
}

void read_key(const nlohmann::json& config, const char* key, std::string& out, const std::string& origin) {
  if (const auto* v = find_key(config, key, origin)) {
    if (!v->is_string()) wrong_type(*v, key, origin);
    out = v->get<std::string>();
  }
}

void read_key(const nlohmann::json& config, const char* key, std::vector<std::string>& out,
              const std::string& origin) {
  if (const auto* v = find_key(config, key, origin)) {
    if (!v->is_array()) wrong_type(*v, key, origin);
    std::vector<std::string> values;
    for (const auto& e : *v) {
      if (!e.is_string()) wrong_type(*v, key, origin);
      values.push_back(e.get<std::string>());
    }
    out = std::move(values);
  }
}

}  // namespace lookahead::model::io
