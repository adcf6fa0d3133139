// Transformer2DModel (continuous input) and its BasicTransformerBlocks: GroupNorm, proj_in,
// [self-attention, cross-attention, GEGLU feed-forward] x depth, proj_out, residual.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "model/nn/attention.h"
#include "model/nn/lora.h"
#include "model/nn/norm.h"

namespace lookahead::model::unet {

/// h += attn1(norm1(h)); h += attn2(norm2(h), context); h += ff(norm3(h)).
/// With reference K/V in the shared context, attn1 attends over [own ; reference] tokens and attn2
/// takes the block's IP K/V; during a KV-encoder run the block records norm1(h) through attn1's
/// to_k / to_v plus the KV-head LoRA as its reference K/V. With batch sharing in the context, attn1
/// is consistent self-attention across the rows of each group (nn::shared_self_attention).
class BasicTransformerBlockImpl : public torch::nn::Cloneable<BasicTransformerBlockImpl> {
 public:
  BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim, int64_t cross_attention_dim,
                            at::TensorOptions tensor_options, std::shared_ptr<nn::AttentionContext> context = nullptr);
  void reset() override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context);  // x [B, N, C], context [B, M, Dc]
  int64_t dim, heads, head_dim, cross_attention_dim;
  at::TensorOptions tensor_options;
  std::shared_ptr<nn::AttentionContext> context;
  /// Position among the UNet's transformer blocks (module order), set by the UNet; keys the
  /// reference K/V this block records (KV encoder) or attends to (decoder / LCM).
  int64_t index = -1;
  nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  nn::Attention attn1{nullptr}, attn2{nullptr};
  nn::FeedForward ff{nullptr};

 private:
  void record_reference(const at::Tensor& n1, nn::KvExtraction& extraction);
};
TORCH_MODULE(BasicTransformerBlock);

struct Transformer2DOptions {
  Transformer2DOptions(int64_t channels, int64_t heads, int64_t depth, int64_t cross_attention_dim)
      : channels_(channels), heads_(heads), depth_(depth), cross_attention_dim_(cross_attention_dim) {}
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(int64_t, heads);  ///< head_dim = channels / heads
  TORCH_ARG(int64_t, depth);
  TORCH_ARG(int64_t, cross_attention_dim);
  TORCH_ARG(int64_t, groups) = 32;
  TORCH_ARG(bool, use_linear_projection) = true;  ///< SDXL: Linear proj_in/out; SD1.x: 1x1 conv
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
  TORCH_ARG(std::shared_ptr<nn::AttentionContext>, context) = nullptr;
};

/// x [B, C, H, W] -> x + proj_out(blocks(proj_in(norm(x)) as [B, HW, C])).
class Transformer2DModelImpl : public torch::nn::Cloneable<Transformer2DModelImpl> {
 public:
  explicit Transformer2DModelImpl(const Transformer2DOptions& options);
  void reset() override;
  /// As a sharding unit when the network has a unit runner: its inputs are x, the text context,
  /// the image tokens and its blocks' reference K/V; during a KV-encoder run its outputs also
  /// carry the K/V its blocks record.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context);
  /// The computation itself, reading the shared context as it is.
  at::Tensor forward_local(const at::Tensor& x, const at::Tensor& context);
  BasicTransformerBlockImpl& block(size_t i) { return *transformer_blocks->ptr<BasicTransformerBlockImpl>(i); }

  Transformer2DOptions options;
  nn::GroupNorm norm{nullptr};
  std::shared_ptr<torch::nn::Module> proj_in, proj_out;  // LoraLinear or LoraConv2d (1x1)
  torch::nn::ModuleList transformer_blocks{nullptr};
};
TORCH_MODULE(Transformer2DModel);

}  // namespace lookahead::model::unet
