// The UNet's stages: DownBlock (DownBlock2D / CrossAttnDownBlock2D), MidBlock
// (UNetMidBlock2DCrossAttn) and UpBlock (UpBlock2D / CrossAttnUpBlock2D), keyed as in diffusers
// (`resnets.N`, `attentions.N`, `downsamplers.0`, `upsamplers.0`).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "model/unet/resnet.h"
#include "model/unet/transformer_2d.h"

namespace lookahead::model::unet {

/// Shared construction parameters of one stage.
struct BlockOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t prev_output_channels = 0;  ///< up blocks: channels coming from the stage below
  int64_t temb_channels = 0;
  int64_t num_layers = 1;
  bool cross_attention = false;
  int64_t transformer_depth = 1;
  int64_t heads = 1;
  int64_t cross_attention_dim = 0;
  bool add_sampler = true;  ///< downsampler / upsampler at the end of the stage
  int64_t groups = 32;
  double eps = 1e-5;
  double output_scale_factor = 1.0;
  int64_t downsample_padding = 1;
  bool use_linear_projection = true;
  at::TensorOptions tensor_options;
  std::shared_ptr<nn::AttentionContext> attention_context;
};

class DownBlockImpl : public torch::nn::Cloneable<DownBlockImpl> {
 public:
  explicit DownBlockImpl(const BlockOptions& options);
  void reset() override;
  /// Runs the stage; appends every output the up path will consume (one per layer, plus the
  /// downsampled one) to `skips`.
  at::Tensor forward(at::Tensor h, const at::Tensor& emb, const at::Tensor& context, std::vector<at::Tensor>& skips);
  BlockOptions options;
  torch::nn::ModuleList attentions{nullptr}, resnets{nullptr}, downsamplers{nullptr};
};
TORCH_MODULE(DownBlock);

class MidBlockImpl : public torch::nn::Cloneable<MidBlockImpl> {
 public:
  explicit MidBlockImpl(const BlockOptions& options);
  void reset() override;
  at::Tensor forward(at::Tensor h, const at::Tensor& emb, const at::Tensor& context);
  BlockOptions options;
  torch::nn::ModuleList attentions{nullptr}, resnets{nullptr};
};
TORCH_MODULE(MidBlock);

class UpBlockImpl : public torch::nn::Cloneable<UpBlockImpl> {
 public:
  explicit UpBlockImpl(const BlockOptions& options);
  void reset() override;
  /// Pops one skip per layer from the back of `skips` (LIFO) and concatenates [h, skip].
  /// `upsample_size` forces the upsampler's output size (odd latent sizes).
  /// `run_upsampler` false stops before the upsampler (the KV encoder's last stage).
  at::Tensor forward(at::Tensor h, const at::Tensor& emb, const at::Tensor& context, std::vector<at::Tensor>& skips,
                     c10::optional<std::vector<int64_t>> upsample_size, bool run_upsampler = true);
  BlockOptions options;
  torch::nn::ModuleList attentions{nullptr}, resnets{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(UpBlock);

}  // namespace lookahead::model::unet
