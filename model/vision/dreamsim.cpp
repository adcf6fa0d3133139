// DreamSim ensemble (see dreamsim.h): the extractors and the embedding, the cache-folder loader
// with its PEFT LoRA merge, and the random cache-folder writer of `lookahead model init`.
#include "model/vision/dreamsim.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "model/init/random_weights.h"
#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/io/torch_checkpoint.h"
#include "model/nn/skip_init.h"

namespace lookahead::model::vision {
namespace {

namespace fs = std::filesystem;

constexpr std::array<double, 3> kDreamSimImagenetMean{0.485, 0.456, 0.406};
constexpr std::array<double, 3> kDreamSimImagenetStd{0.229, 0.224, 0.225};
constexpr std::array<double, 3> kDreamSimClipMean{0.48145466, 0.4578275, 0.40821073};
constexpr std::array<double, 3> kDreamSimClipStd{0.26862954, 0.26130258, 0.27577711};

// PEFT saves an adapter's tensors under the PeftModel's `base_model.model.` (adapter name removed).
constexpr const char* kDreamSimAdapterPrefix = "base_model.model.";
constexpr const char* kDreamSimLoraA = ".lora_A.weight";
constexpr const char* kDreamSimLoraB = ".lora_B.weight";
// LoRA matrices of write_random_dreamsim: with the release's scale 1/32 at r 16 the merged update
// of a qkv weight has about a quarter of the std (0.02) of the weight itself.
constexpr double kDreamSimRandomLoraStd = 0.2;

// PEFT 0.21.2's LoraConfig fields (dataclasses.fields(LoraConfig)); the parity test checks the list.
constexpr auto kDreamSimLoraKeys = std::to_array<io::ConfigKey>({
    {"task_type", io::KeyUse::kDefaultOnly, "null",
     "a task type makes PEFT wrap the model in a task class whose forward the package does not call"},
    {"peft_type", io::KeyUse::kHonoured, nullptr, "the adapter kind; only LORA"},
    {"auto_mapping", io::KeyUse::kMetadata, nullptr, "base-model class hint for the Hub"},
    {"peft_version", io::KeyUse::kMetadata, nullptr, "the PEFT version that wrote the file"},
    {"base_model_name_or_path", io::KeyUse::kMetadata, nullptr, "where the base model came from"},
    {"revision", io::KeyUse::kMetadata, nullptr, "Hub revision of the base model"},
    {"inference_mode", io::KeyUse::kMetadata, nullptr, "trainability of the adapter; the package freezes all"},
    {"r", io::KeyUse::kHonoured, nullptr, "rank: lora_A is [r, in], lora_B [out, r], scale lora_alpha / r"},
    {"target_modules", io::KeyUse::kHonoured, nullptr,
     "a list of module names, matched as PEFT does (the name, or a '.'-separated suffix of it); a string "
     "(PEFT's regular-expression form) is refused"},
    {"exclude_modules", io::KeyUse::kDefaultOnly, "null", "modules removed from the targets"},
    {"lora_alpha", io::KeyUse::kHonoured, nullptr, "scale lora_alpha / r"},
    {"lora_dropout", io::KeyUse::kMetadata, nullptr, "dropout of the LoRA input in training; the package runs eval()"},
    {"fan_in_fan_out", io::KeyUse::kDefaultOnly, "false", "weights stored transposed (Conv1D layers)"},
    {"bias", io::KeyUse::kDefaultOnly, "\"none\"", "'all' / 'lora_only' also train and save biases"},
    {"use_rslora", io::KeyUse::kDefaultOnly, "false", "rank-stabilized scale lora_alpha / sqrt(r)"},
    {"modules_to_save", io::KeyUse::kDefaultOnly, "null", "whole modules saved beside the adapter and swapped in"},
    {"init_lora_weights", io::KeyUse::kHonoured, nullptr,
     "true / false only pick starting values that the saved matrices replace; the named schemes (pissa, olora, "
     "loftq, ...) also rewrite the base weights and are refused"},
    {"layers_to_transform", io::KeyUse::kDefaultOnly, "null", "restricts the targets to some layer indices"},
    {"layers_pattern", io::KeyUse::kInert, nullptr, "read only with layers_to_transform"},
    {"rank_pattern", io::KeyUse::kDefaultOnly, "{}", "per-layer ranks"},
    {"alpha_pattern", io::KeyUse::kDefaultOnly, "{}", "per-layer alphas"},
    {"megatron_config", io::KeyUse::kDefaultOnly, "null", "Megatron parallel linear layers"},
    {"megatron_core", io::KeyUse::kInert, nullptr, "read only with megatron_config"},
    {"trainable_token_indices", io::KeyUse::kDefaultOnly, "null", "trainable rows of embedding tables"},
    {"loftq_config", io::KeyUse::kInert, nullptr, "read only with init_lora_weights 'loftq'"},
    {"eva_config", io::KeyUse::kInert, nullptr, "read only with init_lora_weights 'eva'"},
    {"corda_config", io::KeyUse::kInert, nullptr, "read only with init_lora_weights 'corda'"},
    {"lora_ga_config", io::KeyUse::kInert, nullptr, "read only with init_lora_weights 'lora_ga'"},
    {"use_dora", io::KeyUse::kDefaultOnly, "false", "weight-decomposed LoRA (a magnitude vector per layer)"},
    {"velora_config", io::KeyUse::kDefaultOnly, "null", "the VeLoRA variant"},
    {"alora_invocation_tokens", io::KeyUse::kDefaultOnly, "null", "activated LoRA (applies after given tokens)"},
    {"use_qalora", io::KeyUse::kDefaultOnly, "false", "quantization-aware LoRA (pooled inputs)"},
    {"qalora_group_size", io::KeyUse::kInert, nullptr, "read only with use_qalora"},
    {"monteclora_config", io::KeyUse::kDefaultOnly, "null", "Monte-Carlo LoRA sampling"},
    {"layer_replication", io::KeyUse::kDefaultOnly, "null", "repeats layers of the base model"},
    {"runtime_config", io::KeyUse::kMetadata, nullptr, "runtime-only GPU offload; PEFT drops it when loading"},
    {"lora_bias", io::KeyUse::kDefaultOnly, "false", "a bias on lora_B"},
    {"target_parameters", io::KeyUse::kDefaultOnly, "null", "LoRA on raw parameters instead of modules"},
    {"use_bdlora", io::KeyUse::kDefaultOnly, "null", "block-diagonal LoRA"},
    {"arrow_config", io::KeyUse::kDefaultOnly, "null", "Arrow routing between adapters"},
    {"kasa_config", io::KeyUse::kDefaultOnly, "null", "the KaSA variant"},
    {"ensure_weight_tying", io::KeyUse::kInert, nullptr, "read only for tied layers (modules_to_save, token indices)"},
});

bool dreamsim_ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

DreamSimExtractorOptions dreamsim_extractor(std::string model_type, DinoVitOptions vit, int64_t dim, int64_t depth,
                                            int64_t heads) {
  DreamSimExtractorOptions e;
  e.model_type = std::move(model_type);
  e.vit = vit.embed_dim(dim).depth(depth).num_heads(heads).mlp_hidden(4 * dim);
  // The package reads block 11 (ViT-B's last); networks with fewer blocks read their last.
  e.cls_layer = std::min<int64_t>(11, depth - 1);
  return e;
}

// ---- loading ------------------------------------------------------------------------------------

// One base network's file.
struct DreamSimSource {
  const char* model_type;
  const char* file;
  const char* prefix;  // of the ViT keys inside the file
  const char* what;    // for "not found" messages
};

constexpr std::array<DreamSimSource, 3> kDreamSimSources{{
    {"dino_vitb16", kDreamSimDinoHubFile, "",
     "torch hub's DINO ViT-B/16 state dict, which dreamsim's torch.hub.load downloads into <cache_dir>/checkpoints"},
    {"clip_vitb16", kDreamSimClipFile, "state_dict.", "OpenAI CLIP ViT-B/16 converted by dreamsim"},
    {"open_clip_vitb16", kDreamSimOpenClipFile, "state_dict.", "OpenCLIP ViT-B/16 converted by dreamsim"},
}};

const at::Tensor& dreamsim_need(const std::map<std::string, at::Tensor>& w, const std::string& key,
                                const std::string& path, const std::string& prefix) {
  auto it = w.find(key);
  TORCH_CHECK(it != w.end(), "dreamsim: ", path, " has no tensor '", prefix, key, "'");
  return it->second;
}

// The ViT's sizes from its state dict (keys without `prefix`); what the shapes cannot say (the
// head count) follows the rule documented at load_dreamsim.
DinoVitOptions dreamsim_infer_vit(const std::map<std::string, at::Tensor>& w, DinoVitOptions vit,
                                  const std::string& path, const std::string& prefix) {
  auto shape_error = [&](const std::string& key, const at::Tensor& t, const char* expected) {
    return c10::str("dreamsim: ", path, ": '", prefix, key, "' must be ", expected, ", got ", t.sizes());
  };
  const at::Tensor& cls = dreamsim_need(w, "cls_token", path, prefix);
  TORCH_CHECK(cls.dim() == 3 && cls.size(0) == 1 && cls.size(1) == 1, shape_error("cls_token", cls, "[1, 1, C]"));
  const int64_t c = cls.size(2);
  const at::Tensor& patch = dreamsim_need(w, "patch_embed.proj.weight", path, prefix);
  TORCH_CHECK(patch.dim() == 4 && patch.size(0) == c && patch.size(2) == patch.size(3) && patch.size(2) > 0,
              shape_error("patch_embed.proj.weight", patch, "[C, 3, p, p]"));
  const at::Tensor& pos = dreamsim_need(w, "pos_embed", path, prefix);
  const auto grid = pos.dim() == 3 && pos.size(1) > 1
                        ? static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(pos.size(1) - 1))))
                        : int64_t{0};
  TORCH_CHECK(grid > 0 && grid * grid + 1 == pos.size(1) && pos.size(0) == 1 && pos.size(2) == c,
              shape_error("pos_embed", pos, "[1, g*g + 1, C]"));
  int64_t depth = 0;
  while (w.count("blocks." + std::to_string(depth) + ".norm1.weight")) ++depth;
  TORCH_CHECK(depth > 0, "dreamsim: ", path, " has no tensor '", prefix, "blocks.0.norm1.weight'");
  const at::Tensor& fc1 = dreamsim_need(w, "blocks.0.mlp.fc1.weight", path, prefix);
  TORCH_CHECK(fc1.dim() == 2 && fc1.size(1) == c, shape_error("blocks.0.mlp.fc1.weight", fc1, "[hidden, C]"));
  TORCH_CHECK(c % 16 == 0, "dreamsim: ", path, ": width ", c, " (from '", prefix,
              "cls_token') is not a multiple of 16, so its head count is unknown");
  return vit.embed_dim(c)
      .depth(depth)
      .num_heads(c % 64 == 0 ? c / 64 : c / 16)
      .mlp_hidden(fc1.size(0))
      .patch_size(patch.size(2))
      .in_chans(patch.size(1))
      .image_size(grid * patch.size(2))
      .qkv_bias(w.count("blocks.0.attn.qkv.bias") > 0);
}

