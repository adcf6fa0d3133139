// diffusers `Attention` (to_q/to_k/to_v without bias, to_out.0 with bias) computed with
// scaled_dot_product_attention, and the GEGLU `FeedForward` of BasicTransformerBlock.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <unordered_map>

#include "dist/unit_runner.h"
#include "model/nn/batch_sharing.h"
#include "model/nn/lora.h"
#include "model/nn/reference_kv.h"

namespace lookahead::model::nn {

/// State shared by the layers of one network: per-forward inputs set by the network's forward
/// (the IP-Adapter tokens of this call, reference K/V) and read by the layers that use them, and
/// the persistent unit runner.
struct AttentionContext {
  at::Tensor ip_tokens;   ///< [B, T_ip, D_ip] image-prompt tokens, or undefined (no image branch)
  double ip_scale = 1.0;  ///< weight s of the image branch
  /// Reference K/V the self-attention layers extend their keys with (decoder / LCM runs), or null.
  std::shared_ptr<const ReferenceKv> reference;
  /// Consistent self-attention across the batch's rows (set while the UNet's up blocks run), or null.
  std::shared_ptr<const BatchSharing> batch_sharing;
  /// Set during a KV-encoder run: the blocks record their reference K/V here.
  KvExtraction* extraction = nullptr;
  /// Persistent: how sharding units run (null: in place) and the unit name of each unit module.
  dist::UnitRunner* runner = nullptr;
  std::unordered_map<const torch::nn::Module*, std::string> unit_names;
};

/// Decoupled image cross-attention of one attn2 layer (IP-Adapter): K/V projections of the image
/// tokens; the branch adds s * attention(q, to_k_ip(ip), to_v_ip(ip)) before to_out.0.
struct IpBranch {
  std::shared_ptr<LoraLinearImpl> to_k_ip, to_v_ip;
};

/// Attention over `heads` heads of `head_dim` channels. Query dim -> heads*head_dim; keys and
/// values come from `cross_attention_dim` (= query dim for self-attention).
struct AttentionOptions {
  AttentionOptions(int64_t query_dim, int64_t heads, int64_t head_dim)
      : query_dim_(query_dim), heads_(heads), head_dim_(head_dim), cross_attention_dim_(query_dim) {}
  TORCH_ARG(int64_t, query_dim);
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(int64_t, head_dim);
  TORCH_ARG(int64_t, cross_attention_dim);
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
  /// Shared per-forward inputs (IP tokens); may be null for a plain attention.
  TORCH_ARG(std::shared_ptr<AttentionContext>, context) = nullptr;
};

class AttentionImpl : public torch::nn::Cloneable<AttentionImpl> {
 public:
  explicit AttentionImpl(const AttentionOptions& options);
  void reset() override;
  /// x [B, N, query_dim]; context [B, M, cross_attention_dim] or undefined (self-attention).
  /// `shared` (this block's reference K/V): a self-attention layer attends over
  /// [own K/V ; shared->k/v]; a cross-attention layer uses shared->ip_k/ip_v as its image branch's
  /// K/V instead of projecting the context's image tokens.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context = {}, const BlockKv* shared = nullptr);
  /// softmax(q kᵀ / sqrt(d)) v with heads split from channels: q [B, N, C], k/v [B, M, C].
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const;

  AttentionOptions options;
  LoraLinear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // [0] = LoraLinear (diffusers key `to_out.0`)
  LoraLinear out_proj() const;
  /// Adds the IP-Adapter image branch (cross-attention layers); replaces an earlier one.
  void set_ip_branch(std::shared_ptr<IpBranch> branch) { ip_ = std::move(branch); }
  const std::shared_ptr<IpBranch>& ip_branch() const { return ip_; }

 private:
  std::shared_ptr<IpBranch> ip_;
};
TORCH_MODULE(Attention);

/// GEGLU: proj(x) = [a | g] (each 4C); returns a * gelu(g). diffusers key `net.0.proj`.
class GegluImpl : public torch::nn::Cloneable<GegluImpl> {
 public:
  GegluImpl(int64_t dim_in, int64_t dim_out, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  int64_t dim_in, dim_out;
  at::TensorOptions tensor_options;
  LoraLinear proj{nullptr};
};
TORCH_MODULE(Geglu);

/// FeedForward(dim, mult 4, GEGLU): net.0 = GEGLU(dim, 4dim), net.1 = dropout (no weights),
/// net.2 = Linear(4dim, dim).
class FeedForwardImpl : public torch::nn::Cloneable<FeedForwardImpl> {
 public:
  FeedForwardImpl(int64_t dim, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, N, dim]
  int64_t dim;
  at::TensorOptions tensor_options;
  torch::nn::ModuleList net{nullptr};
};
TORCH_MODULE(FeedForward);

}  // namespace lookahead::model::nn
