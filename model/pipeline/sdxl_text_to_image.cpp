// SDXL text-to-image (see sdxl_text_to_image.h).
#include "model/pipeline/sdxl_text_to_image.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <utility>

#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/sched/make_sampler.h"
#include "model/vae/vae_config.h"

namespace lookahead::model::pipeline {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json(const fs::path& path, const std::string& what) {
  std::ifstream in(path);
  TORCH_CHECK(in, "SDXL pipeline: ", what, " not found: ", path.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    TORCH_CHECK(false, "SDXL pipeline: ", path.string(), " is not valid JSON: ", e.what());
  }
}

void require_dir(const fs::path& dir, const std::string& what) {
  TORCH_CHECK(fs::is_directory(dir), "SDXL pipeline: the folder has no ", what, " (", dir.string(), " is missing)");
}

/// `<dir>/<stem>[.<variant>].safetensors`, or its sharded `.safetensors[.<variant>].index.json`.
std::string weights_file(const fs::path& dir, const std::string& stem, const std::string& variant) {
  const std::string v = variant.empty() ? "" : "." + variant;
  const std::vector<fs::path> candidates = {dir / (stem + v + ".safetensors"),
                                            dir / (stem + ".safetensors.index" + v + ".json")};
  for (const auto& c : candidates)
    if (fs::is_regular_file(c)) return c.string();
  TORCH_CHECK(false, "SDXL pipeline: no weights in ", dir.string(), " (looked for ", candidates[0].filename().string(),
              " and ", candidates[1].filename().string(), ")");
}

/// Each diffusers / transformers component model_index.json must list as [library, class].
void check_component(const json& index, const std::string& key, const std::string& file) {
  TORCH_CHECK(index.contains(key), "SDXL pipeline: ", file, " lists no `", key, "` component");
  const json& v = index.at(key);
  TORCH_CHECK(v.is_array() && v.size() == 2 && v[0].is_string() && v[1].is_string(), "SDXL pipeline: ", file, ": `",
              key, "` must be [library, class], got ", v.dump());
}

/// Draws what torch.randn(shape, generator=Generator().manual_seed(seed)) draws, one generator
/// per batch row: [B, ...] float32 on the CPU.
at::Tensor seeded_randn(const std::vector<at::Generator>& generators, at::IntArrayRef row_shape, at::ScalarType dtype) {
  std::vector<at::Tensor> rows;
  rows.reserve(generators.size());
  for (const auto& g : generators) rows.push_back(at::randn(row_shape, g, at::TensorOptions().dtype(dtype)));
  return at::cat(rows, 0);
}

}  // namespace

void TextToImageOptions::validate() const {
  TORCH_CHECK(steps >= 1 && steps <= 1000, "text-to-image: steps must be in [1, 1000], got ", steps);
  TORCH_CHECK(std::isfinite(guidance_scale) && guidance_scale >= 0,
              "text-to-image: guidance_scale must be a finite number >= 0, got ", guidance_scale);
  TORCH_CHECK(height >= 0 && width >= 0, "text-to-image: height and width must be >= 0 (0: the pipeline's default)");
}