nlohmann::json dreamsim_read_json(const fs::path& path) {
  std::ifstream in(path);
  TORCH_CHECK(in, "dreamsim: cannot open ", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "dreamsim: ", path.string(), " is not valid JSON: ", e.what());
  }
}

// Merges the PEFT LoRA of `dir` into `model`'s float32 Linear weights (see load_dreamsim).
void dreamsim_merge_lora(DreamSimImpl& model, const fs::path& dir) {
  const fs::path config_path = dir / "adapter_config.json";
  const std::string origin = config_path.string();
  TORCH_CHECK(fs::is_regular_file(config_path), "dreamsim: ", origin, " not found (the ensemble's PEFT LoRA)");
  const nlohmann::json j = dreamsim_read_json(config_path);
  io::refuse_unsupported(j, kDreamSimLoraKeys, origin);
  // The package reads the last five itself; PEFT needs peft_type to pick the config class.
  for (const char* key : {"peft_type", "r", "lora_alpha", "lora_dropout", "bias", "target_modules"})
    TORCH_CHECK(j.contains(key), "dreamsim: ", origin, " has no '", key, "'");
  TORCH_CHECK(j["peft_type"] == "LORA", "dreamsim: ", origin, ": peft_type = ", j["peft_type"].dump(),
              " is not supported (only LORA)");
  TORCH_CHECK(j["r"].is_number_integer() && j["r"].get<int64_t>() > 0, "dreamsim: ", origin,
              ": r must be a positive integer, got ", j["r"].dump());
  TORCH_CHECK(j["lora_alpha"].is_number(), "dreamsim: ", origin, ": lora_alpha must be a number, got ",
              j["lora_alpha"].dump());
  if (j.contains("init_lora_weights") && !j["init_lora_weights"].is_null())
    TORCH_CHECK(j["init_lora_weights"].is_boolean(), "dreamsim: ", origin,
                ": init_lora_weights = ", j["init_lora_weights"].dump(), " is not supported (only true / false)");
  const nlohmann::json& targets = j["target_modules"];
  TORCH_CHECK(targets.is_array() && !targets.empty(), "dreamsim: ", origin, ": target_modules = ", targets.dump(),
              " is not supported (a non-empty list of module names)");
  const int64_t rank = j["r"].get<int64_t>();
  const double scale = j["lora_alpha"].get<double>() / static_cast<double>(rank);

  // PEFT's rule for a list: a module is a target when its name is an entry or ends in "." + entry.
  std::map<std::string, nn::LoraLinearImpl*> targeted;
  const auto modules = model.named_modules("", /*include_self=*/false);
  for (const auto& entry : targets) {
    TORCH_CHECK(entry.is_string(), "dreamsim: ", origin, ": target_modules entry ", entry.dump(), " is not a name");
    const std::string t = entry.get<std::string>();
    int matched = 0;
    for (const auto& item : modules) {
      const std::string& name = item.key();
      if (name != t && !dreamsim_ends_with(name, "." + t)) continue;
      auto* linear = dynamic_cast<nn::LoraLinearImpl*>(item.value().get());
      TORCH_CHECK(linear != nullptr, "dreamsim: ", origin, ": target_modules entry '", t, "' matches ", name,
                  ", which is not a Linear layer (only Linear targets are merged)");
      targeted.emplace(name, linear);
      ++matched;
    }
    TORCH_CHECK(matched > 0, "dreamsim: ", origin, ": target_modules entry '", t,
                "' names no layer of the ensemble (the DINO projection head, unused by 'cls', is not built)");
  }

  // PEFT reads adapter_model.safetensors when present, else adapter_model.bin.
  const fs::path safetensors = dir / "adapter_model.safetensors", bin = dir / "adapter_model.bin";
  const bool use_safetensors = fs::is_regular_file(safetensors);
  const fs::path weights_path = use_safetensors ? safetensors : bin;
  const std::string wpath = weights_path.string();
  TORCH_CHECK(use_safetensors || fs::is_regular_file(bin), "dreamsim: ", dir.string(),
              " has neither adapter_model.safetensors nor adapter_model.bin");
  const auto tensors = use_safetensors ? io::load_file(wpath) : io::load_torch_file(wpath);

  std::map<std::string, std::pair<at::Tensor, at::Tensor>> pairs;  // layer -> (A, B)
  const std::string prefix = kDreamSimAdapterPrefix;
  for (const auto& [key, t] : tensors) {
    TORCH_CHECK(key.rfind(prefix, 0) == 0, "dreamsim: ", wpath, ": key '", key,
                "' is not a PEFT adapter key (base_model.model.<layer>.lora_A.weight / .lora_B.weight)");
    const bool is_a = dreamsim_ends_with(key, kDreamSimLoraA), is_b = dreamsim_ends_with(key, kDreamSimLoraB);
    TORCH_CHECK(is_a || is_b, "dreamsim: ", wpath, ": key '", key,
                "' is not a LoRA matrix (lora_A.weight / lora_B.weight; other adapter tensors are not supported)");
    const std::string suffix = is_a ? kDreamSimLoraA : kDreamSimLoraB;
    const std::string layer = key.substr(prefix.size(), key.size() - prefix.size() - suffix.size());
    TORCH_CHECK(targeted.count(layer), "dreamsim: ", wpath, ": key '", key, "' is for ", layer,
                ", which target_modules ", targets.dump(), " of ", origin, " does not name");
    (is_a ? pairs[layer].first : pairs[layer].second) = t;
  }
  at::NoGradGuard no_grad;
  for (const auto& [layer, linear] : targeted) {
    const std::string key_a = prefix + layer + kDreamSimLoraA, key_b = prefix + layer + kDreamSimLoraB;
    const auto& [a, b] = pairs[layer];
    TORCH_CHECK(a.defined(), "dreamsim: ", wpath, " has no tensor '", key_a, "' (", layer, " is a target)");
    TORCH_CHECK(b.defined(), "dreamsim: ", wpath, " has no tensor '", key_b, "' (", layer, " is a target)");
    const int64_t out = linear->weight.size(0), in = linear->weight.size(1);
    TORCH_CHECK(a.dim() == 2 && a.size(0) == rank && a.size(1) == in, "dreamsim: ", wpath, ": '", key_a, "' must be [",
                rank, ", ", in, "], got ", a.sizes());
    TORCH_CHECK(b.dim() == 2 && b.size(0) == out && b.size(1) == rank, "dreamsim: ", wpath, ": '", key_b, "' must be [",
                out, ", ", rank, "], got ", b.sizes());
    linear->weight.add_(at::matmul(b.to(at::kFloat), a.to(at::kFloat)), scale);  // [out, in]
  }
}

