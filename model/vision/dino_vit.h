// The DINO-style VisionTransformer of the `dreamsim` package (feature_extraction/
// vision_transformer.py, itself facebookresearch/dino's): a pre-LN ViT with a class token, a
// learned position table, a fused `qkv` projection and a final LayerNorm. The package loads all
// three of its ensemble's networks into this class: DINO ViT-B/16 as is, and OpenAI CLIP /
// OpenCLIP ViT-B/16 with a LayerNorm in the `pos_drop` slot (CLIP's ln_pre), LayerNorm eps 1e-5
// and, for OpenAI CLIP, QuickGELU. named_parameters() are the package's state-dict keys:
// cls_token, pos_embed, patch_embed.proj.*, pos_drop.* (CLIP variants), blocks.N.{norm1,
// attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*, norm.*.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "model/nn/lora.h"
#include "model/nn/norm.h"

namespace lookahead::model::vision {

/// MLP activation of a block.
enum class DinoVitActivation {
  kGelu,       ///< nn.GELU (erf): DINO and OpenCLIP
  kQuickGelu,  ///< x * sigmoid(1.702 x): OpenAI CLIP
};

/// Hyper-parameters of the package's VisionTransformer. The defaults are DINO ViT-B/16 as
/// torch hub's `dino_vitb16` builds it (vit_base(patch_size=16)).
struct DinoVitOptions {
  TORCH_ARG(int64_t, image_size) = 224;  ///< input side; the position table holds (size/patch)^2 + 1 rows
  TORCH_ARG(int64_t, patch_size) = 16;
  TORCH_ARG(int64_t, in_chans) = 3;
  TORCH_ARG(int64_t, embed_dim) = 768;
  TORCH_ARG(int64_t, depth) = 12;
  TORCH_ARG(int64_t, num_heads) = 12;
  TORCH_ARG(int64_t, mlp_hidden) = 3072;  ///< int(embed_dim * mlp_ratio), mlp_ratio 4 in every ensemble network
  TORCH_ARG(bool, qkv_bias) = true;
  TORCH_ARG(double, layer_norm_eps) = 1e-6;
  TORCH_ARG(DinoVitActivation, activation) = DinoVitActivation::kGelu;
  /// A LayerNorm in the `pos_drop` slot, applied after the position table (the CLIP variants'
  /// ln_pre); false: pos_drop is the parameter-free Dropout, the identity in eval.
  TORCH_ARG(bool, pre_norm) = false;
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();

 public:  // TORCH_ARG leaves the access private
  /// DINO ViT-B/16 (torch hub facebookresearch/dino `dino_vitb16`).
  static DinoVitOptions dino_vitb16();
  /// OpenAI CLIP ViT-B/16 as the package's load_clip_as_dino builds it.
  static DinoVitOptions clip_vitb16();
  /// OpenCLIP ViT-B/16 as the package's load_open_clip_as_dino builds it.
  static DinoVitOptions open_clip_vitb16();
  /// Tokens per image: (image_size / patch_size)^2 + 1.
  int64_t num_tokens() const;
};

/// `attn`: fused qkv [3C, C] (+bias), softmax(q kᵀ / sqrt(C / heads)) v, output `proj`.
class DinoVitAttentionImpl : public torch::nn::Cloneable<DinoVitAttentionImpl> {
 public:
  explicit DinoVitAttentionImpl(const DinoVitOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, T, C] -> [B, T, C]
  DinoVitOptions options;
  nn::LoraLinear qkv{nullptr}, proj{nullptr};
};
TORCH_MODULE(DinoVitAttention);

/// `mlp`: fc1 -> activation -> fc2.
class DinoVitMlpImpl : public torch::nn::Cloneable<DinoVitMlpImpl> {
 public:
  explicit DinoVitMlpImpl(const DinoVitOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, T, C] -> [B, T, C]
  DinoVitOptions options;
  nn::LoraLinear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(DinoVitMlp);

/// One pre-LN block: x + attn(norm1(x)), then + mlp(norm2(x)).
class DinoVitBlockImpl : public torch::nn::Cloneable<DinoVitBlockImpl> {
 public:
  explicit DinoVitBlockImpl(const DinoVitOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, T, C] -> [B, T, C]
  DinoVitOptions options;
  nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  DinoVitAttention attn{nullptr};
  DinoVitMlp mlp{nullptr};
};
TORCH_MODULE(DinoVitBlock);

/// The whole ViT. Only inputs of options.image_size are taken: at that size the package uses the
/// position table as stored (its interpolate_pos_encoding returns it unchanged), so no
/// interpolation is ported.
class DinoVisionTransformerImpl : public torch::nn::Cloneable<DinoVisionTransformerImpl> {
 public:
  explicit DinoVisionTransformerImpl(const DinoVitOptions& options = {});
  void reset() override;
  /// Patch embedding, class token, position table and (pre_norm) the pos_drop LayerNorm.
  at::Tensor prepare_tokens(const at::Tensor& x);  // [B, 3, S, S] -> [B, T, C]
  /// Output of block `layer` (0-based), before the final norm: what the package's forward hook on
  /// blocks[layer] records (extract_descriptors). Later blocks are not run.
  at::Tensor block_tokens(const at::Tensor& x, int64_t layer);  // [B, 3, S, S] -> [B, T, C]
  /// The package's forward: norm(all blocks)[:, 0], the normalized class token.
  at::Tensor forward(const at::Tensor& x);  // [B, 3, S, S] -> [B, C]

  DinoVitOptions options;
  at::Tensor cls_token;                // [1, 1, C]
  at::Tensor pos_embed;                // [1, T, C]
  nn::LoraConv2d patch_proj{nullptr};  // `patch_embed.proj`, kernel = stride = patch, with bias
  nn::LayerNorm pos_drop{nullptr};     // pre_norm only
  std::vector<DinoVitBlock> blocks;
  nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(DinoVisionTransformer);

}  // namespace lookahead::model::vision
