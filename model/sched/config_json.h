// Reading diffusers `scheduler_config.json` values with `from_config` semantics: a key that is
// absent or null keeps the class default, unknown keys are ignored (a config written for one
// scheduler class is routinely loaded into another). Which keys must keep their default is each
// scheduler's key table (keys(), model/io/config_keys.h).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>

namespace lookahead::model::sched::detail {

/// Overwrites `out` with config[key] when present and non-null; TORCH_CHECKs the JSON type.
void read_key(const nlohmann::json& config, const char* key, double& out);
void read_key(const nlohmann::json& config, const char* key, int64_t& out);
void read_key(const nlohmann::json& config, const char* key, bool& out);
void read_key(const nlohmann::json& config, const char* key, std::string& out);

}  // namespace lookahead::model::sched::detail
