// The input encoders of LCM-Lookahead (see conditioner.h).
#include "model/lookahead/conditioner.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "model/io/safetensors.h"
#include "model/io/state_dict.h"

namespace lookahead::model {

namespace {

namespace fs = std::filesystem;

/// Size of ClipTokenizer::byte_level's vocabulary (256 bytes, 256 word ends, BOS, EOS).
constexpr int64_t kByteVocab = 514;

void require(const fs::path& path, const std::string& what) {
  TORCH_CHECK(fs::exists(path), "Conditioner::load: ", what, " not found: ", path.string());
}

/// A text encoder folder as transformers writes it.
void require_text_folder(const fs::path& dir, const std::string& what) {
  require(dir, what + " folder");
  require(dir / "config.json", what + " config");
  require(dir / "model.safetensors", what + " weights");
}

}  // namespace

ConditionerConfig ConditionerConfig::sdxl() {
  ConditionerConfig c;
  c.te1 = text::ClipTextConfig::clip_l();
  c.te2 = text::ClipTextConfig::clip_bigg();
  c.image_encoder = vision::ClipVisionConfig::vit_h14();
  c.vae = vae::KLConfig::sdxl();
  return c;
}

ConditionerConfig ConditionerConfig::tiny() {
  ConditionerConfig c;
  c.te1.vocab_size = kByteVocab;
  c.te1.hidden_size = 8;
  c.te1.intermediate_size = 16;
  c.te1.num_hidden_layers = 2;
  c.te1.num_attention_heads = 2;
  c.te1.projection_dim = 8;
  c.te1.hidden_act = "quick_gelu";
  c.te2 = c.te1;
  c.te2.hidden_size = 16;
  c.te2.intermediate_size = 32;
  c.te2.projection_dim = 16;
  c.te2.hidden_act = "gelu";
  // 28 / 14 = 2 x 2 patches + the class token: T = 5.
  c.image_encoder.hidden_size = 12;
  c.image_encoder.intermediate_size = 24;
  c.image_encoder.num_hidden_layers = 2;
  c.image_encoder.num_attention_heads = 2;
  c.image_encoder.image_size = 28;
  c.image_encoder.patch_size = 14;
  c.image_encoder.projection_dim = 8;
  c.vae.block_out_channels = {8, 8, 8, 8};
  c.vae.layers_per_block = 1;
  c.vae.norm_num_groups = 4;
  c.vae.sample_size = 64;
  c.byte_level_tokenizers = true;
  return c;
}

Conditioner::Conditioner(ConditionerConfig config, at::Device device, at::ScalarType dtype)
    : config_(std::move(config)), device_(device), dtype_(dtype) {
  TORCH_CHECK(at::isFloatingType(dtype_), "Conditioner: dtype must be floating, got ", dtype_);
  const at::TensorOptions cpu = at::TensorOptions().dtype(at::kFloat).device(at::kCPU);
  te1_ = text::ClipTextModel(config_.te1, /*with_projection=*/false, cpu);
  te2_ = text::ClipTextModel(config_.te2, /*with_projection=*/true, cpu);
  image_encoder_ = vision::ClipVisionModel(config_.image_encoder, /*with_projection=*/true, cpu);
  vae_ = vae::AutoencoderKL(config_.vae, cpu);
  const auto place = [this](torch::nn::Module& m) {
    m.to(device_, dtype_);
    m.eval();
  };
  place(*te1_);
  place(*te2_);
  place(*image_encoder_);
  place(*vae_);
  if (config_.byte_level_tokenizers) {
    TORCH_CHECK(config_.te1.vocab_size == kByteVocab && config_.te2.vocab_size == kByteVocab,
                "Conditioner: byte-level tokenizers need text encoders with vocab_size ", kByteVocab);
    text::ClipTokenizerOptions o1, o2;
    o1.max_length = config_.te1.max_position_embeddings;
    o2.max_length = config_.te2.max_position_embeddings;
    o2.pad_id = 0;  // tokenizer_2 pads with `!` (id 0)
    tok1_ = text::ClipTokenizer::byte_level(o1);
    tok2_ = text::ClipTokenizer::byte_level(o2);
  }
}

void Conditioner::load(const ConditionerFiles& files) {
  TORCH_CHECK(!files.sdxl_folder.empty(),
              "Conditioner::load: no SDXL folder (text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, vae/)");
  TORCH_CHECK(!files.image_encoder.empty(), "Conditioner::load: no image encoder folder (CLIP ViT-H/14)");
  const fs::path sdxl(files.sdxl_folder);
  require(sdxl, "SDXL folder");
  const fs::path vae_dir = files.vae.empty() ? sdxl / "vae" : fs::path(files.vae);
  const fs::path image_dir(files.image_encoder);
  require_text_folder(sdxl / "text_encoder", "text encoder");
  require_text_folder(sdxl / "text_encoder_2", "text encoder 2");
  for (const char* t : {"tokenizer", "tokenizer_2"}) {
    require(sdxl / t / "vocab.json", std::string(t) + " vocabulary");
    require(sdxl / t / "merges.txt", std::string(t) + " merges");
  }
  require(vae_dir / "config.json", "VAE config");
  require(vae_dir / "diffusion_pytorch_model.safetensors", "VAE weights");
  require(image_dir / "config.json", "image encoder config");
  require(image_dir / "model.safetensors", "image encoder weights");

  const at::TensorOptions options = at::TensorOptions().dtype(dtype_).device(device_);
  text::ClipTextModel te1 = text::clip_text_from_pretrained((sdxl / "text_encoder").string(), options);
  text::ClipTextModel te2 = text::clip_text_from_pretrained((sdxl / "text_encoder_2").string(), options);
  TORCH_CHECK(te2->with_projection, "Conditioner::load: ", (sdxl / "text_encoder_2").string(),
              " is not a CLIPTextModelWithProjection (its config.json architectures)");
  vision::ClipVisionModel image_encoder = vision::clip_vision_from_pretrained(image_dir.string(), options);
  const vae::KLConfig vae_config = vae::KLConfig::from_file((vae_dir / "config.json").string());
  vae::AutoencoderKL vae(vae_config, options);
  const std::string vae_weights = (vae_dir / "diffusion_pytorch_model.safetensors").string();
  io::load_state_dict(*vae, io::load_file(vae_weights), vae_weights);

  // The sizes the diffusion model consumes must not change under it.
  auto check = [](int64_t got, int64_t want, const std::string& what, const fs::path& where) {
    TORCH_CHECK(got == want, "Conditioner::load: ", what, " of ", where.string(), " is ", got,
                ", the conditioner is configured for ", want);
  };
  check(te1->config.hidden_size, config_.te1.hidden_size, "hidden_size", sdxl / "text_encoder");
  check(te2->config.hidden_size, config_.te2.hidden_size, "hidden_size", sdxl / "text_encoder_2");
  check(te2->config.projection_dim, config_.te2.projection_dim, "projection_dim", sdxl / "text_encoder_2");
  check(image_encoder->config.hidden_size, config_.image_encoder.hidden_size, "hidden_size", image_dir);
  check(vae_config.latent_channels, config_.vae.latent_channels, "latent_channels", vae_dir);

  text::ClipTokenizer tok1 = text::ClipTokenizer::from_pretrained((sdxl / "tokenizer").string());
  text::ClipTokenizer tok2 = text::ClipTokenizer::from_pretrained((sdxl / "tokenizer_2").string());

  te1->eval();
  te2->eval();
  image_encoder->eval();
  vae->eval();
  te1_ = te1;
  te2_ = te2;
  image_encoder_ = image_encoder;
  vae_ = vae;
  tok1_ = std::move(tok1);
  tok2_ = std::move(tok2);
  config_.te1 = te1_->config;
  config_.te2 = te2_->config;
  config_.image_encoder = image_encoder_->vision_model->config;
  config_.vae = vae_config;
  config_.byte_level_tokenizers = false;
}

at::Tensor Conditioner::token_ids(const std::vector<std::string>& prompts, int which) const {
  TORCH_CHECK(which == 1 || which == 2, "Conditioner::token_ids: which must be 1 or 2, got ", which);
  const auto& tok = which == 1 ? tok1_ : tok2_;
  TORCH_CHECK(tok.has_value(), "Conditioner: no tokenizers (call load() for published encoders)");
  const int64_t length = tok->options().max_length;
  at::Tensor ids = at::empty({static_cast<int64_t>(prompts.size()), length}, at::kLong);  // [B, L]
  auto* out = ids.data_ptr<int64_t>();
  for (const auto& row : tok->encode_batch(prompts)) {
    std::copy(row.begin(), row.end(), out);
    out += length;
  }
  return ids;
}

text::SdxlPromptEmbeds Conditioner::encode_prompts(const std::vector<std::string>& prompts) {
  TORCH_CHECK(!prompts.empty(), "Conditioner::encode_prompts: no prompts");
  at::NoGradGuard no_grad;
  const at::Tensor ids1 = token_ids(prompts, 1).to(device_);
  const at::Tensor ids2 = token_ids(prompts, 2).to(device_);
  text::SdxlPromptEmbeds e = text::encode_sdxl_prompt(te1_, te2_, ids1, ids2);
  return {e.context.to(at::kFloat), e.pooled.to(at::kFloat)};  // [B, L, C1 + C2], [B, P]
}

at::Tensor Conditioner::clip_features(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "Conditioner::clip_features: images must be [B, 3, H, W], got ",
              images.sizes());
  return image_features(vision::clip_preprocess(images.to(device_), config_.image_encoder.image_size));
}