// ---- writing ------------------------------------------------------------------------------------

std::vector<io::TensorInfo> dreamsim_vit_entries(const DinoVitOptions& vit, at::ScalarType dtype,
                                                 const std::string& prefix) {
  DinoVisionTransformer meta(DinoVitOptions(vit).tensor_options(at::TensorOptions().device(at::kMeta)));
  std::vector<io::TensorInfo> out;
  for (const auto& p : meta->named_parameters()) {
    io::TensorInfo e;
    e.name = prefix + p.key();
    e.dtype = dtype;
    e.shape = p.value().sizes().vec();
    out.push_back(std::move(e));
  }
  return out;
}

io::TensorInfo dreamsim_entry(std::string name, at::ScalarType dtype, std::vector<int64_t> shape) {
  io::TensorInfo e;
  e.name = std::move(name);
  e.dtype = dtype;
  e.shape = std::move(shape);
  return e;
}

std::string dreamsim_adapter_config(const DreamSimWriteOptions& w) {
  // The keys PEFT 0.21's save_pretrained writes that matter here, at their values for the release.
  nlohmann::ordered_json j;
  j["alpha_pattern"] = nlohmann::ordered_json::object();
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = nullptr;
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["lora_alpha"] = w.lora_alpha;
  j["lora_dropout"] = 0.3;
  j["modules_to_save"] = nullptr;
  j["peft_type"] = "LORA";
  j["r"] = w.lora_rank;
  j["rank_pattern"] = nlohmann::ordered_json::object();
  j["revision"] = nullptr;
  j["target_modules"] = {"qkv"};
  j["task_type"] = nullptr;
  j["use_dora"] = false;
  j["use_rslora"] = false;
  return j.dump(2) + "\n";
}

}  // namespace

