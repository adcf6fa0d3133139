// Configurations of the SDXL autoencoders as diffusers writes them in `vae/config.json`:
// AutoencoderTiny (TAESD / TAESDXL) and AutoencoderKL (the SDXL VAE). Both are parsed from the
// JSON text, validated, and rejected with a message naming the key when they ask for something
// this implementation does not build.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/io/config_keys.h"

namespace lookahead::model::vae {

/// diffusers `AutoencoderTiny` config. Lists are per stage (encoder: index 0 = full resolution;
/// decoder: index 0 = latent resolution).
struct TinyConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<int64_t> encoder_block_out_channels{64, 64, 64, 64};
  std::vector<int64_t> decoder_block_out_channels{64, 64, 64, 64};
  std::vector<int64_t> num_encoder_blocks{1, 3, 3, 3};
  std::vector<int64_t> num_decoder_blocks{3, 3, 3, 1};
  std::string act_fn = "relu";       ///< relu | silu | swish | gelu | mish
  std::string upsample_fn = "nearest";
  int64_t latent_channels = 4;
  int64_t upsampling_scaling_factor = 2;
  double latent_magnitude = 3.0;     ///< only for 8-bit latent packing (scale_latents)
  double latent_shift = 0.5;
  double scaling_factor = 1.0;       ///< TAESD decodes UNet-space latents directly: only 1 loads
  double shift_factor = 0.0;         ///< only 0 loads (see keys())
  bool force_upcast = false;

  /// madebyollin/taesdxl (identical architecture to madebyollin/taesd).
  static TinyConfig taesdxl();
  /// Parses diffusers' config.json text; `origin` names the file in errors.
  static TinyConfig from_json(const std::string& json_text, const std::string& origin);
  /// How every key of diffusers' AutoencoderTiny config is treated (see io::KeyUse).
  static io::ConfigKeyTable keys();
  /// Reads and parses a config.json file.
  static TinyConfig from_file(const std::string& path);
  /// diffusers-style JSON of this config (round-trips through from_json).
  std::string to_json() const;
};

/// diffusers `AutoencoderKL` config (DownEncoderBlock2D / UpDecoderBlock2D stages).
struct KLConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<int64_t> block_out_channels{128, 256, 512, 512};  ///< per encoder stage
  int64_t layers_per_block = 2;      ///< encoder resnets per stage; the decoder has one more
  int64_t latent_channels = 4;
  int64_t norm_num_groups = 32;
  std::string act_fn = "silu";       ///< resnet activation: silu | swish | relu | gelu | mish
  int64_t sample_size = 1024;
  double scaling_factor = 0.13025;   ///< SDXL; SD 1.x uses 0.18215
  double shift_factor = 0.0;         ///< only 0 / null loads (see keys())
  bool force_upcast = true;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;

  /// stabilityai/sdxl-vae (the VAE of stable-diffusion-xl-base-1.0).
  static KLConfig sdxl();
  /// Parses diffusers' config.json text; `origin` names the file in errors. Unsupported options
  /// (other block types, latents_mean/latents_std, ...) are rejected with a message naming the key.
  static KLConfig from_json(const std::string& json_text, const std::string& origin);
  /// How every key of diffusers' AutoencoderKL config is treated (see io::KeyUse).
  static io::ConfigKeyTable keys();
  /// Reads and parses a config.json file.
  static KLConfig from_file(const std::string& path);
  /// diffusers-style JSON of this config (round-trips through from_json).
  std::string to_json() const;
};

/// `_class_name` of a diffusers config.json text ("AutoencoderTiny", "AutoencoderKL", ...), or ""
/// when the text has none.
std::string config_class_name(const std::string& json_text, const std::string& origin);

}  // namespace lookahead::model::vae