at::Tensor Conditioner::image_features(const at::Tensor& pixel_values) {
  const int64_t s = config_.image_encoder.image_size;
  TORCH_CHECK(pixel_values.dim() == 4 && pixel_values.size(1) == config_.image_encoder.num_channels &&
                  pixel_values.size(2) == s && pixel_values.size(3) == s,
              "Conditioner::image_features: pixel_values must be [B, ", config_.image_encoder.num_channels, ", ", s,
              ", ", s, "], got ", pixel_values.sizes());
  at::NoGradGuard no_grad;
  return image_encoder_->forward(pixel_values.to(device_, dtype_)).penultimate_hidden_state.to(at::kFloat);  // [B, T, D]
}

at::Tensor Conditioner::clip_uncond() {
  const int64_t s = config_.image_encoder.image_size;
  return image_features(at::zeros({1, config_.image_encoder.num_channels, s, s}));  // [1, T, D]
}

at::Tensor Conditioner::encode_latents(const at::Tensor& images) {
  at::NoGradGuard no_grad;
  vae::LatentDistribution d = vae_->encode(images.to(device_, dtype_));
  d.mean = d.mean.to(at::kFloat);  // scale in float32, not in a 16-bit compute dtype
  return vae_->to_unet_latents(d);  // [B, 4, H/8, W/8]
}

at::Tensor Conditioner::decode_latents(const at::Tensor& latents) {
  at::NoGradGuard no_grad;
  return vae_->decode(vae_->from_unet_latents(latents.to(device_, at::kFloat))).to(at::kFloat);  // [B, 3, 8h, 8w]
}

}  // namespace lookahead::model
