// The convolutional pieces of the SDXL UNet: ResnetBlock2D (with additive time embedding),
// Downsample2D (stride-2 conv) and Upsample2D (nearest x2 then conv), in diffusers' key layout.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "model/nn/lora.h"
#include "model/nn/norm.h"

namespace lookahead::model::unet {

struct ResnetOptions {
  ResnetOptions(int64_t in, int64_t out, int64_t temb) : in_channels_(in), out_channels_(out), temb_channels_(temb) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, temb_channels);
  TORCH_ARG(int64_t, groups) = 32;
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
};

/// h = conv1(silu(norm1(x))) + time_emb_proj(silu(emb)); h = conv2(silu(norm2(h)));
/// return (shortcut(x) + h) / output_scale_factor.
class ResnetBlock2DImpl : public torch::nn::Cloneable<ResnetBlock2DImpl> {
 public:
  explicit ResnetBlock2DImpl(const ResnetOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb);  // x [B, Cin, H, W], emb [B, temb]
  ResnetOptions options;
  nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  nn::LoraConv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  nn::LoraLinear time_emb_proj{nullptr};
};
TORCH_MODULE(ResnetBlock2D);

/// Stride-2 3x3 conv (diffusers key `conv`).
class Downsample2DImpl : public torch::nn::Cloneable<Downsample2DImpl> {
 public:
  Downsample2DImpl(int64_t channels, int64_t padding, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  int64_t channels, padding;
  at::TensorOptions tensor_options;
  nn::LoraConv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

/// Nearest-neighbour x2 (or to `size`), then 3x3 conv (diffusers key `conv`).
class Upsample2DImpl : public torch::nn::Cloneable<Upsample2DImpl> {
 public:
  Upsample2DImpl(int64_t channels, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x, c10::optional<at::IntArrayRef> size = c10::nullopt);
  int64_t channels;
  at::TensorOptions tensor_options;
  nn::LoraConv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

}  // namespace lookahead::model::unet
