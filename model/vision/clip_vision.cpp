// CLIP vision tower (ViT with class token, pre/post LayerNorm), CLIPModel's similarity head and
// CLIP image preprocessing.
#include "model/vision/clip_vision.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <utility>

#include "model/io/config_keys.h"
#include "model/io/safetensors.h"
#include "model/text/clip_encoder_config.h"

namespace lookahead::model::vision {
namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  TORCH_CHECK(in, "clip: cannot open ", path);
  return nlohmann::json::parse(in);
}

nn::LayerNorm layer_norm(int64_t dim, double eps, at::TensorOptions tensor_options) {
  return nn::LayerNorm(nn::LayerNormOptions(dim).eps(eps).tensor_options(tensor_options));
}

// Every key of transformers' CLIPVisionConfig (5.x, its PreTrainedConfig keys included). Absent
// keys take transformers' defaults (reference_defaults()), not the ViT-H/14 values of vit_h14().
constexpr auto kKeys = io::join_keys(
    text::kClipEncoderKeys,
    std::to_array<io::ConfigKey>({
        {"architectures", io::KeyUse::kMetadata, nullptr,
         "the projection is built when the weights hold visual_projection.weight"},
        {"num_channels", io::KeyUse::kHonoured, nullptr, "image channels"},
        {"image_size", io::KeyUse::kHonoured, nullptr, "input resolution (position table size)"},
        {"patch_size", io::KeyUse::kHonoured, nullptr, "patch convolution kernel and stride"},
    }));

// Every key of transformers' CLIPConfig (5.x, its PreTrainedConfig keys included) plus the
// legacy text_config_dict / vision_config_dict it still merges.
constexpr auto kClipModelKeys = io::join_keys(
    text::kPretrainedConfigKeys,
    std::to_array<io::ConfigKey>({
        {"architectures", io::KeyUse::kMetadata, nullptr,
         "the class name; clip_model_from_pretrained builds CLIPModel"},
        {"logit_scale_init_value", io::KeyUse::kMetadata, nullptr, "initial logit_scale; the weights carry it"},
        {"projection_dim", io::KeyUse::kHonoured, nullptr, "text_projection / visual_projection width (default 512)"},
        {"text_config", io::KeyUse::kHonoured, nullptr, "the CLIPTextConfig (ClipTextConfig::keys())"},
        {"vision_config", io::KeyUse::kHonoured, nullptr, "the CLIPVisionConfig (ClipVisionConfig::keys())"},
        {"text_config_dict", io::KeyUse::kHonoured, nullptr,
         "legacy: when set it replaces text_config (absent keys: defaults), as transformers does"},
        {"vision_config_dict", io::KeyUse::kHonoured, nullptr,
         "legacy: when set it replaces vision_config (absent keys: defaults), as transformers does"},
    }));

// transformers' CLIPConfig: a legacy `<tower>_config_dict`, completed with the class defaults,
// replaces `<tower>_config` entirely; otherwise `<tower>_config` (absent or null: all defaults).
nlohmann::json tower_config(const nlohmann::json& j, const std::string& tower, const std::string& origin) {
  for (const std::string& key : {tower + "_config_dict", tower + "_config"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    TORCH_CHECK(it->is_object(), origin, ": ", key, " must be an object");
    return *it;
  }
  return nlohmann::json::object();
}

}  // namespace

io::ConfigKeyTable ClipVisionConfig::keys() { return kKeys; }
io::ConfigKeyTable clip_model_config_keys() { return kClipModelKeys; }

ClipVisionConfig ClipVisionConfig::reference_defaults() {
  ClipVisionConfig c;
  c.hidden_size = 768;
  c.intermediate_size = 3072;
  c.num_hidden_layers = 12;
  c.num_attention_heads = 12;
  c.patch_size = 32;
  c.projection_dim = 512;
  c.hidden_act = "quick_gelu";
  return c;
}

ClipVisionConfig ClipVisionConfig::vit_h14() { return ClipVisionConfig{}; }

