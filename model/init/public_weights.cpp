// The public weight layouts of a preset, written with random values (see public_weights.h).
#include "model/init/public_weights.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <utility>

#include "model/init/random_weights.h"
#include "model/init/weight_tables.h"
#include "model/io/safetensors.h"
#include "model/io/torch_save.h"
#include "model/lookahead/conditioner.h"
#include "model/lookahead/generation.h"
#include "model/lookahead/lookahead_model.h"
#include "model/text/clip_tokenizer.h"
#include "model/text/clip_tokenizer_files.h"
#include "model/vision/dreamsim.h"

namespace lookahead::model::init {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

/// What differs between the presets.
struct PresetSpec {
  std::string folder;  ///< name of the diffusers pipeline folder
  unet::UNetConfig unet;
  int64_t unet_sample_size = 128;
  ConditionerConfig encoders;
  adapters::ResamplerOptions resampler;
  vae::TinyConfig taesd;
  int64_t lcm_rank = 64;
  double lcm_alpha = 8;  ///< the LCM script's PEFT default lora_alpha (scale 8 / 64)
  face::IResNetOptions iresnet;
  std::string iresnet_name;
  vision::ClipVisionConfig clip_vision = vision::ClipVisionConfig::vit_l14();  ///< the CLIP score's vision tower
  vision::DreamSimOptions dreamsim = vision::DreamSimOptions::ensemble();      ///< the DreamSim loss's networks
  bool turbo = false;
};

PresetSpec preset_spec(InitPreset preset) {
  PresetSpec s;
  if (preset == InitPreset::kTiny) {
    const LookaheadModelConfig m = LookaheadModelConfig::tiny();
    s.folder = "stable-diffusion-xl-base-1.0";
    s.unet = m.unet;
    s.unet_sample_size = 8;
    s.encoders = ConditionerConfig::tiny();
    // The real CLIP tokenizer is written beside them: its ids must index the token tables.
    s.encoders.te1.vocab_size = s.encoders.te2.vocab_size = 49408;
    s.encoders.te1.eos_token_id = s.encoders.te2.eos_token_id = 2;
    s.resampler = m.resampler;
    s.taesd = m.taesd;
    s.lcm_rank = 4;
    s.lcm_alpha = 4;
    s.iresnet = face::IResNetOptions::named(m.arcface).layers(m.arcface_layers);
    s.iresnet_name = m.arcface;
    s.clip_vision = vision::ClipVisionConfig::tiny();
    s.dreamsim = vision::DreamSimOptions::tiny();
    return s;
  }
  const LookaheadModelConfig m = LookaheadModelConfig::sdxl();
  s.turbo = preset == InitPreset::kSdxlTurbo;
  s.folder = s.turbo ? "sdxl-turbo" : "stable-diffusion-xl-base-1.0";
  s.unet = m.unet;
  s.unet_sample_size = s.turbo ? 64 : 128;  // sdxl-turbo generates at 512²
  s.encoders = ConditionerConfig::sdxl();
  s.resampler = m.resampler;
  s.taesd = m.taesd;
  s.iresnet = face::IResNetOptions::named("iresnet100");
  s.iresnet_name = "iresnet100";
  return s;
}

const char* torch_dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    default: return "float32";
  }
}

/// diffusers' unet/config.json as the published SDXL file spells it: scalars where every block
/// has the same value, the reversed depths left to diffusers, the sample size.
std::string unet_config_json(const unet::UNetConfig& c, int64_t sample_size) {
  json j = json::parse(c.to_json());
  auto collapse = [&](const char* key) {
    const auto& v = j[key];
    if (v.is_array() && !v.empty() && std::all_of(v.begin(), v.end(), [&](const json& x) { return x == v[0]; })) {
      const json first = v[0];
      j[key] = first;
    }
  };
  collapse("cross_attention_dim");
  collapse("layers_per_block");
  std::vector<int64_t> reversed(c.transformer_layers_per_block.rbegin(), c.transformer_layers_per_block.rend());
  if (reversed == c.reverse_transformer_layers_per_block) j["reverse_transformer_layers_per_block"] = nullptr;
  j["sample_size"] = sample_size;
  j["_diffusers_version"] = "0.19.0.dev0";
  return j.dump(2) + "\n";
}

