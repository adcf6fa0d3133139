// Parity of model/text with transformers: reads the fixture written by tests/parity/clip_oracle.py
// (directory in LA_CLIP_PARITY_DIR). Tokenizer ids must be identical to CLIPTokenizer's for both
// SDXL paddings; text encoders must match every hidden state, pooled output and projection to
// 1e-4 (fp32), and the SDXL prompt encoding must be their concatenation. The vision tower
// (CLIPVisionModelWithProjection) and CLIPModel's logits are held to the same bound.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "model/run/model_runners.h"
#include "model/io/safetensors.h"
#include "model/text/clip_text.h"
#include "model/text/clip_tokenizer.h"
#include "model/vision/clip_vision.h"

namespace lookahead::model::text {
namespace {

constexpr double kTol = 1e-4;

std::string fixture_dir() {
  const char* dir = std::getenv("LA_CLIP_PARITY_DIR");
  return dir == nullptr ? std::string() : std::string(dir);
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot open " << path;
  return nlohmann::json::parse(in);
}

double max_err(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

void check_tokenizer(const ClipTokenizer& tok_l, const ClipTokenizer& tok_g, const nlohmann::json& fixture) {
  int n = 0;
  for (const auto& c : fixture["cases"]) {
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(tok_l.tokenize(text), c["tokens"].get<std::vector<int64_t>>()) << "text: '" << text << "'";
    EXPECT_EQ(tok_l.encode(text), c["ids_l"].get<std::vector<int64_t>>()) << "text: '" << text << "'";
    EXPECT_EQ(tok_g.encode(text), c["ids_g"].get<std::vector<int64_t>>()) << "text: '" << text << "'";
    ++n;
  }
  std::printf("clip tokenizer: %d prompts identical\n", n);
}

TEST(ClipParity, TokenizerFromBpeGz) {
  if (fixture_dir().empty()) GTEST_SKIP() << "LA_CLIP_PARITY_DIR unset";
  const auto fixture = read_json(fixture_dir() + "/tokens.json");
  const std::string gz = fixture["bpe_gz"].get<std::string>();
  const ClipTokenizer tok_l = ClipTokenizer::from_bpe_gz(gz);
  ClipTokenizerOptions g;
  g.pad_id = fixture["pad_g"].get<int64_t>();
  const ClipTokenizer tok_g = ClipTokenizer::from_bpe_gz(gz, g);
  EXPECT_EQ(tok_l.vocab_size(), 49408);
  EXPECT_EQ(tok_l.bos_id(), 49406);
  EXPECT_EQ(tok_l.eos_id(), 49407);
  check_tokenizer(tok_l, tok_g, fixture);
}

// Every assigned code point (a stride through the ideograph and syllable blocks) in runs of 48:
// letter / number / other classes, lowercase mapping and NFC all agree with the reference. Then
// every combining mark between marks of class 240 and 1: NFC reorders exactly where the
// reference's tables do.
TEST(ClipParity, TokenizerUnicodeSweep) {
  if (fixture_dir().empty()) GTEST_SKIP() << "LA_CLIP_PARITY_DIR unset";
  const auto fixture = read_json(fixture_dir() + "/tokens.json");
  const ClipTokenizer tok = ClipTokenizer::from_bpe_gz(fixture["bpe_gz"].get<std::string>());
  int n = 0, differ = 0;
  for (const auto& c : fixture["sweep"]) {
    const std::string text = c["text"].get<std::string>();
    const auto ours = tok.tokenize(text);
    const auto expected = c["tokens"].get<std::vector<int64_t>>();
    if (ours != expected && ++differ <= 20) ADD_FAILURE() << "ids differ for the run '" << text << "'";
    ++n;
  }
  EXPECT_EQ(differ, 0) << "of " << n << " runs";
  std::printf("clip tokenizer: %d runs of code points and mark probes (%d marks; Unicode %s in the oracle) identical\n",
              n - differ, fixture["marks"].get<int>(), fixture["unicode"].get<std::string>().c_str());
}

TEST(ClipParity, TokenizerFromVocabMerges) {
  if (fixture_dir().empty()) GTEST_SKIP() << "LA_CLIP_PARITY_DIR unset";
  const auto fixture = read_json(fixture_dir() + "/tokens.json");
  const std::string dir = fixture["tokenizer_dir"].get<std::string>();
  const ClipTokenizer tok_l = ClipTokenizer::from_pretrained(dir);
  ClipTokenizerOptions g;
  g.pad_id = 0;
  const ClipTokenizer tok_g = ClipTokenizer::from_vocab_merges(dir + "/vocab.json", dir + "/merges.txt", g);
  EXPECT_EQ(tok_l.options().pad_id, 49407);
  check_tokenizer(tok_l, tok_g, fixture);
}

TEST(ClipParity, TextEncoders) {
  if (fixture_dir().empty()) GTEST_SKIP() << "LA_CLIP_PARITY_DIR unset";
  const auto models = read_json(fixture_dir() + "/models.json");
  std::printf("clip oracle seed %lld\n", static_cast<long long>(models["seed"].get<int64_t>()));
  for (const auto& c : models["cases"]) {
    const std::string name = c["name"].get<std::string>(), dir = c["dir"].get<std::string>();
    ClipTextModel model = clip_text_from_pretrained(dir);
    model->eval();
    EXPECT_EQ(model->with_projection, c["projection"].get<bool>()) << name;
    const auto io = io::load_file(dir + "/io.safetensors");
    at::NoGradGuard no_grad;
    const ClipTextOutput out = model->forward(io.at("input_ids"), /*output_hidden_states=*/true);
    double worst = max_err(out.last_hidden_state, io.at("last_hidden_state"));
    worst = std::max(worst, max_err(out.pooler_output, io.at("pooler_output")));
    const auto layers = c["layers"].get<size_t>();
    ASSERT_EQ(out.hidden_states.size(), layers + 1) << name;
    for (size_t i = 0; i <= layers; ++i) {
      worst = std::max(worst, max_err(out.hidden_states[i], io.at("hidden_states." + std::to_string(i))));
    }
    worst = std::max(worst, max_err(out.penultimate_hidden_state, io.at("hidden_states." + std::to_string(layers - 1))));
    if (model->with_projection) worst = std::max(worst, max_err(out.text_embeds, io.at("text_embeds")));
    std::printf("clip text %-8s layers %zu: max abs err %.3g\n", name.c_str(), layers, worst);
    EXPECT_LE(worst, kTol) << name;
  }
}

TEST(ClipParity, SdxlPromptEncoding) {
  if (fixture_dir().empty()) GTEST_SKIP() << "LA_CLIP_PARITY_DIR unset";
  const std::string d1 = fixture_dir() + "/models/fixed_l", d2 = fixture_dir() + "/models/fixed_g";
  ClipTextModel te1 = clip_text_from_pretrained(d1), te2 = clip_text_from_pretrained(d2);
  const auto io1 = io::load_file(d1 + "/io.safetensors"), io2 = io::load_file(d2 + "/io.safetensors");
  at::NoGradGuard no_grad;
  const SdxlPromptEmbeds e = encode_sdxl_prompt(te1, te2, io1.at("input_ids"), io2.at("input_ids"));
  const at::Tensor expect = at::cat({io1.at("hidden_states.2"), io2.at("hidden_states.3")}, -1);
  EXPECT_EQ(e.context.sizes(), (std::vector<int64_t>{2, 77, 64 + 80}));
  const double err = std::max(max_err(e.context, expect), max_err(e.pooled, io2.at("text_embeds")));
  std::printf("sdxl prompt encoding: max abs err %.3g\n", err);
  EXPECT_LE(err, kTol);
}

TEST(ClipParity, VisionEncoders) {
  if (fixture_dir().empty()) GTEST_SKIP() << "LA_CLIP_PARITY_DIR unset";
  const auto models = read_json(fixture_dir() + "/models.json");
  for (const auto& c : models["vision"]) {
    const std::string name = c["name"].get<std::string>(), dir = c["dir"].get<std::string>();
    vision::ClipVisionModel model = vision::clip_vision_from_pretrained(dir);
    model->eval();
    ASSERT_TRUE(model->with_projection) << name;
    const auto io = io::load_file(dir + "/io.safetensors");
    at::NoGradGuard no_grad;
    const vision::ClipVisionOutput out = model->forward(io.at("pixel_values"), /*output_hidden_states=*/true);
    double worst = max_err(out.last_hidden_state, io.at("last_hidden_state"));
    worst = std::max(worst, max_err(out.pooler_output, io.at("pooler_output")));
    worst = std::max(worst, max_err(out.image_embeds, io.at("image_embeds")));
    const auto layers = c["layers"].get<size_t>();
    ASSERT_EQ(out.hidden_states.size(), layers + 1) << name;
    for (size_t i = 0; i <= layers; ++i) {
      worst = std::max(worst, max_err(out.hidden_states[i], io.at("hidden_states." + std::to_string(i))));
    }
    worst = std::max(worst, max_err(out.penultimate_hidden_state, io.at("hidden_states." + std::to_string(layers - 1))));
    std::printf("clip vision %-14s layers %zu: max abs err %.3g\n", name.c_str(), layers, worst);
    EXPECT_LE(worst, kTol) << name;
  }
  for (const auto& c : models["clip_models"]) {
    const std::string name = c["name"].get<std::string>(), dir = c["dir"].get<std::string>();
    vision::ClipModel model = vision::clip_model_from_pretrained(dir);
    model->eval();
    const auto io = io::load_file(dir + "/io.safetensors");
    at::NoGradGuard no_grad;
    const vision::ClipModelOutput out = model->forward(io.at("input_ids"), io.at("pixel_values"));
    double worst = max_err(out.logits_per_image, io.at("logits_per_image"));
    worst = std::max(worst, max_err(out.text_embeds, io.at("text_embeds")));
    worst = std::max(worst, max_err(out.image_embeds, io.at("image_embeds")));
    const at::Tensor score = model->clip_score(io.at("input_ids"), io.at("pixel_values"));
    const at::Tensor expect = (100.0 * (io.at("text_embeds") * io.at("image_embeds")).sum(-1)).clamp_min(0.0);
    worst = std::max(worst, max_err(score, expect) / 100.0);
    std::printf("clip model %-14s: max abs err %.3g\n", name.c_str(), worst);
    EXPECT_LE(worst, kTol) << name;
  }
}

// transformers resizes in uint8 (PIL), we resize in float: agreement is to about one uint8 step
// (1/255 / std ≈ 0.015 in normalized units) on smooth images.
TEST(ClipParity, ImagePreprocessing) {
  if (fixture_dir().empty()) GTEST_SKIP() << "LA_CLIP_PARITY_DIR unset";
  const auto models = read_json(fixture_dir() + "/models.json");
  const auto io = io::load_file(fixture_dir() + "/preprocess.safetensors");
  double worst = 0;
  for (int64_t i = 0; i < models["preprocess"].get<int64_t>(); ++i) {
    const at::Tensor image = io.at("image." + std::to_string(i));
    const double err = max_err(vision::clip_preprocess(image), io.at("pixel_values." + std::to_string(i)));
    std::printf("clip preprocess %lld x %lld: max abs err %.3g\n", static_cast<long long>(image.size(2)),
                static_cast<long long>(image.size(3)), err);
    worst = std::max(worst, err);
  }
  EXPECT_LE(worst, 0.025);
}

TEST(ClipParity, ModelRunClipText) {
  if (fixture_dir().empty()) GTEST_SKIP() << "LA_CLIP_PARITY_DIR unset";
  for (const char* name : {"fixed_l", "fixed_g"}) {
    const std::string dir = fixture_dir() + "/models/" + name;
    model::run::NetworkRun run;
    run.model = "clip-text";
    run.config = dir + "/config.json";
    run.weights = dir + "/model.safetensors";
    run.inputs = dir + "/io.safetensors";
    run.out = dir + "/run_out.safetensors";
    ASSERT_EQ(model::run::run_clip_network(run), 0);
    const auto io = io::load_file(dir + "/io.safetensors"), out = io::load_file(run.out);
    double err = std::max(max_err(out.at("last_hidden_state"), io.at("last_hidden_state")),
                          max_err(out.at("pooler_output"), io.at("pooler_output")));
    const int64_t layers = std::string(name) == "fixed_l" ? 3 : 4;
    err = std::max(err, max_err(out.at("penultimate_hidden_state"), io.at("hidden_states." + std::to_string(layers - 1))));
    EXPECT_EQ(out.count("text_embeds"), io.count("text_embeds")) << name;
    if (io.count("text_embeds")) err = std::max(err, max_err(out.at("text_embeds"), io.at("text_embeds")));
    std::printf("model run clip-text %s: max abs err %.3g\n", name, err);
    EXPECT_LE(err, kTol) << name;
  }
}

TEST(ClipParity, ModelRunClipVision) {
  if (fixture_dir().empty()) GTEST_SKIP() << "LA_CLIP_PARITY_DIR unset";
  const std::string dir = fixture_dir() + "/models/vision_fixed";
  model::run::NetworkRun run;
  run.model = "clip-vision";
  run.config = dir + "/config.json";
  run.weights = dir + "/model.safetensors";
  run.inputs = dir + "/io.safetensors";
  run.out = dir + "/run_out.safetensors";
  ASSERT_EQ(model::run::run_clip_network(run), 0);
  const auto io = io::load_file(dir + "/io.safetensors"), out = io::load_file(run.out);
  double err = std::max(max_err(out.at("last_hidden_state"), io.at("last_hidden_state")),
                        max_err(out.at("pooler_output"), io.at("pooler_output")));
  err = std::max(err, max_err(out.at("penultimate_hidden_state"), io.at("hidden_states.2")));
  err = std::max(err, max_err(out.at("image_embeds"), io.at("image_embeds")));
  std::printf("model run clip-vision: max abs err %.3g\n", err);
  EXPECT_LE(err, kTol);
}

}  // namespace
}  // namespace lookahead::model::text
