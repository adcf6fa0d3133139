// Reading diffusers `scheduler_config.json` values with `from_config` semantics: a key that is
// absent or null keeps the class default, unknown keys are ignored (a config written for one
// scheduler class is routinely loaded into another), and a key set to a value this port does not
// implement fails loudly instead of being silently ignored.
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

/// Fails unless config[key] is absent, null, or equal to `supported` (the only value this port
/// implements); `what` names the feature in the error message.
void require_default(const nlohmann::json& config, const char* key, const nlohmann::json& supported,
                     const char* what);

}  // namespace lookahead::model::sched::detail