std::string clip_text_config_json(const text::ClipTextConfig& c, bool with_projection, at::ScalarType dtype) {
  const json j{{"architectures", {with_projection ? "CLIPTextModelWithProjection" : "CLIPTextModel"}},
               {"attention_dropout", 0.0},
               {"bos_token_id", c.bos_token_id},
               {"dropout", 0.0},
               {"eos_token_id", c.eos_token_id},
               {"hidden_act", c.hidden_act},
               {"hidden_size", c.hidden_size},
               {"initializer_factor", 1.0},
               {"initializer_range", 0.02},
               {"intermediate_size", c.intermediate_size},
               {"layer_norm_eps", c.layer_norm_eps},
               {"max_position_embeddings", c.max_position_embeddings},
               {"model_type", "clip_text_model"},
               {"num_attention_heads", c.num_attention_heads},
               {"num_hidden_layers", c.num_hidden_layers},
               {"pad_token_id", c.pad_token_id},
               {"projection_dim", c.projection_dim},
               {"torch_dtype", torch_dtype_name(dtype)},
               {"transformers_version", "4.32.0.dev0"},
               {"vocab_size", c.vocab_size}};
  return j.dump(2) + "\n";
}

std::string clip_vision_config_json(const vision::ClipVisionConfig& c, at::ScalarType dtype) {
  const json j{{"architectures", {"CLIPVisionModelWithProjection"}},
               {"attention_dropout", 0.0},
               {"dropout", 0.0},
               {"hidden_act", c.hidden_act},
               {"hidden_size", c.hidden_size},
               {"image_size", c.image_size},
               {"initializer_factor", 1.0},
               {"initializer_range", 0.02},
               {"intermediate_size", c.intermediate_size},
               {"layer_norm_eps", c.layer_norm_eps},
               {"model_type", "clip_vision_model"},
               {"num_attention_heads", c.num_attention_heads},
               {"num_channels", c.num_channels},
               {"num_hidden_layers", c.num_hidden_layers},
               {"patch_size", c.patch_size},
               {"projection_dim", c.projection_dim},
               {"torch_dtype", torch_dtype_name(dtype)},
               {"transformers_version", "4.28.0.dev0"}};
  return j.dump(2) + "\n";
}

/// transformers' CLIPConfig of a CLIPModel with towers `text` and `vision`.
std::string clip_model_config_json(const text::ClipTextConfig& text, const vision::ClipVisionConfig& vision,
                                   int64_t projection_dim) {
  auto tower = [](const std::string& text_json, const char* model_type) {
    json t = json::parse(text_json);
    for (const char* k : {"architectures", "torch_dtype", "transformers_version"}) t.erase(k);
    t["model_type"] = model_type;
    return t;
  };
  const json j{{"architectures", {"CLIPModel"}},
               {"initializer_factor", 1.0},
               {"logit_scale_init_value", 2.6592},
               {"model_type", "clip"},
               {"projection_dim", projection_dim},
               {"text_config", tower(clip_text_config_json(text, false, at::kFloat), "clip_text_model")},
               {"torch_dtype", "float32"},
               {"transformers_version", "4.21.3"},
               {"vision_config", tower(clip_vision_config_json(vision, at::kFloat), "clip_vision_model")}};
  return j.dump(2) + "\n";
}