ClipVisionConfig ClipVisionConfig::vit_l14() {
  ClipVisionConfig c;
  c.hidden_size = 1024;
  c.intermediate_size = 4096;
  c.num_hidden_layers = 24;
  c.num_attention_heads = 16;
  c.projection_dim = 768;
  c.hidden_act = "quick_gelu";
  return c;
}

ClipVisionConfig ClipVisionConfig::tiny() {
  ClipVisionConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.image_size = 32;
  c.patch_size = 8;
  c.projection_dim = 8;
  return c;
}

ClipVisionConfig ClipVisionConfig::from_json(const nlohmann::json& j, const std::string& origin) {
  io::refuse_unsupported(j, kKeys, origin);
  using C = ClipVisionConfig;
  return text::read_clip_encoder_config<C>(j, origin, reference_defaults(),
                                           {{"hidden_size", &C::hidden_size},
                                            {"intermediate_size", &C::intermediate_size},
                                            {"num_hidden_layers", &C::num_hidden_layers},
                                            {"num_attention_heads", &C::num_attention_heads},
                                            {"num_channels", &C::num_channels},
                                            {"image_size", &C::image_size},
                                            {"patch_size", &C::patch_size},
                                            {"projection_dim", &C::projection_dim}});
}

ClipVisionConfig ClipVisionConfig::from_file(const std::string& config_json) {
  const auto json = read_json(config_json);
  return from_json(json.contains("vision_config") ? json["vision_config"] : json, config_json);
}

ClipVisionEmbeddingsImpl::ClipVisionEmbeddingsImpl(const ClipVisionConfig& config, at::TensorOptions tensor_options)
    : config(config), tensor_options(tensor_options) {
  reset();
}

void ClipVisionEmbeddingsImpl::reset() {
  class_embedding = register_parameter("class_embedding", at::empty({config.hidden_size}, tensor_options));
  if (!class_embedding.is_meta()) {
    at::NoGradGuard no_grad;
    class_embedding.normal_();
  }
  patch_embedding = register_module(
      "patch_embedding", nn::LoraConv2d(nn::Conv2dOptions(config.num_channels, config.hidden_size, config.patch_size)
                                            .stride(config.patch_size)
                                            .bias(false)
                                            .tensor_options(tensor_options)));
  const int64_t grid = config.image_size / config.patch_size;
  position_embedding =
      register_module("position_embedding", text::ClipEmbedding(grid * grid + 1, config.hidden_size, tensor_options));
}

at::Tensor ClipVisionEmbeddingsImpl::forward(const at::Tensor& pixel_values) {
  TORCH_CHECK(pixel_values.dim() == 4 && pixel_values.size(2) == config.image_size &&
                  pixel_values.size(3) == config.image_size,
              "clip vision: pixel_values must be [B, ", config.num_channels, ", ", config.image_size, ", ",
              config.image_size, "], got ", pixel_values.sizes());
  const int64_t b = pixel_values.size(0);
  at::Tensor patches = patch_embedding->forward(pixel_values.to(patch_embedding->weight.dtype()));  // [B, C, g, g]
  patches = patches.flatten(2).transpose(1, 2);                                                    // [B, g*g, C]
  at::Tensor cls = class_embedding.to(patches.dtype()).expand({b, 1, config.hidden_size});
  return at::cat({cls, patches}, 1) + position_embedding->weight;  // [B, 1 + g*g, C]
}

ClipVisionTransformerImpl::ClipVisionTransformerImpl(const ClipVisionConfig& config, at::TensorOptions tensor_options)
    : config(config), tensor_options(tensor_options) {
  reset();
}

void ClipVisionTransformerImpl::reset() {
  embeddings = register_module("embeddings", ClipVisionEmbeddings(config, tensor_options));
  pre_layrnorm = register_module("pre_layrnorm", layer_norm(config.hidden_size, config.layer_norm_eps, tensor_options));
  encoder = register_module("encoder", text::ClipEncoder(config.num_hidden_layers, config.hidden_size,
                                                         config.num_attention_heads, config.intermediate_size,
                                                         config.hidden_act, config.layer_norm_eps, tensor_options));
  post_layernorm =
      register_module("post_layernorm", layer_norm(config.hidden_size, config.layer_norm_eps, tensor_options));
}

