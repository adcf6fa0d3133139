// CLIP vision tower in transformers' layout: CLIPVisionModelWithProjection (the IP-Adapter image
// encoder, OpenCLIP ViT-H/14; IP-Adapter Plus reads its penultimate hidden states) and CLIPModel
// (both towers and projections, for the CLIP score), plus CLIP image preprocessing.
// named_parameters() are the checkpoint keys (including HF's `pre_layrnorm` spelling).
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <string>
#include <vector>

#include "model/io/config_keys.h"
#include "model/io/state_dict.h"
#include "model/nn/lora.h"
#include "model/nn/norm.h"
#include "model/text/clip_text.h"

namespace lookahead::model::vision {

/// transformers' CLIPVisionConfig. The member defaults are ViT-H/14 (vit_h14()); from_json starts
/// from reference_defaults() instead.
struct ClipVisionConfig {
  int64_t hidden_size = 1280;
  int64_t intermediate_size = 5120;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 16;
  int64_t num_channels = 3;
  int64_t image_size = 224;
  int64_t patch_size = 14;
  int64_t projection_dim = 1024;
  std::string hidden_act = "gelu";  ///< "quick_gelu" or "gelu"
  double layer_norm_eps = 1e-5;

  /// IP-Adapter's image encoder (OpenCLIP ViT-H/14, laion2B), the defaults above.
  static ClipVisionConfig vit_h14();
  /// OpenAI CLIP ViT-L/14 at 224² (openai/clip-vit-large-patch14's vision tower, the CLIP score's
  /// model): hidden 1024, 24 layers, 16 heads, quick_gelu, projection 768.
  static ClipVisionConfig vit_l14();
  /// A small random-weight vision tower of the same architecture (width 16, one layer, two heads,
  /// 32x32 images in 8x8 patches, projection 8) for tests and the tiny preset.
  static ClipVisionConfig tiny();
  /// transformers' CLIPVisionConfig() defaults (ViT-B/32: hidden 768, patch 32, quick_gelu, ...):
  /// what an absent key means.
  static ClipVisionConfig reference_defaults();
  /// Reads a CLIPVisionConfig object: absent keys take reference_defaults(); every key is treated
  /// as keys() says (unsupported values throw naming the key and `origin`).
  static ClipVisionConfig from_json(const nlohmann::json& config, const std::string& origin = "CLIP vision config");
  /// How every key of transformers' CLIPVisionConfig is treated (see io::KeyUse).
  static io::ConfigKeyTable keys();
  /// A CLIPVisionConfig file, or a CLIPConfig one (its `vision_config`).
  static ClipVisionConfig from_file(const std::string& config_json);
};

/// class token, patch conv (no bias, stride = patch) and position table (`embeddings`).
class ClipVisionEmbeddingsImpl : public torch::nn::Cloneable<ClipVisionEmbeddingsImpl> {
 public:
  ClipVisionEmbeddingsImpl(const ClipVisionConfig& config, at::TensorOptions tensor_options = {});
  void reset() override;
  at::Tensor forward(const at::Tensor& pixel_values);  // [B, 3, S, S] -> [B, 1 + (S/p)^2, C]
  ClipVisionConfig config;
  at::TensorOptions tensor_options;
  at::Tensor class_embedding;  // [C]
  nn::LoraConv2d patch_embedding{nullptr};
  text::ClipEmbedding position_embedding{nullptr};
};
TORCH_MODULE(ClipVisionEmbeddings);

/// What the vision tower returns.
struct ClipVisionOutput {
  at::Tensor last_hidden_state;           ///< [B, T, C] (no post_layernorm)
  at::Tensor penultimate_hidden_state;    ///< [B, T, C] = hidden_states[-2] (IP-Adapter Plus input)
  std::vector<at::Tensor> hidden_states;  ///< pre_layrnorm output, then every layer's (when asked)
  at::Tensor pooler_output;               ///< [B, C] = post_layernorm(class token)
  at::Tensor image_embeds;                ///< [B, P] = visual_projection(pooler_output), if projected
};

/// The vision tower (`vision_model`): embeddings, pre_layrnorm, encoder.layers.N, post_layernorm.
class ClipVisionTransformerImpl : public torch::nn::Cloneable<ClipVisionTransformerImpl> {
 public:
  ClipVisionTransformerImpl(const ClipVisionConfig& config, at::TensorOptions tensor_options = {});
  void reset() override;
  ClipVisionOutput forward(const at::Tensor& pixel_values, bool output_hidden_states = false);
  ClipVisionConfig config;
  at::TensorOptions tensor_options;
  ClipVisionEmbeddings embeddings{nullptr};
  nn::LayerNorm pre_layrnorm{nullptr};
  text::ClipEncoder encoder{nullptr};
  nn::LayerNorm post_layernorm{nullptr};
};
TORCH_MODULE(ClipVisionTransformer);

/// CLIPVisionModel (with_projection = false) or CLIPVisionModelWithProjection (adds the bias-free
/// `visual_projection` [projection_dim, hidden_size]).
class ClipVisionModelImpl : public torch::nn::Cloneable<ClipVisionModelImpl> {
 public:
  ClipVisionModelImpl(const ClipVisionConfig& config, bool with_projection, at::TensorOptions tensor_options = {});
  void reset() override;
  ClipVisionOutput forward(const at::Tensor& pixel_values, bool output_hidden_states = false);
  ClipVisionConfig config;
  bool with_projection;
  at::TensorOptions tensor_options;
  ClipVisionTransformer vision_model{nullptr};
  nn::LoraLinear visual_projection{nullptr};
};
TORCH_MODULE(ClipVisionModel);

/// CLIPModel's similarity outputs.
struct ClipModelOutput {
  at::Tensor logits_per_image;  ///< [B_img, B_txt] = exp(logit_scale) * cos(image, text)
  at::Tensor logits_per_text;   ///< [B_txt, B_img]
  at::Tensor text_embeds;       ///< [B_txt, P], L2-normalized
  at::Tensor image_embeds;      ///< [B_img, P], L2-normalized
};

/// CLIPModel: text_model, vision_model, text_projection, visual_projection, logit_scale.
class ClipModelImpl : public torch::nn::Cloneable<ClipModelImpl> {
 public:
  ClipModelImpl(const text::ClipTextConfig& text_config, const ClipVisionConfig& vision_config,
                int64_t projection_dim, at::TensorOptions tensor_options = {});
  void reset() override;
  ClipModelOutput forward(const at::Tensor& input_ids, const at::Tensor& pixel_values);
  /// CLIP score (torchmetrics' definition): 100 * max(cos(image_i, text_i), 0), per pair: [B].
  at::Tensor clip_score(const at::Tensor& input_ids, const at::Tensor& pixel_values);
  text::ClipTextConfig text_config;
  ClipVisionConfig vision_config;
  int64_t projection_dim;
  at::TensorOptions tensor_options;
  text::ClipTextTransformer text_model{nullptr};
  ClipVisionTransformer vision_model{nullptr};
  nn::LoraLinear text_projection{nullptr}, visual_projection{nullptr};
  at::Tensor logit_scale;  // scalar
};
TORCH_MODULE(ClipModel);

/// Drops `*position_ids` buffers from a checkpoint's tensors.
std::map<std::string, at::Tensor> drop_position_ids(const std::map<std::string, at::Tensor>& tensors);

/// Builds an image encoder from a transformers folder (config.json + model.safetensors); the
/// projection is present when the weights carry `visual_projection.weight`.
ClipVisionModel clip_vision_from_pretrained(const std::string& folder, at::TensorOptions tensor_options = {});

/// How every key of transformers' CLIPConfig (a CLIPModel folder's config.json) is treated.
io::ConfigKeyTable clip_model_config_keys();
/// Builds a CLIPModel from a transformers folder (config.json with text_config / vision_config).
ClipModel clip_model_from_pretrained(const std::string& folder, at::TensorOptions tensor_options = {});

/// CLIP image preprocessing: images [B, 3, H, W] in [0, 1] -> resize the shortest side to `size`
/// (bicubic, antialiased), center crop size x size, normalize with CLIP's mean / std.
at::Tensor clip_preprocess(const at::Tensor& images, int64_t size = 224);

}  // namespace lookahead::model::vision
