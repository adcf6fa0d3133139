// Structure of model/text: full-size CLIP text towers built on the meta device (parameter counts
// of the published towers, checkpoint key names), config parsing, key normalization, causal masking and pooling
// on small random configs.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>

#include "model/text/clip_text.h"
#include "model/vision/clip_vision.h"

namespace lookahead::model::text {
namespace {

int64_t count_params(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

TEST(ClipText, MetaParameterCounts) {
  const auto meta = at::TensorOptions().device(at::kMeta);
  ClipTextModel te1(ClipTextConfig::clip_l(), /*with_projection=*/false, meta);
  ClipTextModel te2(ClipTextConfig::clip_bigg(), /*with_projection=*/true, meta);
  EXPECT_EQ(count_params(*te1), 123060480);
  EXPECT_EQ(count_params(*te2), 694659840);
  EXPECT_TRUE(te2->named_parameters().find("text_projection.weight")->is_meta());
}

TEST(ClipText, ParameterNamesAreHfKeys) {
  const auto meta = at::TensorOptions().device(at::kMeta);
  ClipTextModel te2(ClipTextConfig::clip_bigg(), true, meta);
  const auto params = te2->named_parameters();
  for (const char* key :
       {"text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
        "text_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.encoder.layers.31.self_attn.out_proj.bias",
        "text_model.encoder.layers.5.layer_norm1.weight", "text_model.encoder.layers.5.layer_norm2.bias",
        "text_model.encoder.layers.7.mlp.fc1.weight", "text_model.encoder.layers.7.mlp.fc2.bias",
        "text_model.final_layer_norm.weight", "text_projection.weight"}) {
    EXPECT_NE(params.find(key), nullptr) << key;
  }
  EXPECT_EQ(params.find("text_projection.bias"), nullptr);
  EXPECT_EQ(params.size(), static_cast<size_t>(2 + 32 * 16 + 2 + 1));
  EXPECT_EQ(params.find("text_projection.weight")->sizes(), (std::vector<int64_t>{1280, 1280}));
}

TEST(ClipVision, MetaVitH14KeysAndPreprocessing) {
  const auto meta = at::TensorOptions().device(at::kMeta);
  vision::ClipVisionModel enc(vision::ClipVisionConfig::vit_h14(), /*with_projection=*/true, meta);
  const auto params = enc->named_parameters();
  for (const char* key : {"vision_model.embeddings.class_embedding", "vision_model.embeddings.patch_embedding.weight",
                          "vision_model.embeddings.position_embedding.weight", "vision_model.pre_layrnorm.weight",
                          "vision_model.encoder.layers.31.mlp.fc2.bias", "vision_model.post_layernorm.bias",
                          "visual_projection.weight"}) {
    EXPECT_NE(params.find(key), nullptr) << key;
  }
  EXPECT_EQ(params.find("vision_model.embeddings.patch_embedding.bias"), nullptr);
  EXPECT_EQ(params.find("vision_model.embeddings.position_embedding.weight")->sizes(), (std::vector<int64_t>{257, 1280}));
  EXPECT_EQ(params.find("visual_projection.weight")->sizes(), (std::vector<int64_t>{1024, 1280}));
  // Preprocessing: shortest side to 224, center crop, CLIP normalization.
  const at::Tensor img = at::full({2, 3, 300, 400}, 0.5);
  const at::Tensor x = vision::clip_preprocess(img);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{2, 3, 224, 224}));
  EXPECT_NEAR(x[0][0][100][100].item<double>(), (0.5 - 0.48145466) / 0.26862954, 1e-5);
  EXPECT_NEAR(x[1][2][5][200].item<double>(), (0.5 - 0.40821073) / 0.27577711, 1e-5);
}

TEST(ClipText, ConfigFromJson) {
  const auto j = nlohmann::json::parse(R"({"architectures": ["CLIPTextModelWithProjection"], "hidden_size": 1280,
      "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20, "hidden_act": "gelu",
      "projection_dim": 1280, "layer_norm_eps": 1e-05, "eos_token_id": 2, "pad_token_id": 1, "torch_dtype": "float16"})");
  const ClipTextConfig c = ClipTextConfig::from_json(j);
  EXPECT_EQ(c.hidden_size, 1280);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.hidden_act, "gelu");
  EXPECT_EQ(c.max_position_embeddings, 77);
  EXPECT_THROW(ClipTextConfig::from_json(nlohmann::json::parse(R"({"hidden_act": "relu"})")), c10::Error);
  try {
    ClipTextConfig::from_json(nlohmann::json::parse(R"({"num_hidden_layers": 2.5})"), "te.json");
    ADD_FAILURE() << "a fractional num_hidden_layers loaded";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("te.json: num_hidden_layers = 2.5 must be an integer"), std::string::npos)
        << e.what();
  }
}

