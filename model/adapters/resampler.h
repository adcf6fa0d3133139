// IP-Adapter Plus image projection: the perceiver Resampler that turns CLIP ViT-H penultimate
// tokens [B, 257, 1280] into 16 image-prompt tokens [B, 16, 2048], keyed as the original
// IP-Adapter checkpoints (`latents`, `proj_in`, `layers.i.0.{norm1,norm2,to_q,to_kv,to_out}`,
// `layers.i.1.{0,1,3}`, `proj_out`, `norm_out`).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "model/nn/lora.h"
#include "model/nn/norm.h"

namespace lookahead::model::adapters {

/// IPAdapterPlusXL's Resampler settings (defaults: ip-adapter-plus(-face)_sdxl_vit-h).
struct ResamplerOptions {
  TORCH_ARG(int64_t, dim) = 1280;
  TORCH_ARG(int64_t, depth) = 4;
  TORCH_ARG(int64_t, dim_head) = 64;
  TORCH_ARG(int64_t, heads) = 20;
  TORCH_ARG(int64_t, num_queries) = 16;
  TORCH_ARG(int64_t, embedding_dim) = 1280;  ///< image encoder hidden size
  TORCH_ARG(int64_t, output_dim) = 2048;     ///< UNet cross-attention dim
  TORCH_ARG(int64_t, ff_mult) = 4;
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
};

/// Latents attend to [image features ; latents]: q from norm2(latents), k/v from
/// to_kv(cat(norm1(x), norm2(latents))) (rows: K then V), softmax in float32.
class PerceiverAttentionImpl : public torch::nn::Cloneable<PerceiverAttentionImpl> {
 public:
  explicit PerceiverAttentionImpl(const ResamplerOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& latents);  // x [B, N, dim], latents [B, Q, dim]
  ResamplerOptions options;
  nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  nn::LoraLinear to_q{nullptr}, to_kv{nullptr}, to_out{nullptr};
};
TORCH_MODULE(PerceiverAttention);

class ResamplerImpl : public torch::nn::Cloneable<ResamplerImpl> {
 public:
  explicit ResamplerImpl(const ResamplerOptions& options = {});
  void reset() override;
  /// [B, N, embedding_dim] -> [B, num_queries, output_dim]
  at::Tensor forward(const at::Tensor& image_features);
  ResamplerOptions options;
  at::Tensor latents;  // [1, Q, dim]
  nn::LoraLinear proj_in{nullptr}, proj_out{nullptr};
  nn::LayerNorm norm_out{nullptr};
  torch::nn::ModuleList layers{nullptr};  // layers[i] = [PerceiverAttention, [LayerNorm, Linear, GELU, Linear]]
};
TORCH_MODULE(Resampler);

}  // namespace lookahead::model::adapters