// ---- options ------------------------------------------------------------------------------------

DreamSimExtractorOptions DreamSimExtractorOptions::dino(int64_t dim, int64_t depth, int64_t heads) {
  DreamSimExtractorOptions e = dreamsim_extractor("dino_vitb16", DinoVitOptions::dino_vitb16(), dim, depth, heads);
  e.feature = DreamSimFeature::kCls;
  e.mean = kDreamSimImagenetMean;
  e.std = kDreamSimImagenetStd;
  return e;
}

DreamSimExtractorOptions DreamSimExtractorOptions::clip(int64_t dim, int64_t depth, int64_t heads, int64_t proj_dim) {
  DreamSimExtractorOptions e = dreamsim_extractor("clip_vitb16", DinoVitOptions::clip_vitb16(), dim, depth, heads);
  e.feature = DreamSimFeature::kEmbedding;
  e.proj_dim = proj_dim;
  e.mean = kDreamSimClipMean;
  e.std = kDreamSimClipStd;
  return e;
}

DreamSimExtractorOptions DreamSimExtractorOptions::open_clip(int64_t dim, int64_t depth, int64_t heads,
                                                             int64_t proj_dim) {
  DreamSimExtractorOptions e =
      dreamsim_extractor("open_clip_vitb16", DinoVitOptions::open_clip_vitb16(), dim, depth, heads);
  e.feature = DreamSimFeature::kEmbedding;
  e.proj_dim = proj_dim;
  e.mean = kDreamSimClipMean;  // the package normalizes OpenCLIP with OpenAI CLIP's statistics too
  e.std = kDreamSimClipStd;
  return e;
}

