// What transformers' CLIPTextConfig and CLIPVisionConfig have in common: the keys that configure
// the shared encoder (ClipEncoder: width, depth, heads, MLP, activation, LayerNorm epsilon) and
// the PreTrainedConfig keys, read and checked once for both towers.
#pragma once

#include <c10/util/Exception.h>
#include <nlohmann/json_fwd.hpp>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "model/io/config_json.h"
#include "model/io/config_keys.h"

namespace lookahead::model::text {

/// The rows of transformers' PreTrainedConfig that every CLIP config (text, vision, CLIPModel)
/// carries: names, versions, output switches and classification-head fields, none of which change
/// what a tower computes.
inline constexpr auto kPretrainedConfigKeys = std::to_array<io::ConfigKey>({
    {"_name_or_path", io::KeyUse::kMetadata, nullptr, "where the config was loaded from"},
    {"transformers_version", io::KeyUse::kMetadata, nullptr, "the writer's version"},
    {"model_type", io::KeyUse::kMetadata, nullptr, "the config class; transformers only warns on a mismatch"},
    {"dtype", io::KeyUse::kMetadata, nullptr, "the saved dtype; the caller chooses the run dtype"},
    {"torch_dtype", io::KeyUse::kMetadata, nullptr, "transformers < 5 spelling of dtype"},
    {"output_hidden_states", io::KeyUse::kMetadata, nullptr, "which outputs are returned, not their values"},
    {"output_attentions", io::KeyUse::kMetadata, nullptr, "which outputs are returned, not their values"},
    {"return_dict", io::KeyUse::kMetadata, nullptr, "output container type"},
    {"chunk_size_feed_forward", io::KeyUse::kMetadata, nullptr, "the CLIP modeling code never chunks"},
    {"is_encoder_decoder", io::KeyUse::kMetadata, nullptr, "generation flag, unused by CLIP"},
    {"id2label", io::KeyUse::kMetadata, nullptr, "classification-head labels, unused by CLIP"},
    {"label2id", io::KeyUse::kMetadata, nullptr, "classification-head labels, unused by CLIP"},
    {"problem_type", io::KeyUse::kMetadata, nullptr, "classification-head loss, unused by CLIP"},
    {"initializer_factor", io::KeyUse::kMetadata, nullptr, "random initialization only; weights are loaded"},
});

/// The rows both towers' key tables start with (ClipTextConfig::keys(), ClipVisionConfig::keys()):
/// the PreTrainedConfig rows, then the shared encoder's.
inline constexpr auto kClipEncoderKeys = io::join_keys(
    kPretrainedConfigKeys,
    std::to_array<io::ConfigKey>({
        {"initializer_range", io::KeyUse::kMetadata, nullptr, "random initialization only; weights are loaded"},
        {"attention_dropout", io::KeyUse::kDefaultOnly, "0.0", "attention dropout, active while training"},
        {"hidden_act", io::KeyUse::kHonoured, nullptr, "MLP activation: quick_gelu | gelu (erf); others are refused"},
        {"layer_norm_eps", io::KeyUse::kHonoured, nullptr, "LayerNorm epsilon"},
        {"hidden_size", io::KeyUse::kHonoured, nullptr, "width"},
        {"intermediate_size", io::KeyUse::kHonoured, nullptr, "MLP width"},
        {"num_hidden_layers", io::KeyUse::kHonoured, nullptr, "depth"},
        {"num_attention_heads", io::KeyUse::kHonoured, nullptr, "heads"},
        {"projection_dim", io::KeyUse::kHonoured, nullptr, "output width of the *WithProjection projection"},
    }));

/// A tower config read with transformers' semantics: `defaults` (the class's reference_defaults())
/// overwritten by every non-null key of `int_keys` (integers only: transformers' layers refuse a
/// fractional size), `layer_norm_eps` and `hidden_act`; then the checks both towers need.
/// `Config` is ClipTextConfig or ClipVisionConfig.
template <typename Config>
Config read_clip_encoder_config(const nlohmann::json& config, const std::string& origin, Config defaults,
                                std::initializer_list<std::pair<const char*, int64_t Config::*>> int_keys) {
  Config c = std::move(defaults);
  for (const auto& [key, field] : int_keys) io::read_key(config, key, c.*field, origin);
  io::read_key(config, "layer_norm_eps", c.layer_norm_eps, origin);
  io::read_key(config, "hidden_act", c.hidden_act, origin);
  TORCH_CHECK(c.hidden_act == "quick_gelu" || c.hidden_act == "gelu", origin, ": hidden_act = \"", c.hidden_act,
              "\" is not supported (quick_gelu | gelu)");
  TORCH_CHECK(c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0, origin, ": hidden_size ",
              c.hidden_size, " is not a multiple of num_attention_heads ", c.num_attention_heads);
  return c;
}

}  // namespace lookahead::model::text
