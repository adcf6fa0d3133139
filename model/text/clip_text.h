// CLIP text encoders in transformers' layout: CLIPTextModel (SDXL text_encoder, CLIP ViT-L/14)
// and CLIPTextModelWithProjection (text_encoder_2, OpenCLIP ViT-bigG/14 converted to HF), plus
// SDXL's prompt encoding (penultimate hidden states of both, concatenated, and the projected
// pooled output of the second). named_parameters() are the checkpoint keys.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <string>
#include <vector>

#include "model/io/config_keys.h"
#include "model/io/state_dict.h"
#include "model/nn/lora.h"
#include "model/nn/norm.h"

namespace lookahead::model::text {

/// transformers' CLIPTextConfig (the keys a text_encoder*/config.json carries). The member
/// defaults are CLIP ViT-L/14 (clip_l()); from_json starts from reference_defaults() instead.
struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t max_position_embeddings = 77;
  int64_t projection_dim = 768;
  std::string hidden_act = "quick_gelu";  ///< "quick_gelu" or "gelu" (erf)
  double layer_norm_eps = 1e-5;
  /// Pooling picks the first position holding eos_token_id; the legacy value 2 (SDXL's
  /// configs) means "position of the largest id" (transformers keeps that rule for it).
  int64_t eos_token_id = 2;
  int64_t bos_token_id = 0;
  int64_t pad_token_id = 1;

  /// SDXL text_encoder: CLIP ViT-L/14 text tower (123,060,480 parameters).
  static ClipTextConfig clip_l();
  /// SDXL text_encoder_2: OpenCLIP ViT-bigG/14 text tower with projection (694,659,840).
  static ClipTextConfig clip_bigg();
  /// A small random-weight text tower of the same architecture (width 16, one layer, two heads,
  /// projection 8) for tests and the tiny preset. Its 514-entry table fits
  /// ClipTokenizer::byte_level(), whose EOS is the largest id, which the legacy eos_token_id 2 pools.
  static ClipTextConfig tiny();
  /// transformers' CLIPTextConfig() defaults (hidden 512, 8 heads, eos 49407, ...): what an absent key means.
  static ClipTextConfig reference_defaults();
  /// Reads a config.json object: absent keys take reference_defaults(); every key is treated as
  /// keys() says (unsupported values throw naming the key and `origin`).
  static ClipTextConfig from_json(const nlohmann::json& config, const std::string& origin = "CLIP text config");
  /// How every key of transformers' CLIPTextConfig is treated (see io::KeyUse).
  static io::ConfigKeyTable keys();
  static ClipTextConfig from_file(const std::string& config_json);
};

/// nn.Embedding's table (`weight` [num, dim]) creatable on any device, meta included.
class ClipEmbeddingImpl : public torch::nn::Cloneable<ClipEmbeddingImpl> {
 public:
  ClipEmbeddingImpl(int64_t num, int64_t dim, at::TensorOptions tensor_options = {});
  void reset() override;
  at::Tensor forward(const at::Tensor& ids);  // [...] int64 -> [..., dim]
  int64_t num, dim;
  at::TensorOptions tensor_options;
  at::Tensor weight;
};
TORCH_MODULE(ClipEmbedding);