PipelineFolder locate_pipeline(const std::string& root, const std::string& variant) {
  const fs::path dir(root);
  TORCH_CHECK(fs::is_directory(dir), "SDXL pipeline: folder not found: ", root);
  PipelineFolder f;
  f.root = root;
  const fs::path index_path = dir / "model_index.json";
  const json index = read_json(index_path, "model_index.json");
  TORCH_CHECK(index.is_object() && index.contains("_class_name") && index["_class_name"].is_string(),
              "SDXL pipeline: ", index_path.string(), " has no `_class_name`");
  f.class_name = index["_class_name"].get<std::string>();
  TORCH_CHECK(f.class_name == "StableDiffusionXLPipeline", "SDXL pipeline: ", index_path.string(),
              ": `_class_name` is ", f.class_name, "; only StableDiffusionXLPipeline folders are supported");
  if (index.contains("force_zeros_for_empty_prompt")) {
    TORCH_CHECK(index["force_zeros_for_empty_prompt"].is_boolean(), "SDXL pipeline: ", index_path.string(),
                ": `force_zeros_for_empty_prompt` must be true or false");
    f.force_zeros_for_empty_prompt = index["force_zeros_for_empty_prompt"].get<bool>();
  }
  for (const char* key : {"unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"}) {
    check_component(index, key, index_path.string());
    require_dir(dir / key, std::string(key) + "/ folder");
  }
  f.scheduler_class = index["scheduler"][1].get<std::string>();
  const std::string v = variant.empty() ? "" : "." + variant;
  f.unet_config = (dir / "unet" / "config.json").string();
  f.unet_weights = weights_file(dir / "unet", "diffusion_pytorch_model", variant);
  f.vae_config = (dir / "vae" / "config.json").string();
  f.vae_weights = weights_file(dir / "vae", "diffusion_pytorch_model", variant);
  f.text_encoder = (dir / "text_encoder").string();
  f.text_encoder_2 = (dir / "text_encoder_2").string();
  f.tokenizer = (dir / "tokenizer").string();
  f.tokenizer_2 = (dir / "tokenizer_2").string();
  f.scheduler_config = (dir / "scheduler" / "scheduler_config.json").string();
  for (const auto& file : {f.unet_config, f.vae_config, f.scheduler_config})
    TORCH_CHECK(fs::is_regular_file(file), "SDXL pipeline: missing ", file);
  for (const auto& te : {f.text_encoder, f.text_encoder_2}) {
    TORCH_CHECK(fs::is_regular_file(fs::path(te) / "config.json"), "SDXL pipeline: missing ", te, "/config.json");
    TORCH_CHECK(fs::is_regular_file(fs::path(te) / ("model" + v + ".safetensors")), "SDXL pipeline: missing ", te,
                "/model", v, ".safetensors");
  }
  for (const auto& tok : {f.tokenizer, f.tokenizer_2})
    for (const char* file : {"vocab.json", "merges.txt"})
      TORCH_CHECK(fs::is_regular_file(fs::path(tok) / file), "SDXL pipeline: missing ", tok, "/", file);
  return f;
}

std::unique_ptr<sched::Sampler> make_pipeline_sampler(const PipelineFolder& folder) {
  json config = read_json(folder.scheduler_config, "scheduler config");
  TORCH_CHECK(config.is_object(), "SDXL pipeline: ", folder.scheduler_config, " is not a JSON object");
  config["_class_name"] = folder.scheduler_class;
  try {
    return sched::make_sampler_from_class(config);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "SDXL pipeline: ", folder.root, "/model_index.json and ", folder.scheduler_config, ": ",
                e.what_without_backtrace());
  }
}