/// transformers' CLIPImageProcessor settings of OpenAI CLIP (224², bicubic, OpenAI mean / std).
std::string clip_preprocessor_json(int64_t size) {
  const json j{{"crop_size", {{"height", size}, {"width", size}}},
               {"do_center_crop", true},
               {"do_normalize", true},
               {"do_resize", true},
               {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
               {"image_processor_type", "CLIPImageProcessor"},
               {"image_std", {0.26862954, 0.26130258, 0.27577711}},
               {"resample", 3},
               {"size", {{"shortest_edge", size}}}};
  return j.dump(2) + "\n";
}

std::string scheduler_config_json(bool turbo) {
  json j;
  j["_class_name"] = turbo ? "EulerAncestralDiscreteScheduler" : "EulerDiscreteScheduler";
  j["_diffusers_version"] = "0.19.0.dev0";
  const nlohmann::json sdxl = sdxl_scheduler_config();
  for (const auto& [k, v] : sdxl.items())
    if (k != "_class_name") j[k] = v;
  if (turbo) j["timestep_spacing"] = "trailing";  // sdxl-turbo samples from t = 999 in 1-4 steps
  return j.dump(2) + "\n";
}

std::string model_index_json(bool turbo) {
  const json j{{"_class_name", "StableDiffusionXLPipeline"},
               {"_diffusers_version", "0.19.0.dev0"},
               {"force_zeros_for_empty_prompt", true},
               {"scheduler", {"diffusers", turbo ? "EulerAncestralDiscreteScheduler" : "EulerDiscreteScheduler"}},
               {"text_encoder", {"transformers", "CLIPTextModel"}},
               {"text_encoder_2", {"transformers", "CLIPTextModelWithProjection"}},
               {"tokenizer", {"transformers", "CLIPTokenizer"}},
               {"tokenizer_2", {"transformers", "CLIPTokenizer"}},
               {"unet", {"diffusers", "UNet2DConditionModel"}},
               {"vae", {"diffusers", "AutoencoderKL"}}};
  return j.dump(2) + "\n";
}

/// Writes files into options.out and records them.
class SetWriter {
 public:
  SetWriter(const InitOptions& options, InitFiles& files) : o_(options), files_(files) {}

  std::string dir(const std::string& rel) {
    const fs::path p = fs::path(o_.out) / rel;
    std::error_code ec;
    fs::create_directories(p, ec);
    TORCH_CHECK(!ec, "model init: cannot create folder ", p.string(), ": ", ec.message());
    return p.string();
  }
  void text(const std::string& path, const std::string& content) {
    std::ofstream out(path, std::ios::binary);
    out << content;
    out.close();
    TORCH_CHECK(out, "model init: cannot write ", path);
    done(path);
  }
  /// Random values for `entries`; kohya `.alpha` scalars hold `alpha`.
  io::TensorSource source(double alpha = 0) const {
    const uint64_t seed = o_.seed;
    return [seed, alpha](const io::TensorInfo& e) {
      if (e.name.ends_with(".alpha") && e.shape.empty()) return at::full({}, alpha, at::TensorOptions().dtype(e.dtype));
      return random_weight(seed, e);
    };
  }
  void safetensors(const std::string& path, const Entries& entries, const std::map<std::string, std::string>& meta = {},
                   double alpha = 0) {
    io::save_file_streamed(path, entries, source(alpha), meta);
    done(path);
  }
  void torch_save(const std::string& path, const Entries& entries, io::TorchSaveNesting nesting) {
    io::save_torch_file(path, entries, source(), nesting);
    done(path);
  }
  void copy(const std::string& from, const std::string& to) {
    std::error_code ec;
    fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
    TORCH_CHECK(!ec, "model init: cannot copy ", from, " to ", to, ": ", ec.message());
    done(to);
  }
  /// A file written by someone else into the set.
  void record(const std::string& path) { done(path); }

 private:
  void done(const std::string& path) {
    const uint64_t bytes = fs::file_size(path);
    files_.files.push_back(path);
    files_.bytes += bytes;
    if (o_.on_file) o_.on_file(path, bytes);
  }
  const InitOptions& o_;
  InitFiles& files_;
};

}  // namespace

std::optional<InitPreset> parse_init_preset(const std::string& name) {
  if (name == "sdxl") return InitPreset::kSdxl;
  if (name == "sdxl-turbo") return InitPreset::kSdxlTurbo;
  if (name == "tiny") return InitPreset::kTiny;
  return std::nullopt;
}

