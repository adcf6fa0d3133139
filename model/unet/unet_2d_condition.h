// UNet2DConditionModel of the SDXL family as a libtorch module whose named_parameters() are
// exactly diffusers' state-dict keys. Built from a UNetConfig on any device (the meta device
// builds the full SDXL UNet without allocating its 10 GB of weights).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <string>
#include <vector>

#include "model/nn/embeddings.h"
#include "model/unet/unet_blocks.h"
#include "model/unet/unet_config.h"

namespace lookahead::model::unet {

/// SDXL conditioning: text embeddings and the micro-conditioning of `addition_embed_type = text_time`.
struct UNetInputs {
  at::Tensor sample;                 // [B, in_channels, h, w]
  at::Tensor timestep;               // [] or [B], integer or fractional
  at::Tensor encoder_hidden_states;  // [B, M, cross_attention_dim]
  at::Tensor text_embeds;            // [B, 1280] (text_time only)
  at::Tensor time_ids;               // [B, 6]    (text_time only)
  at::Tensor ip_tokens;              // [B, T_ip, D] IP-Adapter image tokens (attn2 layers with an IP branch)
  double ip_scale = 1.0;             // weight of the image branch
  /// Reference K/V of a KV-encoder run: self-attention extends over them, cross-attention uses
  /// their IP K/V (decoder and LCM runs). Null: plain attention.
  std::shared_ptr<const nn::ReferenceKv> reference;
  /// Consistent self-attention in the up blocks' attn1 layers: rows of one group see a random
  /// subset of each other's tokens (StoryDiffusion). Null: off. Does not compose with `reference`.
  std::shared_ptr<const nn::BatchSharing> batch_sharing;
  /// Adapters that run (by name, e.g. {"lcm"}); unset: every attached adapter runs.
  std::optional<std::vector<std::string>> adapters;
};

/// A sharding unit: one module the sharded engine gathers, runs and releases as a whole, named by
/// its diffusers path. Units cover every parameter exactly once, in forward execution order.
struct Unit {
  std::string name;                            ///< e.g. "down_blocks.1.attentions.0"
  std::shared_ptr<torch::nn::Module> module;   ///< null for a stem made of several modules
  std::vector<std::string> members;            ///< stems: the top-level modules it groups
};

/// Example:
///   UNet2DConditionModel unet(UNetConfig::sdxl_base(), at::TensorOptions().device(at::kMeta));
///   at::Tensor eps = unet->forward(inputs);   // [B, 4, h, w]
class UNet2DConditionModelImpl : public torch::nn::Cloneable<UNet2DConditionModelImpl> {
 public:
  explicit UNet2DConditionModelImpl(UNetConfig config, at::TensorOptions tensor_options = {});
  void reset() override;
  /// ε̂ (or whatever the network was trained to predict) for `in`.
  at::Tensor forward(const UNetInputs& in);
  /// Runs conv_in, the down blocks, the mid block and up_blocks[0..last_up_block], recording every
  /// transformer block's reference K/V into `extraction` (the KV encoder); returns the hidden state
  /// of up_blocks[last_up_block] before its upsampler (nothing downstream of it reaches any K/V).
  at::Tensor forward_encoder(const UNetInputs& in, int64_t last_up_block, nn::KvExtraction& extraction);
  /// Runs every sharding unit through `runner` (null: in place). The runner must outlive its use.
  void set_unit_runner(dist::UnitRunner* runner);
  /// Every BasicTransformerBlock with its diffusers path; position = the block's `index`.
  std::vector<std::pair<std::string, BasicTransformerBlock>> transformer_blocks();
  /// Time embedding `emb` [B, time_embed_dim] (timestep + text_time conditioning).
  at::Tensor embed_time(const UNetInputs& in);
  /// The sharding units in execution order (stems: "stem_in" = conv_in + time/add embeddings,
  /// "stem_out" = conv_norm_out + conv_out).
  std::vector<Unit> units();

  const UNetConfig& config() const { return config_; }
  /// Every cross-attention (attn2) layer with its diffusers path, in diffusers' `attn_processors`
  /// order (down_blocks, then up_blocks, then mid_block) — the order IP-Adapter checkpoints number.
  std::vector<std::pair<std::string, nn::Attention>> cross_attention_layers();

  nn::LoraConv2d conv_in{nullptr}, conv_out{nullptr};
  nn::TimestepEmbedding time_embedding{nullptr}, add_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  MidBlock mid_block{nullptr};
  nn::GroupNorm conv_norm_out{nullptr};

 private:
  at::Tensor run(const UNetInputs& in, int64_t last_up_block, nn::KvExtraction* extraction);

  UNetConfig config_;
  at::TensorOptions tensor_options_;
  std::shared_ptr<nn::AttentionContext> attention_context_;
};
TORCH_MODULE(UNet2DConditionModel);

/// (tensors, elements) of a module's parameters, computed from shapes only (works on meta).
std::pair<int64_t, int64_t> count_parameters(const torch::nn::Module& module);

}  // namespace lookahead::model::unet