ClipVisionOutput ClipVisionTransformerImpl::forward(const at::Tensor& pixel_values, bool output_hidden_states) {
  ClipVisionOutput out;
  at::Tensor h = pre_layrnorm->forward(embeddings->forward(pixel_values));  // [B, T, C]
  h = encoder->forward(h, /*causal=*/false, output_hidden_states ? &out.hidden_states : nullptr,
                       &out.penultimate_hidden_state);
  out.last_hidden_state = h;
  out.pooler_output = post_layernorm->forward(h.select(1, 0));  // [B, C]
  return out;
}

ClipVisionModelImpl::ClipVisionModelImpl(const ClipVisionConfig& config, bool with_projection,
                                         at::TensorOptions tensor_options)
    : config(config), with_projection(with_projection), tensor_options(tensor_options) {
  reset();
}

void ClipVisionModelImpl::reset() {
  vision_model = register_module("vision_model", ClipVisionTransformer(config, tensor_options));
  if (with_projection) {
    visual_projection = register_module(
        "visual_projection", nn::LoraLinear(nn::LinearOptions(config.hidden_size, config.projection_dim)
                                                .bias(false)
                                                .tensor_options(tensor_options)));
  }
}

ClipVisionOutput ClipVisionModelImpl::forward(const at::Tensor& pixel_values, bool output_hidden_states) {
  ClipVisionOutput out = vision_model->forward(pixel_values, output_hidden_states);
  if (with_projection) out.image_embeds = visual_projection->forward(out.pooler_output);
  return out;
}

ClipModelImpl::ClipModelImpl(const text::ClipTextConfig& text_config, const ClipVisionConfig& vision_config,
                             int64_t projection_dim, at::TensorOptions tensor_options)
    : text_config(text_config), vision_config(vision_config), projection_dim(projection_dim),
      tensor_options(tensor_options) {
  reset();
}

void ClipModelImpl::reset() {
  text_model = register_module("text_model", text::ClipTextTransformer(text_config, tensor_options));
  vision_model = register_module("vision_model", ClipVisionTransformer(vision_config, tensor_options));
  visual_projection = register_module(
      "visual_projection",
      nn::LoraLinear(nn::LinearOptions(vision_config.hidden_size, projection_dim).bias(false).tensor_options(tensor_options)));
  text_projection = register_module(
      "text_projection",
      nn::LoraLinear(nn::LinearOptions(text_config.hidden_size, projection_dim).bias(false).tensor_options(tensor_options)));
  logit_scale = register_parameter("logit_scale", at::empty({}, tensor_options));
  if (!logit_scale.is_meta()) {
    at::NoGradGuard no_grad;
    logit_scale.fill_(std::log(1.0 / 0.07));
  }
}

ClipModelOutput ClipModelImpl::forward(const at::Tensor& input_ids, const at::Tensor& pixel_values) {
  ClipModelOutput out;
  at::Tensor image = visual_projection->forward(vision_model->forward(pixel_values).pooler_output);  // [Bi, P]
  at::Tensor text = text_projection->forward(text_model->forward(input_ids).pooler_output);          // [Bt, P]
  out.image_embeds = image / image.norm(2, -1, true);
  out.text_embeds = text / text.norm(2, -1, true);
  out.logits_per_text = at::matmul(out.text_embeds, out.image_embeds.t()) * logit_scale.exp();  // [Bt, Bi]
  out.logits_per_image = out.logits_per_text.t();
  return out;
}

at::Tensor ClipModelImpl::clip_score(const at::Tensor& input_ids, const at::Tensor& pixel_values) {
  const ClipModelOutput o = forward(input_ids, pixel_values);
  TORCH_CHECK(o.image_embeds.size(0) == o.text_embeds.size(0), "clip_score: needs as many prompts as images");
  return (100.0 * (o.image_embeds * o.text_embeds).sum(-1)).clamp_min(0.0);  // [B]
}