int64_t DreamSimExtractorOptions::feature_dim() const {
  return feature == DreamSimFeature::kCls ? vit.embed_dim() : proj_dim;
}

DreamSimOptions DreamSimOptions::ensemble() {
  DreamSimOptions o;
  o.extractors = {DreamSimExtractorOptions::dino(768, 12, 12), DreamSimExtractorOptions::clip(768, 12, 12, 512),
                  DreamSimExtractorOptions::open_clip(768, 12, 12, 512)};
  return o;
}

DreamSimOptions DreamSimOptions::tiny() {
  DreamSimOptions o;
  o.extractors = {DreamSimExtractorOptions::dino(32, 2, 2), DreamSimExtractorOptions::clip(32, 2, 2, 16),
                  DreamSimExtractorOptions::open_clip(32, 2, 2, 16)};
  return o;
}

int64_t DreamSimOptions::embed_dim() const {
  int64_t d = 0;
  for (const auto& e : extractors) d += e.feature_dim();
  return d;
}

int64_t DreamSimOptions::image_size() const {
  TORCH_CHECK(!extractors.empty(), "dreamsim: no extractors");
  return extractors.front().vit.image_size();
}

// ---- modules ------------------------------------------------------------------------------------

DreamSimExtractorImpl::DreamSimExtractorImpl(const DreamSimExtractorOptions& options_,
                                             at::TensorOptions tensor_options_)
    : options(options_), tensor_options(tensor_options_) {
  reset();
}

