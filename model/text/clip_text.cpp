// CLIP text encoders (transformers' CLIPTextModel / CLIPTextModelWithProjection): pre-LN
// transformer with causal self-attention, final LayerNorm, EOS pooling and optional projection.
#include "model/text/clip_text.h"

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

namespace lookahead::model::text {
namespace {

at::Tensor activation(const at::Tensor& x, const std::string& act) {
  if (act == "quick_gelu") return x * at::sigmoid(1.702 * x);
  if (act == "gelu") return at::gelu(x);
  TORCH_CHECK(false, "clip: unsupported hidden_act '", act, "'");
}

// Every key of transformers' CLIPTextConfig (5.x, its PreTrainedConfig keys included). Absent
// keys take transformers' defaults (reference_defaults()), not the CLIP ViT-L values of clip_l().
constexpr auto kKeys = io::join_keys(
    kClipEncoderKeys,
    std::to_array<io::ConfigKey>({
        {"architectures", io::KeyUse::kHonoured, nullptr,
         "a *WithProjection entry selects CLIPTextModelWithProjection in clip_text_from_pretrained"},
        {"vocab_size", io::KeyUse::kHonoured, nullptr, "token table size"},
        {"max_position_embeddings", io::KeyUse::kHonoured, nullptr, "position table size"},
        {"eos_token_id", io::KeyUse::kHonoured, nullptr,
         "pooling position: first id == eos_token_id, or the largest id for the legacy value 2"},
        {"bos_token_id", io::KeyUse::kMetadata, nullptr, "tokenizer-side; the text model never reads it"},
        {"pad_token_id", io::KeyUse::kMetadata, nullptr, "tokenizer-side; the embedding has no padding_idx"},
    }));

}  // namespace

io::ConfigKeyTable ClipTextConfig::keys() { return kKeys; }

ClipTextConfig ClipTextConfig::reference_defaults() {
  ClipTextConfig c;
  c.hidden_size = 512;
  c.intermediate_size = 2048;
  c.projection_dim = 512;
  c.num_attention_heads = 8;
  c.bos_token_id = 49406;
  c.eos_token_id = 49407;
  return c;
}

ClipTextConfig ClipTextConfig::clip_l() { return ClipTextConfig{}; }

ClipTextConfig ClipTextConfig::clip_bigg() {
  ClipTextConfig c;
  c.hidden_size = 1280;
  c.intermediate_size = 5120;
  c.num_hidden_layers = 32;
  c.num_attention_heads = 20;
  c.projection_dim = 1280;
  c.hidden_act = "gelu";
  return c;
}

ClipTextConfig ClipTextConfig::tiny() {
  ClipTextConfig c;
  c.vocab_size = 514;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.projection_dim = 8;
  return c;
}

ClipTextConfig ClipTextConfig::from_json(const nlohmann::json& j, const std::string& origin) {
  io::refuse_unsupported(j, kKeys, origin);
  using C = ClipTextConfig;
  return read_clip_encoder_config<C>(j, origin, reference_defaults(),
                                     {{"vocab_size", &C::vocab_size},
                                      {"hidden_size", &C::hidden_size},
                                      {"intermediate_size", &C::intermediate_size},
                                      {"num_hidden_layers", &C::num_hidden_layers},
                                      {"num_attention_heads", &C::num_attention_heads},
                                      {"max_position_embeddings", &C::max_position_embeddings},
                                      {"projection_dim", &C::projection_dim},
                                      {"eos_token_id", &C::eos_token_id},
                                      {"bos_token_id", &C::bos_token_id},
                                      {"pad_token_id", &C::pad_token_id}});
}

ClipTextConfig ClipTextConfig::from_file(const std::string& config_json) {
  std::ifstream in(config_json);
  TORCH_CHECK(in, "clip: cannot open ", config_json);
  return from_json(nlohmann::json::parse(in), config_json);
}

ClipEmbeddingImpl::ClipEmbeddingImpl(int64_t num, int64_t dim, at::TensorOptions tensor_options)
    : num(num), dim(dim), tensor_options(tensor_options) {
  reset();
}

void ClipEmbeddingImpl::reset() {
  weight = register_parameter("weight", at::empty({num, dim}, tensor_options));
  if (!weight.is_meta()) {
    at::NoGradGuard no_grad;
    weight.normal_(0.0, 0.02);
  }
}

at::Tensor ClipEmbeddingImpl::forward(const at::Tensor& ids) { return at::embedding(weight, ids); }

ClipAttentionImpl::ClipAttentionImpl(int64_t dim, int64_t heads, at::TensorOptions tensor_options)
    : dim(dim), heads(heads), tensor_options(tensor_options) {
  reset();
}

void ClipAttentionImpl::reset() {
  auto linear = [&](const char* name) {
    return register_module(name, nn::LoraLinear(nn::LinearOptions(dim, dim).tensor_options(tensor_options)));
  };
  k_proj = linear("k_proj");
  v_proj = linear("v_proj");
  q_proj = linear("q_proj");
  out_proj = linear("out_proj");
}

at::Tensor ClipAttentionImpl::forward(const at::Tensor& x, bool causal) {
  const int64_t b = x.size(0), s = x.size(1), d = dim / heads;
  auto split = [&](const at::Tensor& t) { return t.view({b, s, heads, d}).transpose(1, 2); };  // [B, H, S, d]
  at::Tensor q = split(q_proj->forward(x));
  at::Tensor k = split(k_proj->forward(x));
  at::Tensor v = split(v_proj->forward(x));
  at::Tensor o = at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal);  // [B, H, S, d]
  return out_proj->forward(o.transpose(1, 2).reshape({b, s, dim}));
}