std::map<std::string, at::Tensor> drop_position_ids(const std::map<std::string, at::Tensor>& tensors) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [key, value] : tensors) {
    if (key.size() >= 12 && key.compare(key.size() - 12, 12, "position_ids") == 0) continue;
    out.emplace(key, value);
  }
  return out;
}

ClipVisionModel clip_vision_from_pretrained(const std::string& folder, at::TensorOptions tensor_options) {
  namespace fs = std::filesystem;
  const fs::path dir(folder);
  auto json = read_json((dir / "config.json").string());
  const ClipVisionConfig config = ClipVisionConfig::from_json(json.contains("vision_config") ? json["vision_config"] : json,
                                                              (dir / "config.json").string());
  const std::string weights_path = (dir / "model.safetensors").string();
  // transformers >= 5 saves a bare CLIPVisionModel without the `vision_model.` prefix.
  std::map<std::string, at::Tensor> weights;
  for (auto& [key, value] : drop_position_ids(io::load_file(weights_path))) {
    const bool prefixed = key.rfind("vision_model.", 0) == 0 || key.rfind("visual_projection.", 0) == 0;
    weights.emplace(prefixed ? key : "vision_model." + key, value);
  }
  ClipVisionModel model(config, weights.count("visual_projection.weight") > 0, tensor_options);
  io::load_state_dict(*model, weights, weights_path);
  return model;
}

ClipModel clip_model_from_pretrained(const std::string& folder, at::TensorOptions tensor_options) {
  namespace fs = std::filesystem;
  const fs::path dir(folder);
  const std::string origin = (dir / "config.json").string();
  auto json = read_json(origin);
  TORCH_CHECK(json.is_object() && (json.contains("text_config") || json.contains("text_config_dict")) &&
                  (json.contains("vision_config") || json.contains("vision_config_dict")),
              "clip: ", origin, " is not a CLIPModel config (no text_config / vision_config)");
  io::refuse_unsupported(json, kClipModelKeys, origin);
  int64_t projection_dim = 512;
  if (json.contains("projection_dim") && !json["projection_dim"].is_null())
    projection_dim = json["projection_dim"].get<int64_t>();
  ClipModel model(text::ClipTextConfig::from_json(tower_config(json, "text", origin), origin + " text_config"),
                  ClipVisionConfig::from_json(tower_config(json, "vision", origin), origin + " vision_config"),
                  projection_dim, tensor_options);
  const std::string weights_path = (dir / "model.safetensors").string();
  io::load_state_dict(*model, drop_position_ids(io::load_file(weights_path)), weights_path);
  return model;
}

at::Tensor clip_preprocess(const at::Tensor& images, int64_t size) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "clip_preprocess: images must be [B, 3, H, W], got ",
              images.sizes());
  const int64_t h = images.size(2), w = images.size(3);
  const int64_t short_side = std::min(h, w), long_side = std::max(h, w);
  const auto long_new = static_cast<int64_t>(static_cast<double>(size) * static_cast<double>(long_side) /
                                             static_cast<double>(short_side));
  const int64_t new_h = h <= w ? size : long_new, new_w = h <= w ? long_new : size;
  at::Tensor x = images.to(at::kFloat);
  if (new_h != h || new_w != w) {
    x = at::_upsample_bicubic2d_aa(x, {new_h, new_w}, /*align_corners=*/false).clamp(0.0, 1.0);
  }
  const int64_t top = (new_h - size) / 2, left = (new_w - size) / 2;
  x = x.slice(2, top, top + size).slice(3, left, left + size);  // [B, 3, size, size]
  const at::Tensor mean = at::tensor({0.48145466, 0.4578275, 0.40821073}, x.options()).view({1, 3, 1, 1});
  const at::Tensor std = at::tensor({0.26862954, 0.26130258, 0.27577711}, x.options()).view({1, 3, 1, 1});
  return ((x - mean) / std).contiguous();
}

}  // namespace lookahead::model::vision