void DreamSimExtractorImpl::reset() {
  TORCH_CHECK(
      options.feature != DreamSimFeature::kCls || (options.cls_layer >= 0 && options.cls_layer < options.vit.depth()),
      "dreamsim: ", options.model_type, ": cls_layer ", options.cls_layer, " is not a block (depth ",
      options.vit.depth(), ")");
  model = register_module("model", DinoVisionTransformer(DinoVitOptions(options.vit).tensor_options(tensor_options)));
  if (options.feature == DreamSimFeature::kEmbedding) {
    TORCH_CHECK(options.proj_dim > 0, "dreamsim: ", options.model_type, ": 'embedding' needs proj_dim > 0");
    proj = register_parameter("proj", at::empty({options.vit.embed_dim(), options.proj_dim}, tensor_options));
    if (!proj.is_meta() && !nn::SkipInit::active()) {
      at::NoGradGuard no_grad;
      proj.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(options.vit.embed_dim())));
    }
  } else {
    proj = at::Tensor();
  }
}

at::Tensor DreamSimExtractorImpl::forward(const at::Tensor& normalized) {
  if (options.feature == DreamSimFeature::kCls) return model->block_tokens(normalized, options.cls_layer).select(1, 0);
  return at::matmul(model->forward(normalized), proj);  // [B, C] @ [C, P]
}

DreamSimImpl::DreamSimImpl(const DreamSimOptions& options_) : options(options_) { reset(); }

void DreamSimImpl::reset() {
  TORCH_CHECK(!options.extractors.empty(), "dreamsim: no extractors");
  for (const auto& e : options.extractors)
    TORCH_CHECK(e.vit.image_size() == options.image_size(), "dreamsim: ", e.model_type, " takes ", e.vit.image_size(),
                "² images, ", options.extractors.front().model_type, " ", options.image_size(), "²");
  auto holder = register_module("extractor_list", std::make_shared<torch::nn::Module>("ModuleList"));
  extractors.clear();
  for (size_t i = 0; i < options.extractors.size(); ++i)
    extractors.push_back(
        holder->register_module(std::to_string(i), DreamSimExtractor(options.extractors[i], options.tensor_options)));
}

int64_t DreamSimImpl::num_extractors() const { return static_cast<int64_t>(extractors.size()); }

torch::nn::Module& DreamSimImpl::extractor(int64_t i) {
  TORCH_CHECK(i >= 0 && i < num_extractors(), "dreamsim: extractor ", i, " of ", num_extractors());
  return *extractors[static_cast<size_t>(i)];
}

std::string DreamSimImpl::extractor_prefix(int64_t i) const {
  TORCH_CHECK(i >= 0 && i < num_extractors(), "dreamsim: extractor ", i, " of ", num_extractors());
  return "extractor_list." + std::to_string(i) + ".";
}

at::Tensor DreamSimImpl::features(int64_t i, const at::Tensor& images01) {
  TORCH_CHECK(i >= 0 && i < num_extractors(), "dreamsim: extractor ", i, " of ", num_extractors());
  const int64_t s = options.image_size();
  TORCH_CHECK(images01.dim() == 4 && images01.size(1) == 3 && images01.size(2) == s && images01.size(3) == s,
              "dreamsim: images must be [B, 3, ", s, ", ", s, "] in [0, 1], got ", images01.sizes(),
              " (dreamsim_input() resizes)");
  DreamSimExtractor& e = extractors[static_cast<size_t>(i)];
  const at::Tensor x = images01.to(e->model->cls_token.scalar_type());
  const auto& o = e->options;
  // Rounded once from double to the compute dtype, as torchvision's Normalize makes them.
  const auto stats = [&](const std::array<double, 3>& v) {
    return at::tensor(at::ArrayRef<double>(v.data(), 3), x.options().dtype(at::kDouble))
        .to(x.scalar_type())
        .view({1, 3, 1, 1});
  };
  const at::Tensor mean = stats(o.mean), std = stats(o.std);
  return e->forward((x - mean) / std);  // [B, d_i]
}

at::Tensor DreamSimImpl::combine(const std::vector<at::Tensor>& features) const {
  TORCH_CHECK(static_cast<int64_t>(features.size()) == num_extractors(), "dreamsim: combine takes ", num_extractors(),
              " features, got ", features.size());
  at::Tensor e = at::cat(features, -1);  // [B, D]
  if (!options.normalize_embeds) return e;
  e = e - e.mean({-1}, /*keepdim=*/true);
  return e / at::linalg_vector_norm(e, 2, {-1}, /*keepdim=*/true);
}

at::Tensor DreamSimImpl::embed(const at::Tensor& images01) {
  std::vector<at::Tensor> f;
  for (int64_t i = 0; i < num_extractors(); ++i) f.push_back(features(i, images01));
  return combine(f);
}

at::Tensor DreamSimImpl::distance(const at::Tensor& a01, const at::Tensor& b01) {
  return 1.0 - at::cosine_similarity(embed(a01), embed(b01), /*dim=*/-1, /*eps=*/1e-8);
}

