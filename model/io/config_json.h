// Reading config.json values with diffusers' / transformers' `from_config` semantics, for every
// config reader of the model (UNet, both VAEs, both CLIP towers, the schedulers): a key that is
// absent or null keeps the class default, and a value of the wrong JSON type is refused naming the
// key (nlohmann would silently turn 4.5 into 4, or true into 1.0). Which keys a reader knows, and
// which must keep their default, is its key table (model/io/config_keys.h).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace lookahead::model::io {

/// Whether an integer key takes a float holding a whole number (1000.0).
enum class WholeFloats {
  kRefuse,  ///< sizes and counts: the reference's layers refuse a float (nn.Linear(4.0, …) fails)
  kAccept,  ///< scheduler counts: diffusers computes with them as numbers, so 1000.0 works there
};

/// Overwrites `out` with config[key] when present and non-null; otherwise leaves it alone.
/// `config` must be a JSON object ("<origin> must be a JSON object"). A value of the wrong type
/// throws "<origin>: <key> = <value> must be an integer" (integers) or "… has the wrong type".
void read_key(const nlohmann::json& config, const char* key, double& out, const std::string& origin);
void read_key(const nlohmann::json& config, const char* key, int64_t& out, const std::string& origin,
              WholeFloats whole_floats = WholeFloats::kRefuse);
void read_key(const nlohmann::json& config, const char* key, bool& out, const std::string& origin);
void read_key(const nlohmann::json& config, const char* key, std::string& out, const std::string& origin);
void read_key(const nlohmann::json& config, const char* key, std::vector<std::string>& out,
              const std::string& origin);

/// config[key] read as read_key does, or `fallback` when absent or null.
template <typename T>
T get_or(const nlohmann::json& config, const char* key, T fallback, const std::string& origin) {
  read_key(config, key, fallback, origin);
  return fallback;
}

}  // namespace lookahead::model::io
