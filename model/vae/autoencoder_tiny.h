// TAESD / TAESDXL as diffusers' AutoencoderTiny: EncoderTiny and DecoderTiny are Sequentials whose
// indices are the diffusers keys (`encoder.layers.N...`, `decoder.layers.N...`), so the HF
// madebyollin/taesdxl weights load as they are. decode(z) and encode(x) reproduce diffusers'
// `decode(z).sample` and `encode(x).latents` (images in [-1, 1]).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include "model/nn/lora.h"
#include "model/vae/vae_config.h"

namespace lookahead::model::vae {

/// AutoencoderTinyBlock: out = relu(conv(x) + skip(x)), conv = Sequential(conv3x3, act, conv3x3,
/// act, conv3x3) (keys conv.0, conv.2, conv.4), skip = 1x1 conv without bias when the channel
/// count changes (key skip), identity otherwise.
class TinyBlockImpl : public torch::nn::Cloneable<TinyBlockImpl> {
 public:
  TinyBlockImpl(int64_t in_channels, int64_t out_channels, std::string act_fn, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, Cin, H, W] -> [B, Cout, H, W]
  int64_t in_channels, out_channels;
  std::string act_fn;
  at::TensorOptions tensor_options;
  torch::nn::Sequential conv{nullptr};
  nn::LoraConv2d skip{nullptr};
};
TORCH_MODULE(TinyBlock);

/// EncoderTiny: image in [-1, 1] -> latents (TAESD: [B, 3, H, W] -> [B, 4, H/8, W/8]).
class EncoderTinyImpl : public torch::nn::Cloneable<EncoderTinyImpl> {
 public:
  EncoderTinyImpl(TinyConfig config, at::TensorOptions tensor_options);
  void reset() override;
  /// Maps x to [0, 1] ((x + 1) / 2) and runs the layers.
  at::Tensor forward(const at::Tensor& x);
  TinyConfig config;
  at::TensorOptions tensor_options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(EncoderTiny);

/// DecoderTiny: latents -> image in [-1, 1] (TAESD: [B, 4, h, w] -> [B, 3, 8h, 8w]).
class DecoderTinyImpl : public torch::nn::Cloneable<DecoderTinyImpl> {
 public:
  DecoderTinyImpl(TinyConfig config, at::TensorOptions tensor_options);
  void reset() override;
  /// Soft-clamps z to (-3, 3) (tanh(z / 3) * 3), runs the layers (output ≈ [0, 1]) and returns
  /// 2 * out - 1.
  at::Tensor forward(const at::Tensor& z);
  TinyConfig config;
  at::TensorOptions tensor_options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(DecoderTiny);

/// Example:
///   AutoencoderTiny taesd(TinyConfig::from_file("taesdxl/config.json"));
///   io::load_state_dict(*taesd, io::load_file("taesdxl/diffusion_pytorch_model.safetensors"), "taesdxl");
///   at::Tensor rgb = (taesd->decode(x0_latents) + 1) / 2;   // [B, 3, 8h, 8w] in ≈ [0, 1]
/// Latents are UNet-space latents as they are (scaling_factor 1: no division by 0.13025).
class AutoencoderTinyImpl : public torch::nn::Cloneable<AutoencoderTinyImpl> {
 public:
  explicit AutoencoderTinyImpl(TinyConfig config, at::TensorOptions tensor_options = {});
  void reset() override;
  /// diffusers `encode(x).latents`: x [B, in_channels, H, W] in [-1, 1] -> [B, latent_channels, H/8, W/8].
  at::Tensor encode(const at::Tensor& x);
  /// diffusers `decode(z).sample`: z [B, latent_channels, h, w] -> [B, out_channels, 8h, 8w] in ≈ [-1, 1].
  at::Tensor decode(const at::Tensor& z);
  /// diffusers `scale_latents`: raw latents -> [0, 1] for 8-bit packing.
  at::Tensor scale_latents(const at::Tensor& z) const;
  /// diffusers `unscale_latents`: [0, 1] -> raw latents.
  at::Tensor unscale_latents(const at::Tensor& x) const;
  const TinyConfig& config() const { return config_; }

  EncoderTiny encoder{nullptr};
  DecoderTiny decoder{nullptr};

 private:
  TinyConfig config_;
  at::TensorOptions tensor_options_;
};
TORCH_MODULE(AutoencoderTiny);

}  // namespace lookahead::model::vae
