// model::Conditioner: the tiny encoders fit the tiny LookaheadModel (and a step runs on their
// outputs), each method equals the underlying network call (prompt encoding, CLIP features, the
// unconditional features, VAE encode/decode with the scaling factor), load() of a diffusers-style
// folder written from random weights gives back the same encoders, and its errors name the missing
// file. ClipTokenizer::byte_level against transformers' CLIPTokenizer (ByteTokenizerParity, fed by
// tests/parity/byte_tokenizer_oracle.py).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

#include "model/face/align.h"
#include "model/io/safetensors.h"
#include "model/lookahead/conditioner.h"
#include "model/lookahead/lookahead_model.h"
#include "model/text/clip_tokenizer.h"
#include "model/vision/clip_vision.h"

namespace lookahead::model {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::vector<std::string> kPrompts{"a photo of a face", "A watercolor portrait, smiling!"};

std::unique_ptr<Conditioner> tiny(uint64_t seed) {
  at::set_num_threads(1);
  at::manual_seed(seed);
  return std::make_unique<Conditioner>(ConditionerConfig::tiny(), at::kCPU, at::kFloat);
}

/// A fresh scratch directory, removed at the end of the scope.
struct Scratch {
  fs::path dir;
  Scratch() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path() / ("la_cond_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::vector<std::pair<std::string, at::Tensor>> state_of(torch::nn::Module& m) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : m.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : m.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

void expect_same_state(torch::nn::Module& a, torch::nn::Module& b, const std::string& what) {
  auto sa = state_of(a), sb = state_of(b);
  ASSERT_EQ(sa.size(), sb.size()) << what;
  std::map<std::string, at::Tensor> mb(sb.begin(), sb.end());
  for (const auto& [k, t] : sa) {
    ASSERT_TRUE(mb.count(k)) << what << ": " << k;
    EXPECT_TRUE(at::equal(t, mb[k])) << what << ": " << k;
  }
}

json text_config_json(const text::ClipTextConfig& c, bool projection) {
  return {{"architectures", {projection ? "CLIPTextModelWithProjection" : "CLIPTextModel"}},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_hidden_layers", c.num_hidden_layers},
          {"num_attention_heads", c.num_attention_heads},
          {"max_position_embeddings", c.max_position_embeddings},
          {"projection_dim", c.projection_dim},
          {"hidden_act", c.hidden_act},
          {"layer_norm_eps", c.layer_norm_eps},
          {"bos_token_id", c.bos_token_id},
          {"eos_token_id", c.eos_token_id},
          {"pad_token_id", c.pad_token_id}};
}

/// The byte-level vocabulary as transformers' vocab.json spells it (GPT-2's byte -> unicode table).
json byte_vocab_json() {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<uint32_t> cs(bs.begin(), bs.end());
  uint32_t n = 0;
  for (int b = 0; b < 256; ++b)
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) cs.push_back(256 + n++);
  auto utf8 = [](uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  json vocab = json::object();
  int64_t id = 0;
  for (uint32_t c : cs) vocab[utf8(c)] = id++;
  for (uint32_t c : cs) vocab[utf8(c) + "</w>"] = id++;
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  return vocab;
}

/// Writes `c`'s networks and tokenizers as a diffusers SDXL folder plus an image-encoder folder.
ConditionerFiles write_folders(Conditioner& c, const fs::path& root) {
  const ConditionerConfig& cfg = c.config();
  const fs::path sdxl = root / "sdxl", image = root / "image_encoder";
  write_text(sdxl / "text_encoder" / "config.json", text_config_json(cfg.te1, false).dump(1));
  io::save_file((sdxl / "text_encoder" / "model.safetensors").string(), state_of(*c.text_encoder()));
  write_text(sdxl / "text_encoder_2" / "config.json", text_config_json(cfg.te2, true).dump(1));
  io::save_file((sdxl / "text_encoder_2" / "model.safetensors").string(), state_of(*c.text_encoder_2()));
  const std::string vocab = byte_vocab_json().dump();
  for (const auto& [folder, pad] : {std::pair{"tokenizer", "<|endoftext|>"}, std::pair{"tokenizer_2", "!"}}) {
    write_text(sdxl / folder / "vocab.json", vocab);
    write_text(sdxl / folder / "merges.txt", "#version: 0.2\n");
    write_text(sdxl / folder / "special_tokens_map.json", json{{"pad_token", pad}}.dump());
    write_text(sdxl / folder / "tokenizer_config.json", json{{"model_max_length", 77}}.dump());
  }
  write_text(sdxl / "vae" / "config.json", cfg.vae.to_json());
  io::save_file((sdxl / "vae" / "diffusion_pytorch_model.safetensors").string(), state_of(*c.vae()));
  const auto& v = cfg.image_encoder;
  write_text(image / "config.json", json{{"hidden_size", v.hidden_size},
                                         {"intermediate_size", v.intermediate_size},
                                         {"num_hidden_layers", v.num_hidden_layers},
                                         {"num_attention_heads", v.num_attention_heads},
                                         {"num_channels", v.num_channels},
                                         {"image_size", v.image_size},
                                         {"patch_size", v.patch_size},
                                         {"projection_dim", v.projection_dim},
                                         {"hidden_act", v.hidden_act},
                                         {"layer_norm_eps", v.layer_norm_eps}}
                                        .dump(1));
  io::save_file((image / "model.safetensors").string(), state_of(*c.image_encoder()));
  return {sdxl.string(), "", image.string()};
}

TEST(Conditioner, TinyMatchesTinyLookaheadModel) {
  const ConditionerConfig c = ConditionerConfig::tiny();
  const LookaheadModelConfig m = LookaheadModelConfig::tiny();
  ASSERT_EQ(m.unet.cross_attention_dim.size(), 3u);
  for (int64_t d : m.unet.cross_attention_dim) EXPECT_EQ(c.te1.hidden_size + c.te2.hidden_size, d);
  EXPECT_EQ(c.te2.projection_dim + 6 * m.unet.addition_time_embed_dim, m.unet.projection_class_embeddings_input_dim);
  EXPECT_EQ(c.image_encoder.hidden_size, m.resampler.embedding_dim());
  EXPECT_EQ(c.vae.latent_channels, m.unet.in_channels);
  EXPECT_EQ(c.vae.latent_channels, m.taesd.latent_channels);
  EXPECT_EQ(c.vae.block_out_channels.size(), 4u) << "downsampling by 8, like TAESD's 8x upsampling";
  EXPECT_TRUE(c.byte_level_tokenizers);

  // A training step of the tiny model on the tiny encoders' outputs.
  auto cond = tiny(1);
  at::manual_seed(2);
  const at::Tensor images = at::rand({2, 3, 64, 64});  // [0, 1]
  Batch b;
  b.z_tgt = cond->encode_latents(images * 2 - 1);
  b.z_ref = cond->encode_latents(images.flip(0) * 2 - 1);
  EXPECT_EQ(b.z_tgt.sizes(), (at::IntArrayRef{2, 4, 8, 8}));
  b.clip_ref = cond->clip_features(images);
  EXPECT_EQ(b.clip_ref.sizes(), (at::IntArrayRef{2, 5, 12}));
  b.clip_uncond = cond->clip_uncond();
  const text::SdxlPromptEmbeds p = cond->encode_prompts(kPrompts);
  EXPECT_EQ(p.context.sizes(), (at::IntArrayRef{2, 77, 24}));
  EXPECT_EQ(p.pooled.sizes(), (at::IntArrayRef{2, 16}));
  b.tgt_prompt = b.ref_prompt = p.context;
  b.tgt_pooled = b.ref_pooled = p.pooled;
  b.time_ids = at::tensor({64.0f, 64.0f, 0.0f, 0.0f, 64.0f, 64.0f}).repeat({2, 1});
  b.ref_landmarks = face::arcface_template(64.0).unsqueeze(0).repeat({2, 1, 1});
  const at::Tensor id = at::randn({2, 512});
  b.ref_id = id / id.norm(2, {1}, true);
  LookaheadModel model(m);
  const StepDraw d = model.draw(0, 0, 2, 0, 2, {4, 8, 8});
  const at::Tensor loss = model.diffusion_loss(b, d);
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
}

TEST(Conditioner, EncodePromptsIsSdxlPromptEncoding) {
  auto cond = tiny(3);
  text::ClipTokenizerOptions o2;
  o2.pad_id = 0;
  const auto ids1 = text::ClipTokenizer::byte_level().encode_batch(kPrompts);
  const auto ids2 = text::ClipTokenizer::byte_level(o2).encode_batch(kPrompts);
  const at::Tensor t1 = cond->token_ids(kPrompts, 1), t2 = cond->token_ids(kPrompts, 2);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    EXPECT_EQ(std::vector<int64_t>(t1[i].data_ptr<int64_t>(), t1[i].data_ptr<int64_t>() + 77), ids1[i]);
    EXPECT_EQ(std::vector<int64_t>(t2[i].data_ptr<int64_t>(), t2[i].data_ptr<int64_t>() + 77), ids2[i]);
  }
  EXPECT_EQ(t1[0][16].item<int64_t>(), 513) << "tokenizer/ pads with <|endoftext|>";
  EXPECT_EQ(t2[0][16].item<int64_t>(), 0) << "tokenizer_2 pads with '!' (id 0)";
  const text::SdxlPromptEmbeds got = cond->encode_prompts(kPrompts);
  const text::SdxlPromptEmbeds want = text::encode_sdxl_prompt(cond->text_encoder(), cond->text_encoder_2(), t1, t2);
  EXPECT_TRUE(at::equal(got.context, want.context));
  EXPECT_TRUE(at::equal(got.pooled, want.pooled));
  EXPECT_FALSE(at::allclose(got.context[0], got.context[1])) << "different prompts, different embeddings";
  EXPECT_EQ(got.context.scalar_type(), at::kFloat);
  EXPECT_FALSE(got.context.requires_grad());
}

TEST(Conditioner, ClipFeaturesAndUncond) {
  auto cond = tiny(4);
  const at::Tensor images = at::rand({3, 3, 40, 56});
  const at::Tensor got = cond->clip_features(images);
  const at::Tensor want =
      cond->image_encoder()->forward(vision::clip_preprocess(images, 28)).penultimate_hidden_state;
  EXPECT_EQ(got.sizes(), (at::IntArrayRef{3, 5, 12}));
  EXPECT_TRUE(at::equal(got, want));
  const at::Tensor uncond = cond->clip_uncond();
  EXPECT_EQ(uncond.sizes(), (at::IntArrayRef{1, 5, 12}));
  EXPECT_TRUE(at::equal(uncond, cond->image_encoder()->forward(at::zeros({1, 3, 28, 28})).penultimate_hidden_state));
  EXPECT_FALSE(at::allclose(uncond, at::zeros_like(uncond))) << "all-zero pixels do not give zero features";
  // Zero pixel_values are not a black image: black is normalized to -mean/std.
  EXPECT_FALSE(at::allclose(uncond, cond->clip_features(at::zeros({1, 3, 28, 28}))));
}

TEST(Conditioner, LatentsAreScaledPosteriorMean) {
  auto cond = tiny(5);
  const at::Tensor x = at::rand({2, 3, 32, 48}) * 2 - 1;
  const at::Tensor z = cond->encode_latents(x);
  EXPECT_EQ(z.sizes(), (at::IntArrayRef{2, 4, 4, 6}));
  const double sf = cond->config().vae.scaling_factor;
  EXPECT_DOUBLE_EQ(sf, 0.13025);
  const at::Tensor mean = cond->vae()->encode(x).mean;
  EXPECT_TRUE(at::allclose(z, mean * sf, 1e-6, 1e-7));
  const at::Tensor y = cond->decode_latents(z);
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{2, 3, 32, 48}));
  EXPECT_TRUE(at::allclose(y, cond->vae()->decode(z / sf), 1e-5, 1e-6));
  // Bit-stable for the same input, independent of its batch companions' values.
  EXPECT_TRUE(at::equal(cond->encode_latents(x), z));
}

