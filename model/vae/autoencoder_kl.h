// The SDXL VAE as diffusers' AutoencoderKL: Encoder (conv_in, DownEncoderBlock2D stages, mid
// block, conv_norm_out, conv_out), quant_conv, post_quant_conv and Decoder, with named_parameters()
// equal to diffusers' state-dict keys. Buildable on the meta device for structure checks.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "model/nn/lora.h"
#include "model/nn/norm.h"
#include "model/vae/vae_blocks.h"
#include "model/vae/vae_config.h"

namespace lookahead::model::vae {

/// diffusers `DiagonalGaussianDistribution` of the encoder's moments.
struct LatentDistribution {
  at::Tensor mean;    // [B, latent_channels, h, w]
  at::Tensor logvar;  // [B, latent_channels, h, w], clamped to [-30, 20]
  at::Tensor std;     // exp(logvar / 2)
  /// mean + std * noise (`noise` [B, latent_channels, h, w], e.g. at::randn_like(mean)).
  at::Tensor sample(const at::Tensor& noise) const;
  /// Splits moments [B, 2 * latent_channels, h, w] into mean and logvar.
  static LatentDistribution from_moments(const at::Tensor& moments);
};

/// Encoder: image [B, in_channels, H, W] -> moments [B, 2 * latent_channels, H/f, W/f].
class VaeEncoderImpl : public torch::nn::Cloneable<VaeEncoderImpl> {
 public:
  VaeEncoderImpl(KLConfig config, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  KLConfig config;
  at::TensorOptions tensor_options;
  nn::LoraConv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  VaeMidBlock mid_block{nullptr};
  nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VaeEncoder);

/// Decoder: latents [B, latent_channels, h, w] -> image [B, out_channels, h*f, w*f].
class VaeDecoderImpl : public torch::nn::Cloneable<VaeDecoderImpl> {
 public:
  VaeDecoderImpl(KLConfig config, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& z);
  KLConfig config;
  at::TensorOptions tensor_options;
  nn::LoraConv2d conv_in{nullptr}, conv_out{nullptr};
  VaeMidBlock mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VaeDecoder);

/// Example:
///   AutoencoderKL vae(KLConfig::from_file("vae/config.json"));
///   LatentDistribution d = vae->encode(image);                  // image in [-1, 1]
///   at::Tensor z0 = vae->to_unet_latents(d, at::randn_like(d.mean));  // training latents
///   at::Tensor rgb = vae->decode(vae->from_unet_latents(z0));   // [-1, 1]
///
/// Training latents are the posterior *sample* (mean + std * noise, as diffusers' SDXL training
/// scripts use `latent_dist.sample()`) times scaling_factor (0.13025 for SDXL), after subtracting
/// shift_factor (0 for SDXL); passing an undefined noise tensor uses the mean instead.
class AutoencoderKLImpl : public torch::nn::Cloneable<AutoencoderKLImpl> {
 public:
  explicit AutoencoderKLImpl(KLConfig config, at::TensorOptions tensor_options = {});
  void reset() override;
  /// diffusers `encode(x).latent_dist`: x [B, in_channels, H, W] in [-1, 1].
  LatentDistribution encode(const at::Tensor& x);
  /// diffusers `decode(z).sample`: z [B, latent_channels, h, w] (VAE space, not scaled) ->
  /// [B, out_channels, h*f, w*f] in ≈ [-1, 1].
  at::Tensor decode(const at::Tensor& z);
  /// (sample(noise) or mean when `noise` is undefined - shift_factor) * scaling_factor.
  at::Tensor to_unet_latents(const LatentDistribution& dist, const at::Tensor& noise = {}) const;
  /// z / scaling_factor + shift_factor: UNet-space latents -> decoder input.
  at::Tensor from_unet_latents(const at::Tensor& z) const;
  /// Spatial down-sampling factor f = 2^(stages - 1) (8 for SDXL).
  int64_t downscale_factor() const;
  const KLConfig& config() const { return config_; }

  VaeEncoder encoder{nullptr};
  VaeDecoder decoder{nullptr};
  nn::LoraConv2d quant_conv{nullptr}, post_quant_conv{nullptr};

 private:
  KLConfig config_;
  at::TensorOptions tensor_options_;
};
TORCH_MODULE(AutoencoderKL);

}  // namespace lookahead::model::vae