InitFiles write_public_weights(const InitOptions& o) {
  TORCH_CHECK(fs::is_directory(o.out), "model init: ", o.out, " is not a folder");
  TORCH_CHECK(fs::is_regular_file(o.bpe_vocab), "model init: CLIP vocabulary not found: ", o.bpe_vocab,
              " (open_clip's bpe_simple_vocab_16e6.txt.gz)");
  for (const char* net : {"pnet.pt", "rnet.pt", "onet.pt"})
    TORCH_CHECK(fs::is_regular_file(fs::path(o.mtcnn) / net),
                "model init: MTCNN weights not found: ", (fs::path(o.mtcnn) / net).string(),
                " (facenet-pytorch's data folder)");
  const PresetSpec s = preset_spec(o.preset);
  const auto pick = [&](at::ScalarType published) { return o.dtype.value_or(published); };
  const at::ScalarType sdxl_dtype = pick(at::kHalf), fp32 = pick(at::kFloat);
  InitFiles f;
  SetWriter w(o, f);
  const fs::path root = fs::absolute(o.out).lexically_normal();

  // The diffusers pipeline folder.
  const std::string base = s.folder;
  f.sdxl_folder = (root / base).string();
  w.text(w.dir(base) + "/model_index.json", model_index_json(s.turbo));
  w.text(w.dir(base + "/scheduler") + "/scheduler_config.json", scheduler_config_json(s.turbo));
  const text::ClipTokenizer tokenizer = text::ClipTokenizer::from_bpe_gz(o.bpe_vocab);
  text::write_clip_tokenizer_folder(tokenizer, w.dir(base + "/tokenizer"),
                                    {"<|endoftext|>", "openai/clip-vit-large-patch14"});
  text::write_clip_tokenizer_folder(tokenizer, w.dir(base + "/tokenizer_2"),
                                    {"!", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"});
  for (const char* t : {"tokenizer", "tokenizer_2"})
    for (const char* file : {"vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"})
      w.record((root / base / t / file).string());
  const std::string te1 = w.dir(base + "/text_encoder"), te2 = w.dir(base + "/text_encoder_2");
  w.text(te1 + "/config.json", clip_text_config_json(s.encoders.te1, false, sdxl_dtype));
  w.safetensors(te1 + "/model.safetensors", clip_text_entries(s.encoders.te1, false, sdxl_dtype), {{"format", "pt"}});
  w.text(te2 + "/config.json", clip_text_config_json(s.encoders.te2, true, sdxl_dtype));
  w.safetensors(te2 + "/model.safetensors", clip_text_entries(s.encoders.te2, true, sdxl_dtype), {{"format", "pt"}});
  const std::string vae_dir = w.dir(base + "/vae");
  w.text(vae_dir + "/config.json", s.encoders.vae.to_json() + "\n");
  w.safetensors(vae_dir + "/diffusion_pytorch_model.safetensors", kl_vae_entries(s.encoders.vae, sdxl_dtype));
  const std::string unet_dir = w.dir(base + "/unet");
  f.unet_config = unet_dir + "/config.json";
  f.unet_weights = unet_dir + "/diffusion_pytorch_model.safetensors";
  w.text(f.unet_config, unet_config_json(s.unet, s.unet_sample_size));
  w.safetensors(f.unet_weights, unet_entries(s.unet, sdxl_dtype));

  // sdxl-vae-fp16-fix: the SDXL VAE's layout, no fp32 upcast needed.
  vae::KLConfig fix = s.encoders.vae;
  fix.force_upcast = false;
  f.vae = w.dir("sdxl-vae-fp16-fix");
  w.text(f.vae + "/config.json", fix.to_json() + "\n");
  w.safetensors(f.vae + "/diffusion_pytorch_model.safetensors", kl_vae_entries(fix, sdxl_dtype));

  // IP-Adapter Plus Face SDXL and its image encoder.
  f.image_encoder = w.dir("IP-Adapter/models/image_encoder");
  w.text(f.image_encoder + "/config.json", clip_vision_config_json(s.encoders.image_encoder, fp32));
  w.safetensors(f.image_encoder + "/model.safetensors", clip_vision_entries(s.encoders.image_encoder, fp32),
                {{"format", "pt"}});
  const std::string ip_dir = w.dir("IP-Adapter/sdxl_models");
  const Entries ip = ip_adapter_entries(s.unet, s.resampler, sdxl_dtype);
  f.ip_adapter_safetensors = ip_dir + "/ip-adapter-plus-face_sdxl_vit-h.safetensors";
  f.ip_adapter = ip_dir + "/ip-adapter-plus-face_sdxl_vit-h.bin";
  w.safetensors(f.ip_adapter_safetensors, ip);
  w.torch_save(f.ip_adapter, ip, io::TorchSaveNesting::kTopLevel);

  // LCM-LoRA SDXL (kohya keys, as the published file) and TAESDXL.
  f.lcm_lora = w.dir("lcm-lora-sdxl") + "/pytorch_lora_weights.safetensors";
  w.safetensors(f.lcm_lora, lcm_lora_entries(s.unet, s.lcm_rank, sdxl_dtype), {}, s.lcm_alpha);
  const std::string taesd_dir = w.dir("taesdxl");
  f.taesd = taesd_dir + "/diffusion_pytorch_model.safetensors";
  w.text(taesd_dir + "/config.json", s.taesd.to_json() + "\n");
  w.safetensors(f.taesd, tiny_vae_entries(s.taesd, fp32));

  // Face networks: ArcFace IR-SE50 and iresnet (torch.save state dicts), facenet-pytorch's MTCNN.
  f.arcface = w.dir("arcface") + "/model_ir_se50.pth";
  w.torch_save(f.arcface, irse_entries(face::IRSEOptions(), fp32), io::TorchSaveNesting::kFlat);
  f.arcface_iresnet_name = s.iresnet_name;
  f.arcface_iresnet = w.dir("arcface/" + s.iresnet_name) + "/backbone.pth";
  w.torch_save(f.arcface_iresnet, iresnet_entries(s.iresnet, fp32), io::TorchSaveNesting::kFlat);
  f.mtcnn = w.dir("facenet-pytorch/data");
  for (const char* net : {"pnet.pt", "rnet.pt", "onet.pt"})
    w.copy((fs::path(o.mtcnn) / net).string(), f.mtcnn + "/" + net);

  // The CLIP score's model (openai/clip-vit-large-patch14: the SDXL text_encoder's text tower and a
  // ViT-L/14 vision tower; the tiny preset's tiny towers), with the same tokenizer.
  f.clip_model = w.dir("clip-vit-large-patch14");
  text::ClipTextConfig clip_text = s.encoders.te1;
  vision::ClipVisionConfig clip_vision = s.clip_vision;
  clip_text.projection_dim = clip_vision.projection_dim;
  w.text(f.clip_model + "/config.json", clip_model_config_json(clip_text, clip_vision, clip_vision.projection_dim));
  w.text(f.clip_model + "/preprocessor_config.json", clip_preprocessor_json(clip_vision.image_size));
  w.safetensors(f.clip_model + "/model.safetensors",
                clip_model_entries(clip_text, clip_vision, clip_vision.projection_dim, fp32), {{"format", "pt"}});
  text::write_clip_tokenizer_folder(tokenizer, f.clip_model, {"<|endoftext|>", "openai/clip-vit-large-patch14"});
  for (const char* file : {"vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"})
    w.record((fs::path(f.clip_model) / file).string());

  // The DreamSim loss's networks: the dreamsim package's cache folder (float32, as released).
  f.dreamsim = w.dir("dreamsim");
  vision::DreamSimWriteOptions dreamsim_files;
  dreamsim_files.dtype = fp32;
  for (const std::string& path : vision::write_random_dreamsim(f.dreamsim, s.dreamsim, o.seed, dreamsim_files))
    w.record(path);
  return f;
}

}  // namespace lookahead::model::init