ClipMlpImpl::ClipMlpImpl(int64_t dim, int64_t inner, std::string act, at::TensorOptions tensor_options)
    : dim(dim), inner(inner), act(std::move(act)), tensor_options(tensor_options) {
  reset();
}

void ClipMlpImpl::reset() {
  fc1 = register_module("fc1", nn::LoraLinear(nn::LinearOptions(dim, inner).tensor_options(tensor_options)));
  fc2 = register_module("fc2", nn::LoraLinear(nn::LinearOptions(inner, dim).tensor_options(tensor_options)));
}

at::Tensor ClipMlpImpl::forward(const at::Tensor& x) { return fc2->forward(activation(fc1->forward(x), act)); }

ClipEncoderLayerImpl::ClipEncoderLayerImpl(int64_t dim, int64_t heads, int64_t inner, std::string act, double eps,
                                           at::TensorOptions tensor_options)
    : dim(dim), heads(heads), inner(inner), act(std::move(act)), eps(eps), tensor_options(tensor_options) {
  reset();
}

void ClipEncoderLayerImpl::reset() {
  self_attn = register_module("self_attn", ClipAttention(dim, heads, tensor_options));
  layer_norm1 = register_module("layer_norm1", nn::LayerNorm(nn::LayerNormOptions(dim).eps(eps).tensor_options(tensor_options)));
  mlp = register_module("mlp", ClipMlp(dim, inner, act, tensor_options));
  layer_norm2 = register_module("layer_norm2", nn::LayerNorm(nn::LayerNormOptions(dim).eps(eps).tensor_options(tensor_options)));
}

at::Tensor ClipEncoderLayerImpl::forward(const at::Tensor& x, bool causal) {
  at::Tensor h = x + self_attn->forward(layer_norm1->forward(x), causal);
  return h + mlp->forward(layer_norm2->forward(h));
}

ClipEncoderImpl::ClipEncoderImpl(int64_t num_layers, int64_t dim, int64_t heads, int64_t inner, std::string act,
                                 double eps, at::TensorOptions tensor_options)
    : num_layers(num_layers), dim(dim), heads(heads), inner(inner), act(std::move(act)), eps(eps),
      tensor_options(tensor_options) {
  reset();
}

void ClipEncoderImpl::reset() {
  TORCH_CHECK(num_layers >= 1, "clip: num_hidden_layers must be at least 1, got ", num_layers);
  layers = torch::nn::ModuleList();
  for (int64_t i = 0; i < num_layers; ++i) layers->push_back(ClipEncoderLayer(dim, heads, inner, act, eps, tensor_options));
  layers = register_module("layers", layers);
}

at::Tensor ClipEncoderImpl::forward(const at::Tensor& x, bool causal, std::vector<at::Tensor>* hidden_states,
                                    at::Tensor* penultimate) {
  at::Tensor h = x;
  if (hidden_states != nullptr) hidden_states->push_back(h);
  for (const auto& layer : *layers) {
    if (penultimate != nullptr) *penultimate = h;
    h = layer->as<ClipEncoderLayerImpl>()->forward(h, causal);
    if (hidden_states != nullptr) hidden_states->push_back(h);
  }
  return h;
}

ClipTextEmbeddingsImpl::ClipTextEmbeddingsImpl(const ClipTextConfig& config, at::TensorOptions tensor_options)
    : config(config), tensor_options(tensor_options) {
  reset();
}

void ClipTextEmbeddingsImpl::reset() {
  token_embedding = register_module("token_embedding", ClipEmbedding(config.vocab_size, config.hidden_size, tensor_options));
  position_embedding = register_module(
      "position_embedding", ClipEmbedding(config.max_position_embeddings, config.hidden_size, tensor_options));
}

at::Tensor ClipTextEmbeddingsImpl::forward(const at::Tensor& ids) {
  const int64_t s = ids.size(-1);
  TORCH_CHECK(s <= config.max_position_embeddings, "clip: sequence length ", s, " exceeds max_position_embeddings ",
              config.max_position_embeddings);
  return token_embedding->forward(ids) + position_embedding->weight.slice(0, 0, s);  // [B, S, C]
}

ClipTextTransformerImpl::ClipTextTransformerImpl(const ClipTextConfig& config, at::TensorOptions tensor_options)
    : config(config), tensor_options(tensor_options) {
  reset();
}