/// Multi-head self-attention with biased q/k/v/out projections (`self_attn`).
class ClipAttentionImpl : public torch::nn::Cloneable<ClipAttentionImpl> {
 public:
  ClipAttentionImpl(int64_t dim, int64_t heads, at::TensorOptions tensor_options = {});
  void reset() override;
  at::Tensor forward(const at::Tensor& x, bool causal);  // [B, S, C] -> [B, S, C]
  int64_t dim, heads;
  at::TensorOptions tensor_options;
  nn::LoraLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(ClipAttention);

/// fc1 -> activation -> fc2 (`mlp`).
class ClipMlpImpl : public torch::nn::Cloneable<ClipMlpImpl> {
 public:
  ClipMlpImpl(int64_t dim, int64_t inner, std::string act, at::TensorOptions tensor_options = {});
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [..., dim] -> [..., dim]
  int64_t dim, inner;
  std::string act;
  at::TensorOptions tensor_options;
  nn::LoraLinear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(ClipMlp);

/// Pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)). Shared with the vision tower.
class ClipEncoderLayerImpl : public torch::nn::Cloneable<ClipEncoderLayerImpl> {
 public:
  ClipEncoderLayerImpl(int64_t dim, int64_t heads, int64_t inner, std::string act, double eps,
                       at::TensorOptions tensor_options = {});
  void reset() override;
  at::Tensor forward(const at::Tensor& x, bool causal);  // [B, S, C] -> [B, S, C]
  int64_t dim, heads, inner;
  std::string act;
  double eps;
  at::TensorOptions tensor_options;
  ClipAttention self_attn{nullptr};
  nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  ClipMlp mlp{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

/// The layer stack (`encoder.layers.N`), shared with the vision tower.
class ClipEncoderImpl : public torch::nn::Cloneable<ClipEncoderImpl> {
 public:
  ClipEncoderImpl(int64_t num_layers, int64_t dim, int64_t heads, int64_t inner, std::string act, double eps,
                  at::TensorOptions tensor_options = {});
  void reset() override;
  /// [B, S, C] -> [B, S, C]. Appends x and every layer's output to `hidden_states` when given;
  /// sets `penultimate` (hidden_states[-2]: the last layer's input) when given.
  at::Tensor forward(const at::Tensor& x, bool causal, std::vector<at::Tensor>* hidden_states = nullptr,
                     at::Tensor* penultimate = nullptr);
  int64_t num_layers, dim, heads, inner;
  std::string act;
  double eps;
  at::TensorOptions tensor_options;
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(ClipEncoder);

/// Token + position embeddings (`text_model.embeddings`).
class ClipTextEmbeddingsImpl : public torch::nn::Cloneable<ClipTextEmbeddingsImpl> {
 public:
  ClipTextEmbeddingsImpl(const ClipTextConfig& config, at::TensorOptions tensor_options = {});
  void reset() override;
  at::Tensor forward(const at::Tensor& ids);  // [B, S] int64 -> [B, S, C]
  ClipTextConfig config;
  at::TensorOptions tensor_options;
  ClipEmbedding token_embedding{nullptr}, position_embedding{nullptr};
};
TORCH_MODULE(ClipTextEmbeddings);

/// What a text encoder returns.
struct ClipTextOutput {
  at::Tensor last_hidden_state;           ///< [B, S, C], after final_layer_norm
  at::Tensor penultimate_hidden_state;    ///< [B, S, C] = hidden_states[-2] (no final norm)
  std::vector<at::Tensor> hidden_states;  ///< embeddings, then every layer's output (when asked)
  at::Tensor pooler_output;               ///< [B, C], last_hidden_state at the EOS position
  at::Tensor text_embeds;                 ///< [B, P] = text_projection(pooler_output), if projected
};

/// The text tower (`text_model`): embeddings, encoder.layers.N, final_layer_norm.
class ClipTextTransformerImpl : public torch::nn::Cloneable<ClipTextTransformerImpl> {
 public:
  ClipTextTransformerImpl(const ClipTextConfig& config, at::TensorOptions tensor_options = {});
  void reset() override;
  /// input_ids [B, S] int64 (S <= max_position_embeddings), causal self-attention.
  ClipTextOutput forward(const at::Tensor& input_ids, bool output_hidden_states = false);
  /// Positions the pooled output is read from: [B] int64.
  at::Tensor eos_positions(const at::Tensor& input_ids) const;
  ClipTextConfig config;
  at::TensorOptions tensor_options;
  ClipTextEmbeddings embeddings{nullptr};
  ClipEncoder encoder{nullptr};
  nn::LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(ClipTextTransformer);

/// CLIPTextModel (with_projection = false) or CLIPTextModelWithProjection (adds
/// `text_projection`, bias-free [projection_dim, hidden_size]).
class ClipTextModelImpl : public torch::nn::Cloneable<ClipTextModelImpl> {
 public:
  ClipTextModelImpl(const ClipTextConfig& config, bool with_projection, at::TensorOptions tensor_options = {});
  void reset() override;
  ClipTextOutput forward(const at::Tensor& input_ids, bool output_hidden_states = false);
  ClipTextConfig config;
  bool with_projection;
  at::TensorOptions tensor_options;
  ClipTextTransformer text_model{nullptr};
  nn::LoraLinear text_projection{nullptr};
};
TORCH_MODULE(ClipTextModel);

/// Brings checkpoint keys to this module tree's names: drops `*position_ids` buffers and adds the
/// `text_model.` prefix that transformers >= 5 omits when saving a bare CLIPTextModel.
std::map<std::string, at::Tensor> normalize_clip_text_keys(const std::map<std::string, at::Tensor>& tensors);

/// Loads safetensors weights (normalized keys) into `model`; strict unless told otherwise.
io::LoadReport load_clip_text_weights(ClipTextModel& model, const std::map<std::string, at::Tensor>& tensors,
                                      const std::string& origin, bool strict = true);

/// Builds a text encoder from a transformers folder (config.json + model.safetensors);
/// with_projection follows the config's architectures entry (…WithProjection) unless forced.
/// `weights_name` picks another file of the folder (e.g. a variant's `model.fp16.safetensors`).
ClipTextModel clip_text_from_pretrained(const std::string& folder, at::TensorOptions tensor_options = {},
                                        const std::string& weights_name = "model.safetensors");

/// SDXL prompt conditioning.
struct SdxlPromptEmbeds {
  at::Tensor context;  ///< [B, 77, 768 + 1280]: penultimate states of te1 then te2
  at::Tensor pooled;   ///< [B, 1280]: te2's text_embeds (the UNet's `text_embeds` added condition)
};
/// diffusers' StableDiffusionXLPipeline.encode_prompt (clip_skip unset): ids1 from tokenizer/,
/// ids2 from tokenizer_2/ (pad 0), both [B, 77].
SdxlPromptEmbeds encode_sdxl_prompt(ClipTextModel& te1, ClipTextModel& te2, const at::Tensor& ids1,
                                    const at::Tensor& ids2);

}  // namespace lookahead::model::text