TEST(Conditioner, LoadsDiffusersFolders) {
  Scratch s;
  auto original = tiny(6);
  ConditionerFiles files = write_folders(*original, s.dir);
  auto loaded = tiny(7);
  EXPECT_FALSE(at::equal(loaded->text_encoder()->text_model->embeddings->token_embedding->weight,
                         original->text_encoder()->text_model->embeddings->token_embedding->weight))
      << "another seed must give other weights";
  EXPECT_FALSE(at::equal(loaded->vae()->encoder->conv_in->weight, original->vae()->encoder->conv_in->weight));
  loaded->load(files);
  expect_same_state(*loaded->text_encoder(), *original->text_encoder(), "text_encoder");
  expect_same_state(*loaded->text_encoder_2(), *original->text_encoder_2(), "text_encoder_2");
  expect_same_state(*loaded->image_encoder(), *original->image_encoder(), "image_encoder");
  expect_same_state(*loaded->vae(), *original->vae(), "vae");
  const auto a = loaded->encode_prompts(kPrompts), b = original->encode_prompts(kPrompts);
  EXPECT_TRUE(at::equal(a.context, b.context));
  EXPECT_TRUE(at::equal(a.pooled, b.pooled));
  EXPECT_TRUE(at::equal(loaded->clip_uncond(), original->clip_uncond()));

  // `vae` overrides <sdxl_folder>/vae.
  auto other = tiny(8);
  const fs::path fix = s.dir / "vae_fix";
  write_text(fix / "config.json", other->config().vae.to_json());
  io::save_file((fix / "diffusion_pytorch_model.safetensors").string(), state_of(*other->vae()));
  files.vae = fix.string();
  loaded->load(files);
  expect_same_state(*loaded->vae(), *other->vae(), "vae override");
}