SdxlTextToImage SdxlTextToImage::from_pretrained(const std::string& folder, at::Device device, at::ScalarType dtype,
                                                 const std::string& variant) {
  TORCH_CHECK(at::isFloatingType(dtype), "SDXL pipeline: dtype must be floating, got ", dtype);
  SdxlTextToImage p;
  p.folder_ = locate_pipeline(folder, variant);
  p.device_ = device;
  p.dtype_ = dtype;
  const PipelineFolder& f = p.folder_;
  const at::TensorOptions options = at::TensorOptions().dtype(dtype).device(device);

  // The scheduler first: an unsupported class is the cheapest error to find.
  p.sampler_ = make_pipeline_sampler(f);

  const json unet_json = read_json(f.unet_config, "unet config");
  TORCH_CHECK(unet_json.contains("sample_size") && unet_json["sample_size"].is_number_integer(),
              "SDXL pipeline: ", f.unet_config, " has no integer `sample_size`");
  p.sample_size_ = unet_json["sample_size"].get<int64_t>();
  p.unet_ = unet::UNet2DConditionModel(unet::UNetConfig::from_json(unet_json.dump(), f.unet_config), options);
  io::load_state_dict(*p.unet_, io::load_file(f.unet_weights), f.unet_weights);
  p.unet_->eval();
  TORCH_CHECK(p.unet_->config().addition_embed_type == "text_time", "SDXL pipeline: ", f.unet_config,
              ": addition_embed_type must be \"text_time\" (an SDXL UNet)");

  const vae::KLConfig vae_config = vae::KLConfig::from_file(f.vae_config);
  p.vae_scale_ = int64_t{1} << (vae_config.block_out_channels.size() - 1);
  // diffusers decodes a float16 pipeline's latents in float32 when the VAE asks for it.
  p.vae_upcast_ = dtype == at::kHalf && vae_config.force_upcast;
  p.vae_ = vae::AutoencoderKL(vae_config, options.dtype(p.vae_upcast_ ? at::kFloat : dtype));
  io::load_state_dict(*p.vae_, io::load_file(f.vae_weights), f.vae_weights);
  p.vae_->eval();

  const std::string te_weights = variant.empty() ? "model.safetensors" : "model." + variant + ".safetensors";
  p.te1_ = text::clip_text_from_pretrained(f.text_encoder, options, te_weights);
  p.te2_ = text::clip_text_from_pretrained(f.text_encoder_2, options, te_weights);
  TORCH_CHECK(p.te2_->with_projection, "SDXL pipeline: ", f.text_encoder_2,
              " is not a CLIPTextModelWithProjection (its config.json architectures)");
  p.te1_->eval();
  p.te2_->eval();
  p.tok1_ = text::ClipTokenizer::from_pretrained(f.tokenizer);
  p.tok2_ = text::ClipTokenizer::from_pretrained(f.tokenizer_2);

  // The added conditioning must fit the UNet: 6 time ids × addition_time_embed_dim + pooled width.
  const auto& uc = p.unet_->config();
  const int64_t passed = 6 * uc.addition_time_embed_dim + p.te2_->config.projection_dim;
  TORCH_CHECK(passed == uc.projection_class_embeddings_input_dim, "SDXL pipeline: ", f.unet_config,
              ": projection_class_embeddings_input_dim is ", uc.projection_class_embeddings_input_dim,
              " but 6 × addition_time_embed_dim + text_encoder_2 projection_dim = ", passed);
  const int64_t context = p.te1_->config.hidden_size + p.te2_->config.hidden_size;
  for (int64_t c : uc.cross_attention_dim)
    TORCH_CHECK(c == context, "SDXL pipeline: ", f.unet_config, ": cross_attention_dim ", c,
                " differs from the two text encoders' hidden sizes together (", context, ")");
  return p;
}

text::SdxlPromptEmbeds SdxlTextToImage::encode_prompts(const std::vector<std::string>& prompts) {
  TORCH_CHECK(!prompts.empty(), "SDXL pipeline: no prompts");
  at::NoGradGuard no_grad;
  auto ids = [&](const text::ClipTokenizer& tok) {
    const int64_t length = tok.options().max_length;
    at::Tensor t = at::empty({static_cast<int64_t>(prompts.size()), length}, at::kLong);  // [B, L]
    auto* out = t.data_ptr<int64_t>();
    for (const auto& row : tok.encode_batch(prompts)) out = std::copy(row.begin(), row.end(), out);
    return t.to(device_);
  };
  text::SdxlPromptEmbeds e = text::encode_sdxl_prompt(te1_, te2_, ids(*tok1_), ids(*tok2_));
  return {e.context.to(at::kFloat), e.pooled.to(at::kFloat)};
}

