// Typed, checked access to scheduler_config.json keys (see config_json.h for the semantics).
#include "model/sched/config_json.h"

#include <nlohmann/json.hpp>

#include <c10/util/Exception.h>

namespace lookahead::model::sched::detail {

namespace {

// Null counts as absent: diffusers writes `"trained_betas": null` for "not set".
const nlohmann::json* find_key(const nlohmann::json& config, const char* key) {
  TORCH_CHECK(config.is_object(), "scheduler config must be a JSON object, got ", config.type_name());
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) {
    return nullptr;
  }
  return &*it;
}

}  // namespace

void read_key(const nlohmann::json& config, const char* key, double& out) {
  if (const auto* v = find_key(config, key)) {
    TORCH_CHECK(v->is_number(), "scheduler config: '", key, "' must be a number, got ", v->dump());
    out = v->get<double>();
  }
}

void read_key(const nlohmann::json& config, const char* key, int64_t& out) {
  if (const auto* v = find_key(config, key)) {
    // 1000.0 is accepted as an integer (hand-written configs), 999.5 is not.
    TORCH_CHECK(v->is_number_integer() ||
                    (v->is_number_float() && v->get<double>() == static_cast<double>(
                                                                     static_cast<int64_t>(v->get<double>()))),
                "scheduler config: '", key, "' must be an integer, got ", v->dump());
    out = v->is_number_integer() ? v->get<int64_t>() : static_cast<int64_t>(v->get<double>());
  }
}

void read_key(const nlohmann::json& config, const char* key, bool& out) {
  if (const auto* v = find_key(config, key)) {
    TORCH_CHECK(v->is_boolean(), "scheduler config: '", key, "' must be true or false, got ", v->dump());
    out = v->get<bool>();
  }
}

void read_key(const nlohmann::json& config, const char* key, std::string& out) {
  if (const auto* v = find_key(config, key)) {
    TORCH_CHECK(v->is_string(), "scheduler config: '", key, "' must be a string, got ", v->dump());
    out = v->get<std::string>();
  }
}

}  // namespace lookahead::model::sched::detail