TEST(Conditioner, LoadErrorsNameTheMissingFile) {
  Scratch s;
  auto cond = tiny(9);
  ConditionerFiles files = write_folders(*cond, s.dir);
  auto message = [&](const ConditionerFiles& f) {
    try {
      cond->load(f);
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("(no error)");
  };
  ConditionerFiles no_image = files;
  no_image.image_encoder = (s.dir / "nowhere").string();
  EXPECT_NE(message(no_image).find((s.dir / "nowhere" / "config.json").string()), std::string::npos) << message(no_image);
  EXPECT_NE(message({"", "", files.image_encoder}).find("no SDXL folder"), std::string::npos);
  fs::remove(fs::path(files.sdxl_folder) / "tokenizer_2" / "merges.txt");
  const std::string m = message(files);
  EXPECT_NE(m.find("tokenizer_2 merges"), std::string::npos) << m;
  EXPECT_NE(m.find("merges.txt"), std::string::npos) << m;
  write_text(fs::path(files.sdxl_folder) / "tokenizer_2" / "merges.txt", "#version: 0.2\n");
  fs::remove(fs::path(files.sdxl_folder) / "vae" / "diffusion_pytorch_model.safetensors");
  EXPECT_NE(message(files).find("diffusion_pytorch_model.safetensors"), std::string::npos) << message(files);
}

TEST(ByteTokenizerParity, MatchesTransformers) {
  const char* dir = std::getenv("LA_BYTE_TOKENIZER_DIR");
  ASSERT_NE(dir, nullptr) << "LA_BYTE_TOKENIZER_DIR must name the oracle's output (ctest sets it)";
  std::ifstream in(fs::path(dir) / "tokens.json");
  ASSERT_TRUE(in) << dir << "/tokens.json";
  const json cases = json::parse(in)["cases"];
  ASSERT_GE(cases.size(), 30u);
  const std::string vocab = (fs::path(dir) / "tokenizer" / "vocab.json").string();
  const std::string merges = (fs::path(dir) / "tokenizer" / "merges.txt").string();
  for (const auto& c : cases) {
    text::ClipTokenizerOptions o;
    o.max_length = c["max_length"].get<int64_t>();
    const bool bang = c["pad"].get<std::string>() == "bang";
    if (bang) o.pad_id = 0;
    const auto want = c["ids"].get<std::vector<int64_t>>();
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(text::ClipTokenizer::byte_level(o).encode(text), want) << "'" << text << "' pad " << c["pad"];
    // The oracle's files read by the general loader give the same tokenizer.
    o.pad_id = bang ? 0 : 513;
    EXPECT_EQ(text::ClipTokenizer::from_vocab_merges(vocab, merges, o).encode(text), want) << "'" << text << "'";
  }
  const auto tok = text::ClipTokenizer::byte_level();
  EXPECT_EQ(tok.vocab_size(), 514);
  EXPECT_EQ(tok.bos_id(), 512);
  EXPECT_EQ(tok.eos_id(), 513);
  EXPECT_EQ(tok.options().pad_id, 513);
  text::ClipTokenizerOptions bad;
  bad.pad_id = 600;
  EXPECT_THROW(text::ClipTokenizer::byte_level(bad), c10::Error);
}

}  // namespace
}  // namespace lookahead::model
