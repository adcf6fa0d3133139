// Building blocks of the SDXL AutoencoderKL in diffusers' key layout: the time-embedding-free
// ResnetBlock2D, the single-head VAE self-attention (group_norm, to_q/to_k/to_v/to_out.0 with
// biases, residual), UNetMidBlock2D, DownEncoderBlock2D and UpDecoderBlock2D; plus the
// activation module shared with AutoencoderTiny.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <string>

#include "model/nn/lora.h"
#include "model/nn/norm.h"

namespace lookahead::model::vae {

/// diffusers `get_activation(name)`: relu, silu (= swish), gelu (exact), mish.
at::Tensor activate(const at::Tensor& x, const std::string& name);

/// Parameter-free activation module, so it can sit in a Sequential at diffusers' index.
class ActivationImpl : public torch::nn::Cloneable<ActivationImpl> {
 public:
  explicit ActivationImpl(std::string name) : name(std::move(name)) {}
  void reset() override {}
  at::Tensor forward(const at::Tensor& x) { return activate(x, name); }
  std::string name;
};
TORCH_MODULE(Activation);

/// Options shared by the AutoencoderKL blocks.
struct VaeBlockOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t num_layers = 1;      ///< resnets in a stage
  int64_t groups = 32;
  double eps = 1e-6;
  std::string act_fn = "silu";
  bool add_sampler = false;    ///< down/up-sampler after the resnets
  bool add_attention = true;   ///< mid block only
  at::TensorOptions tensor_options;
};

/// ResnetBlock2D without time embedding: h = conv1(act(norm1(x))); h = conv2(act(norm2(h)));
/// return shortcut(x) + h, shortcut a 1x1 conv (with bias) when the channel count changes.
class VaeResnetBlockImpl : public torch::nn::Cloneable<VaeResnetBlockImpl> {
 public:
  VaeResnetBlockImpl(int64_t in_channels, int64_t out_channels, const VaeBlockOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, Cin, H, W] -> [B, Cout, H, W]
  int64_t in_channels, out_channels;
  VaeBlockOptions options;
  nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  nn::LoraConv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
};
TORCH_MODULE(VaeResnetBlock);

/// diffusers `Attention` as the VAE builds it: one head over all C channels, GroupNorm on the
/// input, biased projections, output added to the input.
class VaeAttentionImpl : public torch::nn::Cloneable<VaeAttentionImpl> {
 public:
  VaeAttentionImpl(int64_t channels, const VaeBlockOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, C, H, W] -> [B, C, H, W]
  int64_t channels;
  VaeBlockOptions options;
  nn::GroupNorm group_norm{nullptr};
  nn::LoraLinear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // [0] = LoraLinear (diffusers key `to_out.0`)
};
TORCH_MODULE(VaeAttention);

/// UNetMidBlock2D without time embedding: resnets.0, then (attentions.i, resnets.i+1) pairs.
class VaeMidBlockImpl : public torch::nn::Cloneable<VaeMidBlockImpl> {
 public:
  explicit VaeMidBlockImpl(const VaeBlockOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, C, H, W]
  VaeBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(VaeMidBlock);

/// DownEncoderBlock2D: resnets, then an optional stride-2 conv whose input is padded by one
/// row and column at the bottom/right (diffusers' Downsample2D with padding 0).
class DownEncoderBlockImpl : public torch::nn::Cloneable<DownEncoderBlockImpl> {
 public:
  explicit DownEncoderBlockImpl(const VaeBlockOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, Cin, H, W] -> [B, Cout, H', W']
  VaeBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, downsamplers{nullptr};
};
TORCH_MODULE(DownEncoderBlock);

/// UpDecoderBlock2D: resnets, then an optional nearest x2 upsample + 3x3 conv.
class UpDecoderBlockImpl : public torch::nn::Cloneable<UpDecoderBlockImpl> {
 public:
  explicit UpDecoderBlockImpl(const VaeBlockOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, Cin, H, W] -> [B, Cout, 2H, 2W] (or H, W)
  VaeBlockOptions options;
  torch::nn::ModuleList resnets{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(UpDecoderBlock);

}  // namespace lookahead::model::vae