at::Tensor dreamsim_input(const at::Tensor& images_pm1, int64_t size) {
  TORCH_CHECK(images_pm1.dim() == 4 && images_pm1.size(1) == 3, "dreamsim_input: images must be [B, 3, H, W], got ",
              images_pm1.sizes());
  TORCH_CHECK(size > 0, "dreamsim_input: size must be positive, got ", size);
  return at::upsample_bicubic2d((images_pm1 + 1.0) / 2.0, {size, size}, /*align_corners=*/false);
}

io::ConfigKeyTable dreamsim_lora_config_keys() { return kDreamSimLoraKeys; }

// ---- loader -------------------------------------------------------------------------------------

DreamSim load_dreamsim(const std::string& folder, at::Device device, at::ScalarType dtype) {
  const fs::path dir(folder);
  TORCH_CHECK(fs::is_directory(dir), "dreamsim: ", folder, " is not a folder (the dreamsim package's cache_dir)");
  DreamSimOptions options;
  std::vector<std::map<std::string, at::Tensor>> vit_weights;
  std::vector<at::Tensor> projs;
  std::vector<std::string> paths;
  for (const DreamSimSource& src : kDreamSimSources) {
    const fs::path path = dir / src.file;
    const std::string p = path.string();
    TORCH_CHECK(fs::is_regular_file(path), "dreamsim: ", p, " not found (", src.what, ")");
    const std::string prefix = src.prefix;
    std::map<std::string, at::Tensor> w;
    for (auto& [key, t] : io::load_torch_file(p)) {
      // Other top-level entries of the CLIP files are not read by the package either.
      if (key.rfind(prefix, 0) == 0) w.emplace(key.substr(prefix.size()), t);
    }
    TORCH_CHECK(!w.empty(), "dreamsim: ", p, " has no tensors", prefix.empty() ? "" : " under '" + prefix + "'");
    const bool is_dino = std::string(src.model_type) == "dino_vitb16";
    DreamSimExtractorOptions e = is_dino ? DreamSimExtractorOptions::dino(768, 12, 12)
                                 : std::string(src.model_type) == "clip_vitb16"
                                     ? DreamSimExtractorOptions::clip(768, 12, 12, 512)
                                     : DreamSimExtractorOptions::open_clip(768, 12, 12, 512);
    e.vit = dreamsim_infer_vit(w, e.vit, p, prefix);
    e.cls_layer = std::min<int64_t>(11, e.vit.depth() - 1);
    at::Tensor proj;
    if (!is_dino) {
      auto it = w.find("proj");
      TORCH_CHECK(it != w.end(), "dreamsim: ", p, " has no tensor '", prefix, "proj'");
      proj = it->second;
      w.erase(it);
      TORCH_CHECK(proj.dim() == 2 && proj.size(0) == e.vit.embed_dim() && proj.size(1) > 0, "dreamsim: ", p, ": '",
                  prefix, "proj' must be [", e.vit.embed_dim(), ", P], got ", proj.sizes());
      e.proj_dim = proj.size(1);
    }
    options.extractors.push_back(e);
    vit_weights.push_back(std::move(w));
    projs.push_back(proj);
    paths.push_back(p);
  }
  for (size_t i = 1; i < options.extractors.size(); ++i)
    TORCH_CHECK(options.extractors[i].vit.image_size() == options.image_size(), "dreamsim: ", paths[i], " holds a ",
                options.extractors[i].vit.image_size(), "² network, ", paths[0], " a ", options.image_size(), "² one");

  DreamSim model{nullptr};
  {
    nn::SkipInit skip;  // every weight is loaded next
    model = DreamSim(options);
  }
  for (size_t i = 0; i < options.extractors.size(); ++i) {
    DreamSimExtractor& e = model->extractors[i];
    io::load_state_dict(*e->model, vit_weights[i], paths[i]);
    if (projs[i].defined()) {
      at::NoGradGuard no_grad;
      e->proj.copy_(projs[i]);
    }
  }
  vit_weights.clear();
  dreamsim_merge_lora(*model, dir / kDreamSimLoraDir);
  model->to(device, dtype);
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  model->eval();
  return model;
}

// ---- writer -------------------------------------------------------------------------------------