TextToImageOutput SdxlTextToImage::generate(const std::vector<std::string>& prompts, const std::vector<uint64_t>& seeds,
                                            const TextToImageOptions& options) {
  options.validate();
  TORCH_CHECK(prompts.size() == seeds.size(), "SDXL pipeline: ", prompts.size(), " prompts but ", seeds.size(),
              " seeds (one seed per image)");
  TORCH_CHECK(!prompts.empty(), "SDXL pipeline: no prompts");
  const int64_t height = options.height ? options.height : default_size();
  const int64_t width = options.width ? options.width : default_size();
  TORCH_CHECK(height % vae_scale_ == 0 && width % vae_scale_ == 0,
              "SDXL pipeline: height and width must be multiples of ", vae_scale_, ", got ", height, "x", width);
  const int64_t b = static_cast<int64_t>(prompts.size());
  const bool cfg = options.guidance_scale > 1.0;
  at::NoGradGuard no_grad;

  text::SdxlPromptEmbeds cond = encode_prompts(prompts);  // [B, 77, C], [B, P]
  at::Tensor context = cond.context, pooled = cond.pooled;
  if (cfg) {
    // diffusers' negative conditioning for an absent negative prompt.
    text::SdxlPromptEmbeds neg = folder_.force_zeros_for_empty_prompt
                                     ? text::SdxlPromptEmbeds{at::zeros_like(context), at::zeros_like(pooled)}
                                     : encode_prompts(std::vector<std::string>(prompts.size(), ""));
    context = at::cat({neg.context, context});  // [2B, 77, C]
    pooled = at::cat({neg.pooled, pooled});     // [2B, P]
  }
  // [orig_h, orig_w, crop_top, crop_left, target_h, target_w] per image.
  const at::Tensor time_ids = at::tensor({static_cast<float>(height), static_cast<float>(width), 0.f, 0.f,
                                          static_cast<float>(height), static_cast<float>(width)})
                                  .view({1, 6})
                                  .expand({context.size(0), 6})
                                  .contiguous();

  std::vector<at::Generator> generators;
  generators.reserve(seeds.size());
  for (uint64_t s : seeds) generators.push_back(at::make_generator<at::CPUGeneratorImpl>(s));

  sched::Sampler& sampler = *sampler_;
  sampler.set_timesteps(options.steps);
  const int64_t channels = unet_->config().in_channels;
  const std::vector<int64_t> row_shape = {1, channels, height / vae_scale_, width / vae_scale_};
  TextToImageOutput out;
  at::Tensor latents = seeded_randn(generators, row_shape, at::kFloat) * sampler.init_noise_sigma();  // [B, 4, h, w]
  out.initial_latents = latents.clone();
  latents = latents.to(device_);

  unet::UNetInputs in;
  in.encoder_hidden_states = context.to(dtype_);
  in.text_embeds = pooled.to(dtype_);
  in.time_ids = time_ids.to(device_, dtype_);
  if (options.sharing) {
    TORCH_CHECK(static_cast<int64_t>(options.sharing->groups.size()) == b, "SDXL pipeline: batch sharing has ",
                options.sharing->groups.size(), " group ids for ", b, " images");
    in.batch_sharing = options.sharing;
    if (cfg) {
      // The unconditional half shares within its own copies of the groups.
      auto both = std::make_shared<nn::BatchSharing>(*options.sharing);
      both->groups.clear();
      const int64_t offset = *std::max_element(options.sharing->groups.begin(), options.sharing->groups.end()) + 1;
      for (int64_t g : options.sharing->groups) both->groups.push_back(g + offset);
      for (int64_t g : options.sharing->groups) both->groups.push_back(g);
      in.batch_sharing = both;
    }
  }
  for (int64_t i = 0; i < sampler.num_steps(); ++i) {
    at::Tensor x = sampler.scale_model_input(latents, i);  // [B, 4, h, w] float32
    if (cfg) x = at::cat({x, x});
    in.sample = x.to(dtype_);
    in.timestep = at::scalar_tensor(sampler.timestep(i), at::TensorOptions().dtype(at::kFloat).device(device_));
    at::Tensor eps = unet_->forward(in).to(at::kFloat);  // [B or 2B, 4, h, w]
    if (cfg) {
      const auto halves = eps.chunk(2);
      eps = halves[0] + options.guidance_scale * (halves[1] - halves[0]);
    }
    at::Tensor noise;
    if (sampler.needs_noise(i)) {
      // Each image's noise from its own generator, in the dtype diffusers draws it in.
      noise = seeded_randn(generators, row_shape, sampler.noise_dtype(eps, latents)).to(device_);
    }
    latents = sampler.step(eps, i, latents, noise).prev_sample;
  }
  out.final_latents = latents.to(at::kCPU, at::kFloat);
  out.images = decode(latents);
  return out;
}

at::Tensor SdxlTextToImage::decode(const at::Tensor& latents) {
  at::NoGradGuard no_grad;
  const at::ScalarType vae_dtype = vae_upcast_ ? at::kFloat : dtype_;
  at::Tensor x = vae_->decode(vae_->from_unet_latents(latents.to(device_, vae_dtype)));  // [B, 3, H, W] ≈ [-1, 1]
  // VaeImageProcessor.postprocess: (x·0.5 + 0.5).clamp(0, 1) on the device, float32 on the CPU,
  // then (·255).round() (half to even, as numpy) to uint8.
  x = (x * 0.5 + 0.5).clamp(0, 1).to(at::kCPU).permute({0, 2, 3, 1}).to(at::kFloat);
  return (x * 255).round().to(at::kByte).contiguous();  // [B, H, W, 3]
}

}  // namespace lookahead::model::pipeline
