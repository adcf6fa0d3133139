// UNetConfig: the diffusers `unet/config.json` of a UNet2DConditionModel of the SDXL family,
// normalized (per-block lists resolved) and validated, so a tiny test config and the SDXL base
// config build through the same code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/io/config_keys.h"

namespace lookahead::model::unet {

/// Resolved configuration. Lists are per down block (index 0 = highest resolution).
struct UNetConfig {
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  std::vector<int64_t> block_out_channels;
  std::vector<std::string> down_block_types;  ///< DownBlock2D | CrossAttnDownBlock2D
  std::vector<std::string> up_block_types;    ///< UpBlock2D | CrossAttnUpBlock2D
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";  ///< the only mid block built (null is refused)
  std::vector<int64_t> layers_per_block;             ///< resnets per down block
  std::vector<int64_t> transformer_layers_per_block;  ///< depth per down block
  std::vector<int64_t> reverse_transformer_layers_per_block;  ///< depth per up block
  std::vector<int64_t> num_attention_heads;          ///< heads per down block (diffusers' attention_head_dim quirk resolved)
  std::vector<int64_t> cross_attention_dim;          ///< per down block
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1.0;
  bool use_linear_projection = true;
  bool center_input_sample = false;
  int64_t conv_in_kernel = 3;
  int64_t conv_out_kernel = 3;
  std::string addition_embed_type = "text_time";  ///< or "" for none
  int64_t addition_time_embed_dim = 256;
  int64_t projection_class_embeddings_input_dim = 2816;

  int64_t time_embed_dim() const { return block_out_channels.at(0) * 4; }
  /// The stabilityai/stable-diffusion-xl-base-1.0 UNet.
  static UNetConfig sdxl_base();
  /// Parses diffusers' config.json text; `origin` names the file in errors. Every key is treated
  /// as keys() says: unsupported values (class embeddings, encoder_hid_dim, time_cond_proj_dim,
  /// non-SiLU activations, other block types, ...) are refused with a message naming the key.
  static UNetConfig from_json(const std::string& json_text, const std::string& origin);
  /// How every key of diffusers' UNet2DConditionModel config is treated (see io::KeyUse).
  static io::ConfigKeyTable keys();
  /// Reads and parses a config.json file.
  static UNetConfig from_file(const std::string& path);
  /// diffusers-style JSON of this config (no num_attention_heads, which diffusers refuses;
  /// round-trips through from_json).
  std::string to_json() const;
};

}  // namespace lookahead::model::unet