std::vector<DreamSimFileLayout> dreamsim_file_layout(const DreamSimOptions& options, const DreamSimWriteOptions& w) {
  std::vector<DreamSimFileLayout> out;
  std::vector<io::TensorInfo> lora;
  for (size_t i = 0; i < options.extractors.size(); ++i) {
    const DreamSimExtractorOptions& e = options.extractors[i];
    const int64_t c = e.vit.embed_dim();
    if (e.model_type == "dino_vitb16") {
      out.push_back(
          {kDreamSimDinoHubFile, dreamsim_vit_entries(e.vit, w.dtype, ""), true, io::TorchSaveNesting::kFlat});
      // DINOHead(in, out): mlp.{0,2,4} and the weight-normed last_layer, as the package reads them.
      const int64_t hidden = std::min<int64_t>(2048, 4 * c), bottleneck = std::min<int64_t>(256, c);
      const std::string h = "student.module.head.";
      out.push_back({kDreamSimDinoHeadFile,
                     {dreamsim_entry(h + "mlp.0.weight", w.dtype, {hidden, c}),
                      dreamsim_entry(h + "mlp.0.bias", w.dtype, {hidden}),
                      dreamsim_entry(h + "mlp.2.weight", w.dtype, {hidden, hidden}),
                      dreamsim_entry(h + "mlp.2.bias", w.dtype, {hidden}),
                      dreamsim_entry(h + "mlp.4.weight", w.dtype, {bottleneck, hidden}),
                      dreamsim_entry(h + "mlp.4.bias", w.dtype, {bottleneck}),
                      dreamsim_entry(h + "last_layer.weight", w.dtype, {hidden, bottleneck})},
                     true,
                     io::TorchSaveNesting::kTopLevel});
    } else if (e.model_type == "clip_vitb16" || e.model_type == "open_clip_vitb16") {
      auto entries = dreamsim_vit_entries(e.vit, w.dtype, "state_dict.");
      entries.push_back(dreamsim_entry("state_dict.proj", w.dtype, {c, e.proj_dim}));
      out.push_back({e.model_type == "clip_vitb16" ? kDreamSimClipFile : kDreamSimOpenClipFile, std::move(entries),
                     true, io::TorchSaveNesting::kTopLevel});
    } else {
      TORCH_CHECK(false, "dreamsim: cannot write model_type '", e.model_type,
                  "' (dino_vitb16, clip_vitb16, open_clip_vitb16)");
    }
    for (int64_t n = 0; n < e.vit.depth(); ++n) {
      const std::string layer = std::string(kDreamSimAdapterPrefix) + "extractor_list." + std::to_string(i) +
                                ".model.blocks." + std::to_string(n) + ".attn.qkv";
      lora.push_back(dreamsim_entry(layer + kDreamSimLoraA, w.dtype, {w.lora_rank, c}));
      lora.push_back(dreamsim_entry(layer + kDreamSimLoraB, w.dtype, {3 * c, w.lora_rank}));
    }
  }
  const std::string lora_dir = kDreamSimLoraDir;
  out.push_back({lora_dir + (w.adapter_bin ? "/adapter_model.bin" : "/adapter_model.safetensors"), std::move(lora),
                 w.adapter_bin, io::TorchSaveNesting::kFlat});
  return out;
}

std::vector<std::string> write_random_dreamsim(const std::string& folder, const DreamSimOptions& options, uint64_t seed,
                                               const DreamSimWriteOptions& w) {
  TORCH_CHECK(w.lora_rank > 0, "dreamsim: lora_rank must be positive, got ", w.lora_rank);
  const fs::path root = fs::absolute(folder).lexically_normal();
  std::vector<std::string> written;
  for (const DreamSimFileLayout& file : dreamsim_file_layout(options, w)) {
    const fs::path path = root / file.path;
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    TORCH_CHECK(!ec, "dreamsim: cannot create folder ", path.parent_path().string(), ": ", ec.message());
    // The file joins the name so that CLIP and OpenCLIP, whose keys are equal, differ in value; the
    // adapter's values do not depend on its format.
    const std::string rel = file.path.rfind(kDreamSimLoraDir, 0) == 0 ? std::string(kDreamSimLoraDir) : file.path;
    const io::TensorSource source = [seed, rel](const io::TensorInfo& e) {
      io::TensorInfo named = e;
      named.name = rel + ":" + e.name;
      const bool is_lora = dreamsim_ends_with(e.name, kDreamSimLoraA) || dreamsim_ends_with(e.name, kDreamSimLoraB);
      return init::random_weight(seed, named, is_lora ? kDreamSimRandomLoraStd : init::kInitStd);
    };
    if (file.torch_save)
      io::save_torch_file(path.string(), file.tensors, source, file.nesting);
    else
      io::save_file_streamed(path.string(), file.tensors, source, {{"format", "pt"}});
    written.push_back(path.string());
  }
  const fs::path config = root / kDreamSimLoraDir / "adapter_config.json";
  std::ofstream out(config, std::ios::binary);
  out << dreamsim_adapter_config(w);
  out.close();
  TORCH_CHECK(out, "dreamsim: cannot write ", config.string());
  written.push_back(config.string());
  return written;
}

}  // namespace lookahead::model::vision