TEST(ClipText, KeyNormalization) {
  std::map<std::string, at::Tensor> file{{"embeddings.token_embedding.weight", at::zeros({1})},
                                         {"text_model.final_layer_norm.bias", at::zeros({1})},
                                         {"text_model.embeddings.position_ids", at::zeros({1})},
                                         {"text_projection.weight", at::zeros({1})}};
  const auto out = normalize_clip_text_keys(file);
  EXPECT_EQ(out.size(), 3u);
  EXPECT_TRUE(out.count("text_model.embeddings.token_embedding.weight"));
  EXPECT_TRUE(out.count("text_model.final_layer_norm.bias"));
  EXPECT_TRUE(out.count("text_projection.weight"));
}

ClipTextConfig small_config() {
  ClipTextConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.max_position_embeddings = 16;
  c.projection_dim = 8;
  c.eos_token_id = 49;
  return c;
}

TEST(ClipText, CausalAndPooling) {
  at::manual_seed(0);
  ClipTextModel model(small_config(), true);
  at::NoGradGuard no_grad;
  at::Tensor ids = at::randint(0, 40, {2, 16}, at::kLong);
  ids.index_put_({0, 5}, 49);
  ids.index_put_({1, 11}, 49);
  ids.index_put_({1, 13}, 49);
  const ClipTextOutput a = model->forward(ids, true);
  EXPECT_EQ(a.last_hidden_state.sizes(), (std::vector<int64_t>{2, 16, 32}));
  EXPECT_EQ(a.text_embeds.sizes(), (std::vector<int64_t>{2, 8}));
  EXPECT_EQ(a.hidden_states.size(), 3u);
  EXPECT_TRUE(a.penultimate_hidden_state.equal(a.hidden_states[1]));
  // Pooled rows: the first EOS of each sequence.
  EXPECT_TRUE(at::allclose(a.pooler_output[0], a.last_hidden_state[0][5]));
  EXPECT_TRUE(at::allclose(a.pooler_output[1], a.last_hidden_state[1][11]));
  // Changing later tokens leaves earlier positions unchanged (causal mask).
  at::Tensor ids2 = ids.clone();
  ids2.index_put_({at::indexing::Slice(), at::indexing::Slice(12, 16)}, 3);
  const ClipTextOutput b = model->forward(ids2);
  EXPECT_TRUE(at::allclose(a.last_hidden_state.slice(1, 0, 12), b.last_hidden_state.slice(1, 0, 12), 1e-5, 1e-6));
  EXPECT_FALSE(at::allclose(a.last_hidden_state.slice(1, 12), b.last_hidden_state.slice(1, 12)));
}

TEST(ClipText, LegacyEosPoolsAtLargestId) {
  ClipTextConfig c = small_config();
  c.eos_token_id = 2;
  ClipTextModel model(c, false);
  const at::Tensor ids = at::tensor({0, 7, 49, 49, 3}, at::kLong).view({1, 5});
  EXPECT_EQ(model->text_model->eos_positions(ids).item<int64_t>(), 2);
}

// The tiny towers (the tiny preset's random CLIP) build a CLIPModel that scores byte-level tokens.
TEST(ClipModel, TinyTowers) {
  at::manual_seed(0);
  const ClipTextConfig t = ClipTextConfig::tiny();
  const vision::ClipVisionConfig v = vision::ClipVisionConfig::tiny();
  EXPECT_LT(t.hidden_size, 64);
  EXPECT_LT(v.hidden_size, 64);
  vision::ClipModel model(t, v, 8);
  at::NoGradGuard no_grad;
  const at::Tensor ids = at::randint(0, t.vocab_size, {3, t.max_position_embeddings}, at::kLong);
  const at::Tensor pixels = at::randn({2, v.num_channels, v.image_size, v.image_size});
  const vision::ClipModelOutput o = model->forward(ids, pixels);
  EXPECT_EQ(o.logits_per_image.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(o.text_embeds.sizes(), (std::vector<int64_t>{3, 8}));
  EXPECT_EQ(o.image_embeds.sizes(), (std::vector<int64_t>{2, 8}));
  EXPECT_TRUE(o.logits_per_image.isfinite().all().item<bool>());
}

}  // namespace
}  // namespace lookahead::model::text
