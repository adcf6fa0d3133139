// The one reader of diffusers `scheduler_config.json` values, shared by the noise schedule and every
// sampler: io::read_key's `from_config` semantics (absent or null keeps the class default, unknown
// keys are ignored because a config written for one scheduler class is routinely loaded into
// another), errors named "scheduler config", and integers that also take a whole float (1000.0),
// since diffusers computes with them as numbers. Which keys must keep their default is each
// scheduler's key table (keys(), model/io/config_keys.h).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <cstdint>
#include <string>

#include "model/io/config_keys.h"

namespace lookahead::model::sched::detail {

/// The origin scheduler config errors name ("scheduler config: steps_offset = 2.5 must be an integer").
inline constexpr const char* kSchedulerConfig = "scheduler config";

/// The rows every scheduler's key table starts with (diffusers' SchedulerMixin classes share these
/// __init__ keys, with the same meaning): metadata, the beta schedule and prediction_type.
inline constexpr auto kScheduleKeys = std::to_array<io::ConfigKey>({
    {"_class_name", io::KeyUse::kMetadata, nullptr,
     "the class that wrote it; diffusers' from_config loads a config into any scheduler class"},
    {"_diffusers_version", io::KeyUse::kMetadata, nullptr, "the writer's version"},
    {"num_train_timesteps", io::KeyUse::kHonoured, nullptr, "training steps T"},
    {"beta_start", io::KeyUse::kHonoured, nullptr, "first beta"},
    {"beta_end", io::KeyUse::kHonoured, nullptr, "last beta"},
    {"beta_schedule", io::KeyUse::kHonoured, nullptr, "linear | scaled_linear | squaredcos_cap_v2; others are refused"},
    {"trained_betas", io::KeyUse::kDefaultOnly, "null", "explicit trained_betas"},
    {"prediction_type", io::KeyUse::kHonoured, nullptr, "epsilon | v_prediction | sample"},
    {"rescale_betas_zero_snr", io::KeyUse::kDefaultOnly, "false", "zero-terminal-SNR rescaling"},
});
/// Dynamic thresholding (DDIM, DPM-Solver, LCM): refused, so its two parameters are inert.
inline constexpr auto kThresholdingKeys = std::to_array<io::ConfigKey>({
    {"thresholding", io::KeyUse::kDefaultOnly, "false", "dynamic thresholding"},
    {"dynamic_thresholding_ratio", io::KeyUse::kInert, nullptr, "read only by dynamic thresholding (refused)"},
    {"sample_max_value", io::KeyUse::kInert, nullptr, "read only by dynamic thresholding (refused)"},
});
/// The sigma spacings Euler and DPM-Solver offer besides diffusers' default: refused.
inline constexpr auto kExtraSigmaKeys = std::to_array<io::ConfigKey>({
    {"use_karras_sigmas", io::KeyUse::kDefaultOnly, "false", "Karras sigmas"},
    {"use_exponential_sigmas", io::KeyUse::kDefaultOnly, "false", "exponential sigmas"},
    {"use_beta_sigmas", io::KeyUse::kDefaultOnly, "false", "beta sigmas"},
});

/// Overwrites `out` with config[key] when present and non-null; refuses a value of the wrong type.
void read_key(const nlohmann::json& config, const char* key, double& out);
void read_key(const nlohmann::json& config, const char* key, int64_t& out);
void read_key(const nlohmann::json& config, const char* key, bool& out);
void read_key(const nlohmann::json& config, const char* key, std::string& out);

/// An enum key spelled as diffusers spells it: `out` keeps its value when the key is absent,
/// otherwise becomes parse(text) (which refuses unknown names). `to_string(out)` is found by ADL.
template <typename Enum, typename Parse>
void read_enum(const nlohmann::json& config, const char* key, Enum& out, Parse parse) {
  std::string text = to_string(out);
  read_key(config, key, text);
  out = parse(text);
}

}  // namespace lookahead::model::sched::detail