void ClipTextTransformerImpl::reset() {
  embeddings = register_module("embeddings", ClipTextEmbeddings(config, tensor_options));
  encoder = register_module("encoder", ClipEncoder(config.num_hidden_layers, config.hidden_size,
                                                   config.num_attention_heads, config.intermediate_size,
                                                   config.hidden_act, config.layer_norm_eps, tensor_options));
  final_layer_norm = register_module(
      "final_layer_norm",
      nn::LayerNorm(nn::LayerNormOptions(config.hidden_size).eps(config.layer_norm_eps).tensor_options(tensor_options)));
}

at::Tensor ClipTextTransformerImpl::eos_positions(const at::Tensor& input_ids) const {
  const at::Tensor ids = input_ids.to(at::kInt);
  if (config.eos_token_id == 2) return ids.argmax(-1);  // legacy configs: the largest id is EOS
  return ids.eq(config.eos_token_id).to(at::kInt).argmax(-1);
}

ClipTextOutput ClipTextTransformerImpl::forward(const at::Tensor& input_ids, bool output_hidden_states) {
  TORCH_CHECK(input_ids.dim() == 2, "clip: input_ids must be [B, S], got ", input_ids.sizes());
  ClipTextOutput out;
  at::Tensor h = embeddings->forward(input_ids);  // [B, S, C]
  h = encoder->forward(h, /*causal=*/true, output_hidden_states ? &out.hidden_states : nullptr,
                       &out.penultimate_hidden_state);
  out.last_hidden_state = final_layer_norm->forward(h);
  const at::Tensor pos = eos_positions(input_ids).to(at::kLong).to(h.device());           // [B]
  const at::Tensor rows = at::arange(input_ids.size(0), pos.options());
  out.pooler_output = out.last_hidden_state.index({rows, pos});  // [B, C]
  return out;
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& config, bool with_projection, at::TensorOptions tensor_options)
    : config(config), with_projection(with_projection), tensor_options(tensor_options) {
  reset();
}

void ClipTextModelImpl::reset() {
  text_model = register_module("text_model", ClipTextTransformer(config, tensor_options));
  if (with_projection) {
    text_projection = register_module(
        "text_projection",
        nn::LoraLinear(nn::LinearOptions(config.hidden_size, config.projection_dim).bias(false).tensor_options(tensor_options)));
  }
}

ClipTextOutput ClipTextModelImpl::forward(const at::Tensor& input_ids, bool output_hidden_states) {
  ClipTextOutput out = text_model->forward(input_ids, output_hidden_states);
  if (with_projection) out.text_embeds = text_projection->forward(out.pooler_output);
  return out;
}

std::map<std::string, at::Tensor> normalize_clip_text_keys(const std::map<std::string, at::Tensor>& tensors) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [key, value] : tensors) {
    if (key.size() >= 12 && key.compare(key.size() - 12, 12, "position_ids") == 0) continue;
    if (key.rfind("text_model.", 0) == 0 || key.rfind("text_projection.", 0) == 0) {
      out.emplace(key, value);
    } else {
      out.emplace("text_model." + key, value);
    }
  }
  return out;
}

io::LoadReport load_clip_text_weights(ClipTextModel& model, const std::map<std::string, at::Tensor>& tensors,
                                      const std::string& origin, bool strict) {
  return io::load_state_dict(*model, normalize_clip_text_keys(tensors), origin, strict);
}

ClipTextModel clip_text_from_pretrained(const std::string& folder, at::TensorOptions tensor_options,
                                        const std::string& weights_name) {
  namespace fs = std::filesystem;
  const fs::path dir(folder);
  std::ifstream in(dir / "config.json");
  TORCH_CHECK(in, "clip: cannot open ", (dir / "config.json").string());
  const auto json = nlohmann::json::parse(in);
  const ClipTextConfig config = ClipTextConfig::from_json(json, (dir / "config.json").string());
  bool with_projection = false;
  if (json.contains("architectures") && json["architectures"].is_array()) {
    for (const auto& a : json["architectures"]) {
      if (a.is_string() && a.get<std::string>().find("WithProjection") != std::string::npos) with_projection = true;
    }
  }
  ClipTextModel model(config, with_projection, tensor_options);
  const fs::path weights = dir / weights_name;
  load_clip_text_weights(model, io::load_file(weights.string()), weights.string());
  return model;
}

SdxlPromptEmbeds encode_sdxl_prompt(ClipTextModel& te1, ClipTextModel& te2, const at::Tensor& ids1,
                                    const at::Tensor& ids2) {
  TORCH_CHECK(te2->with_projection, "encode_sdxl_prompt: text_encoder_2 must be CLIPTextModelWithProjection");
  const ClipTextOutput o1 = te1->forward(ids1);
  const ClipTextOutput o2 = te2->forward(ids2);
  SdxlPromptEmbeds out;
  out.context = at::cat({o1.penultimate_hidden_state, o2.penultimate_hidden_state.to(o1.penultimate_hidden_state.dtype())},
                        -1);  // [B, S, C1 + C2]
  out.pooled = o2.text_embeds;
  return out;
}

}  // namespace lookahead::model::text
