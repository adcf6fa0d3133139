// The key table of a config reader: for every key the reference class (diffusers / transformers)
// takes, how this port treats it. One table per reader keeps the audit in one place, lets the
// generic check below refuse unsupported values naming the key, and lets the key-walk test
// (tests/model/config_keys_test.cpp) prove that no key the reference knows is silently ignored.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace lookahead::model::io {

/// How a reader treats one reference key.
enum class KeyUse {
  kHonoured,     ///< read and built as the reference does; values this port cannot build are refused naming the key
  kDefaultOnly,  ///< only the reference default (or null) loads; anything else is refused naming the key
  kInert,        ///< the reference reads it only for features this port refuses, so no accepted config depends on it
  kMetadata,     ///< cannot change the computed outputs (names, versions, weight init, pipeline hints, output format)
};

/// One row of a reader's table.
struct ConfigKey {
  const char* name;
  KeyUse use;
  /// kDefaultOnly: the one accepted value as JSON text ("null", "false", "0.0", "\"silu\"").
  const char* default_json;
  /// What the key does in the reference and why it is treated so (shown in refusals).
  const char* why;
};

using ConfigKeyTable = std::span<const ConfigKey>;

/// A key table assembled from parts, in order: rows several readers share (the scheduler classes
/// all start with the same nine) and each reader's own. Build the parts with std::to_array.
template <std::size_t... N>
constexpr std::array<ConfigKey, (N + ...)> join_keys(const std::array<ConfigKey, N>&... parts) {
  std::array<ConfigKey, (N + ...)> out{};
  std::size_t i = 0;
  auto append = [&](const auto& part) {
    for (const ConfigKey& key : part) out[i++] = key;
  };
  (append(parts), ...);
  return out;
}

/// Throws "<origin>: <key> = <value> is not supported (<why>)" for the first kDefaultOnly key of
/// `table` that `config` sets to a value other than its default. Null counts as unset; numbers
/// compare by value (1 == 1.0); a list whose entries all equal the default (diffusers' per-block
/// form) is the default.
void refuse_unsupported(const nlohmann::json& config, ConfigKeyTable table, const std::string& origin);

/// The row for `name`, or nullptr.
const ConfigKey* find_config_key(ConfigKeyTable table, std::string_view name);

/// "honoured", "default-only", "inert", "metadata".
const char* to_string(KeyUse use);

}  // namespace lookahead::model::io
