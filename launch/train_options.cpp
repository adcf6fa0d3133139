// Options of `lookahead train`: INI sections and flag overrides into TrainConfig.
#include "launch/train_options.h"

#include <boost/program_options/parsers.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include "trainer/weight_check.h"

namespace po = boost::program_options;

// Boost.Program_options reads a custom type through a `validate` overload found by argument-
// dependent lookup, so the configuration enums get theirs in their own namespaces. An unknown
// spelling is an error naming the key and the accepted values.
namespace lookahead::trainer {

template <typename E>
  requires requires { ConfigNames<E>::values; }
void validate(boost::any& out, const std::vector<std::string>& tokens, E*, int) {
  po::validators::check_first_occurrence(out);
  const std::string& token = po::validators::get_single_string(tokens);
  const std::optional<E> value = parse_config_name<E>(token);
  if (!value)
    throw po::error_with_option_name("%canonical_option%: must be " + config_choices<E>() + ", got '" + token + "'");
  out = boost::any(*value);
}

}  // namespace lookahead::trainer

namespace lookahead::dist {

void validate(boost::any& out, const std::vector<std::string>& tokens, Placement* p, int i) {
  trainer::validate(out, tokens, p, i);
}

}  // namespace lookahead::dist

namespace lookahead::model {

void validate(boost::any& out, const std::vector<std::string>& tokens, GuidanceMode* p, int i) {
  trainer::validate(out, tokens, p, i);
}

void validate(boost::any& out, const std::vector<std::string>& tokens, PreviewKind* p, int i) {
  trainer::validate(out, tokens, p, i);
}

void validate(boost::any& out, const std::vector<std::string>& tokens, KvEncoderMode* p, int i) {
  trainer::validate(out, tokens, p, i);
}

namespace sched {

void validate(boost::any& out, const std::vector<std::string>& tokens, SamplerKind* p, int i) {
  trainer::validate(out, tokens, p, i);
}

}  // namespace sched
}  // namespace lookahead::model

namespace lookahead::launch {

namespace {

/// The shortest text that reads back as exactly `v` (1e-05, 0.1, 600): what a user would write,
/// where a fixed precision prints 0.10000000000000001 or rounds 1e-5 away.
std::string format_number(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  return std::string(buf, r.ptr);
}

/// A value as the INI and --help show it: numbers exact and short, booleans as true / false.
template <typename T>
std::string format_typed(const T& v) {
  if constexpr (std::is_enum_v<T>) return std::string(trainer::config_name(v));
  else if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
  else if constexpr (std::is_floating_point_v<T>) return format_number(static_cast<double>(v));
  else if constexpr (std::is_integral_v<T>) return std::to_string(v);
  else return v;
}

template <typename T>
po::typed_value<T>* bind(T& target) {
  // Boost's own default text is lexical_cast: 17 digits for doubles and 0/1 for booleans.
  return po::value<T>(&target)->default_value(target, format_typed(target));
}

std::string format_value(const boost::any& v) {
  if (const auto* x = boost::any_cast<std::string>(&v)) return *x;
  if (const auto* x = boost::any_cast<double>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<int64_t>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<uint64_t>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<bool>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<trainer::Preset>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<trainer::ModelDtype>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<trainer::LossMode>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<trainer::Recompute>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<dist::Placement>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<model::sched::SamplerKind>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<model::GuidanceMode>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<model::PreviewKind>(&v)) return format_typed(*x);
  if (const auto* x = boost::any_cast<model::KvEncoderMode>(&v)) return format_typed(*x);
  return "?";
}

void check(bool ok, const std::string& key, const std::string& message) {
  if (!ok) throw std::invalid_argument("--" + key + ": " + message);
}

void validate(const trainer::TrainConfig& c, ConfigUse use) {
  const auto one_of = [](const std::string& v, std::initializer_list<const char*> allowed) {
    for (const char* a : allowed)
      if (v == a) return true;
    return false;
  };
  check(one_of(c.model.arcface_network, {"irse50", "iresnet50", "iresnet100"}), "model.arcface_network",
        "must be irse50, iresnet50 or iresnet100");
  check(c.model.encoder_lora_rank > 0, "model.encoder_lora_rank", "must be positive");
  check(c.model.kv_lora_rank > 0, "model.kv_lora_rank", "must be positive");
  check(c.loss.lambda_id >= 0, "loss.lambda_id", "must be >= 0");
  check(c.loss.lambda_dreamsim >= 0, "loss.lambda_dreamsim", "must be >= 0");
  check(!(c.loss.preview == model::PreviewKind::kX0 && c.loss.mode == trainer::LossMode::kAlternate &&
          trainer::lookahead_branch_on(c.loss)),
        "loss.preview",
        "x0 previews are decoded from the diffusion branch's own forward, so both losses take one backward; "
        "loss.mode = alternate (an optimizer step between the branches) cannot use them: set loss.mode = sum");
  if (c.loss.lambda_dreamsim > 0 && c.model.preset == trainer::Preset::kSdxl && use != ConfigUse::kEncode)
    check(!c.model.dreamsim.empty(), "model.dreamsim",
          "is required with loss.lambda_dreamsim > 0 and model.preset = sdxl");
  check(c.loss.adapter_drop >= 0 && c.loss.adapter_drop <= 1, "loss.adapter_drop", "must be in [0, 1]");
  check(c.loss.kv_drop >= 0 && c.loss.kv_drop <= 1, "loss.kv_drop", "must be in [0, 1]");
  check(c.loss.alpha_every > 0, "loss.alpha_every", "must be positive");
  check(c.loss.alpha_p_one >= 0 && c.loss.alpha_p_one <= 1, "loss.alpha_p_one", "must be in [0, 1]");
  check(c.loss.alpha_min >= 0 && c.loss.alpha_min <= 1, "loss.alpha_min", "must be in [0, 1]");
  check(c.optim.lr_adapter >= 0, "optim.lr_adapter", "must be >= 0, got " + format_number(c.optim.lr_adapter));
  check(c.optim.lr_lora >= 0, "optim.lr_lora", "must be >= 0, got " + format_number(c.optim.lr_lora));
  check(c.optim.beta1 >= 0 && c.optim.beta1 < 1, "optim.beta1", "must be in [0, 1), got " + format_number(c.optim.beta1));
  check(c.optim.beta2 >= 0 && c.optim.beta2 < 1, "optim.beta2", "must be in [0, 1), got " + format_number(c.optim.beta2));
  check(c.optim.eps > 0, "optim.eps", "must be positive");
  check(c.train.steps > 0, "train.steps", "must be positive");
  check(c.train.batch_per_rank > 0, "train.batch_per_rank", "must be positive");
  check(c.train.threads >= 0, "train.threads", "must be >= 0");
  check(c.train.log_every > 0, "train.log_every", "must be positive");
  check(c.train.checkpoint_every > 0, "train.checkpoint_every", "must be positive");
  check(c.train.keep_checkpoints > 0, "train.keep_checkpoints", "must be positive");
  check(!c.train.out.empty(), "train.out", "must not be empty");
  check(c.dist.max_gathered_units >= 1, "dist.max_gathered_units", "must be >= 1");
  if (use == ConfigUse::kTrain) check(!c.data.train_set.empty(), "data.train_set", "is required (an HDF5 training set, docs/data.md)");
  check(c.eval.identities >= 0, "eval.identities", "must be >= 0");
  check(c.eval.samples > 0, "eval.samples", "must be positive");
  check(c.eval.steps > 0, "eval.steps", "must be positive");
  check(c.eval.resolution > 0 && c.eval.resolution % 8 == 0, "eval.resolution", "must be a positive multiple of 8");
  check(c.eval.every >= 0, "eval.every", "must be >= 0");
  if (c.eval.every > 0) {
    check(!c.eval.eval_set.empty(), "eval.eval_set", "is required with eval.every > 0");
    check(!c.eval.prompts.empty(), "eval.prompts", "is required with eval.every > 0");
  }
  check(c.data.loader_threads >= 1, "data.loader_threads", "must be >= 1");
  check(c.data.resolution > 0, "data.resolution", "must be positive");
  check(c.data.hflip_p >= 0 && c.data.hflip_p <= 1, "data.hflip_p", "must be in [0, 1]");
  if (c.model.preset == trainer::Preset::kSdxl && use != ConfigUse::kEncode) {
    check(!c.model.unet_weights.empty(), "model.unet_weights", "is required with model.preset = sdxl");
    check(!c.model.ip_adapter.empty(), "model.ip_adapter", "is required with model.preset = sdxl");
    // Networks only the lookahead branch runs are required only when it runs (the ablations).
    const bool branch = trainer::lookahead_branch_on(c.loss);
    if (branch && c.loss.preview == model::PreviewKind::kLcm)
      check(!c.model.lcm_lora.empty(), "model.lcm_lora", "is required with model.preset = sdxl and loss.preview = lcm");
    if (branch)
      check(!c.model.taesd.empty(), "model.taesd", "is required with model.preset = sdxl (the preview's decoder)");
    if (c.loss.lambda_id > 0)
      check(!c.model.arcface.empty(), "model.arcface", "is required with model.preset = sdxl and loss.lambda_id > 0");
  }
}

}  // namespace

po::options_description train_options(trainer::TrainConfig& c) {
  po::options_description model("[model]");
  // clang-format off
  model.add_options()
      ("model.preset", bind(c.model.preset),
       "`sdxl` (the published networks) or `tiny` (random-initialized, CPU-sized; weight files set below are "
       "loaded over the random values)")
      ("model.unet_config", bind(c.model.unet_config),
       "diffusers `unet/config.json` (default: the SDXL base config)")
      ("model.unet_weights", bind(c.model.unet_weights),
       "SDXL base UNet weights (`.safetensors`, or a sharded checkpoint's index: `.index.json`, or a diffusers "
       "variant's `diffusion_pytorch_model.safetensors.index.fp16.json`); required with `sdxl`")
      ("model.ip_adapter", bind(c.model.ip_adapter),
       "IP-Adapter Plus face SDXL checkpoint (`.bin` or `.safetensors`); required with `sdxl`")
      ("model.lcm_lora", bind(c.model.lcm_lora),
       "LCM-LoRA SDXL `.safetensors` (kohya, SGM-named kohya, PEFT or diffusers keys: docs/models.md); "
       "required with `sdxl`")
      ("model.taesd", bind(c.model.taesd),
       "TAESDXL weights (`.safetensors`); required with `sdxl`")
      ("model.arcface", bind(c.model.arcface),
       "ArcFace weights (IR-SE50 `.pth` or iresnet `.pth`/`.safetensors`); required with `sdxl`")
      ("model.arcface_network", bind(c.model.arcface_network),
       "`irse50` | `iresnet50` | `iresnet100` (ignored by `tiny`)")
      ("model.mtcnn", bind(c.model.mtcnn),
       "folder with facenet-pytorch's `pnet.pt` / `rnet.pt` / `onet.pt`: MTCNN finds the landmarks of "
       "samples that have none (empty: those samples are left out of the identity loss)")
      ("model.encoder_lora_rank", bind(c.model.encoder_lora_rank),
       "rank of the KV-encoder LoRAs (> 0)")
      ("model.kv_lora_rank", bind(c.model.kv_lora_rank),
       "rank of the KV-head LoRAs (> 0)")
      ("model.ip_scale", bind(c.model.ip_scale),
       "weight of the IP-Adapter image branch")
      ("model.kv_encoder", bind(c.model.kv_encoder),
       "`on` (LCM-Lookahead: the KV encoder's shared self-attention) | `off` (IP-Adapter Plus alone: no encoder "
       "run, no reference K/V and no LoRA trainables, in training and sampling; [ablations.md](ablations.md))")
      ("model.dreamsim", bind(c.model.dreamsim),
       "the `dreamsim` package's cache folder (ensemble: `checkpoints/dino_vitbase16_pretrain.pth`, "
       "`clip_vitb16_pretrain.pth.tar`, `open_clip_vitb16_pretrain.pth.tar`, `ensemble_lora/`); required with "
       "`loss.lambda_dreamsim > 0` and `sdxl` (`tiny`: random tiny networks when empty)")
      ("model.dtype", bind(c.model.dtype),
       "`auto` (bf16 frozen weights on GPU, fp32 on CPU) | `fp32` | `bf16` (also on the CPU, as on a GPU: bf16 "
       "frozen weights, fp32 trainable masters computed in bf16, fp32 gradient reduction and AdamW)")
      ("model.sdxl_folder", bind(c.model.sdxl_folder),
       "diffusers SDXL base folder (`text_encoder/`, `text_encoder_2/`, `tokenizer/`, `tokenizer_2/`, "
       "`vae/`): prompt and image encoding for `data encode`, on-the-fly encoding and evaluation")
      ("model.vae", bind(c.model.vae),
       "AutoencoderKL folder used instead of `<sdxl_folder>/vae` (e.g. `sdxl-vae-fp16-fix`)")
      ("model.image_encoder", bind(c.model.image_encoder),
       "IP-Adapter image encoder folder (CLIP ViT-H/14, `config.json` + `model.safetensors`)");
  // clang-format on
  po::options_description data("[data]");
  data.add_options()
      ("data.train_set", bind(c.data.train_set),
       "HDF5 training set (`lookahead data pack` / `synth`, [data.md](data.md)); **required**; must "
       "hold `latents`, `prompt_embeds`, `pooled_prompt_embeds` and `clip_features`")
      ("data.resolution", bind(c.data.resolution),
       "image side after resize / center crop (8 × the latent side)")
      ("data.loader_threads", bind(c.data.loader_threads),
       "background decoding threads per rank (≥ 1)")
      ("data.prefetch_batches", bind(c.data.prefetch_batches),
       "batches decoded ahead")
      ("data.skip_corrupt", bind(c.data.skip_corrupt),
       "replace (by a pair drawn from seed, epoch and sample) and count corrupt records instead of "
       "stopping")
      ("data.random_crop", bind(c.data.random_crop),
       "Resize + RandomCrop (the official transform; differs from the center crop only on non-square "
       "images); needs on-the-fly encoding")
      ("data.hflip_p", bind(c.data.hflip_p),
       "probability of a horizontal flip (landmark roles swap with it; not in the official code); needs "
       "on-the-fly encoding");
  po::options_description loss("[loss]");
  loss.add_options()("loss.mode", bind(c.loss.mode),
                     "`sum` (L_diff + L_LH, one optimizer step: the paper) | `alternate` (two optimizer steps per "
                     "iteration: the official code)")(
      "loss.lambda_id", bind(c.loss.lambda_id),
      "λ of the ArcFace identity loss (≥ 0; with `lambda_dreamsim` 0 as well the lookahead branch is skipped "
      "entirely: diffusion loss only)")(
      "loss.lambda_dreamsim", bind(c.loss.lambda_dreamsim),
      "λ of the DreamSim term between the preview and the reference photo (≥ 0; the official configuration "
      "uses 1e-3, times α like the identity loss)")(
      "loss.preview", bind(c.loss.preview),
      "`lcm` (the one-step LCM preview: LCM-Lookahead) | `x0` (the frozen base's x̂0 at the diffusion branch's "
      "timestep, decoded from that branch's forward: the paper's x̂0-approximation baseline; no LCM-LoRA; "
      "needs `mode = sum`)")("loss.adapter_drop", bind(c.loss.adapter_drop),
                             "probability of unconditional IP tokens (diffusion branch), in [0, 1]")(
      "loss.kv_drop", bind(c.loss.kv_drop), "reference-token dropout, in [0, 1]")(
      "loss.timestep_a_diffusion", bind(c.loss.timestep_a_diffusion), "importance sampler `a`, branch 1 (diffusion)")(
      "loss.timestep_a_lookahead", bind(c.loss.timestep_a_lookahead), "importance sampler `a`, branch 2 (lookahead)")(
      "loss.alpha_every", bind(c.loss.alpha_every), "steps between draws of the LCM-LoRA scale α (> 0)")(
      "loss.alpha_p_one", bind(c.loss.alpha_p_one), "probability that α = 1, in [0, 1]")(
      "loss.alpha_min", bind(c.loss.alpha_min), "otherwise α ~ U(`alpha_min`, 1), in [0, 1]");
  po::options_description optim("[optim]");
  optim.add_options()
      ("optim.lr_adapter", bind(c.optim.lr_adapter),
       "learning rate of the Resampler and `to_k_ip` / `to_v_ip`")
      ("optim.lr_lora", bind(c.optim.lr_lora),
       "learning rate of the encoder and KV-head LoRAs")
      ("optim.weight_decay", bind(c.optim.weight_decay),
       "AdamW decoupled weight decay")
      ("optim.beta1", bind(c.optim.beta1),
       "AdamW β1, in [0, 1)")
      ("optim.beta2", bind(c.optim.beta2),
       "AdamW β2, in [0, 1)")
      ("optim.eps", bind(c.optim.eps),
       "AdamW ε (> 0)")
      ("optim.clip", bind(c.optim.clip),
       "global gradient-norm clipping (≤ 0: off)");
  po::options_description run("[train]");
  run.add_options()
      ("train.steps", bind(c.train.steps),
       "optimizer iterations (the run ends at this step; a resumed run counts from its checkpoint)")
      ("train.batch_per_rank", bind(c.train.batch_per_rank),
       "samples per rank per step (global batch = this × ranks)")
      ("train.seed", bind(c.train.seed),
       "seed of every random draw (data order, noise, t, α, dropouts)")
      ("train.out", bind(c.train.out),
       "run directory (`metrics.jsonl`, `checkpoints/`, `export/`)")
      ("train.log_every", bind(c.train.log_every),
       "steps between metric lines (the last step is always logged)")
      ("train.checkpoint_every", bind(c.train.checkpoint_every),
       "steps between checkpoints (the last step is always saved)")
      ("train.keep_checkpoints", bind(c.train.keep_checkpoints),
       "checkpoints kept (older ones are deleted)")
      ("train.resume", bind(c.train.resume),
       "`\"\"` (fresh), `latest` (newest in `<out>/checkpoints`; starts at 0 if there is none), or a "
       "checkpoint file")
      ("train.fallback_to_previous", bind(c.train.fallback_to_previous),
       "a corrupt checkpoint falls back to the one before")
      ("train.progress", bind(c.train.progress),
       "progress bar on rank 0")
      ("train.threads", bind(c.train.threads),
       "intra-op CPU threads per rank (0: cores / ranks per node)");
  po::options_description dist("[dist]");
  // clang-format off
  dist.add_options()
      ("dist.placement", bind(c.dist.placement),
       "frozen weights: `full` (shard over all ranks) | `node` (shard within a node, replicate across "
       "nodes) | `replicate`")
      ("dist.prefetch", bind(c.dist.prefetch),
       "prefetch the next unit's gather")
      ("dist.max_gathered_units", bind(c.dist.max_gathered_units),
       "units gathered at once (memory cap, ≥ 1)")
      ("dist.keep_gathered", bind(c.dist.keep_gathered),
       "keep units gathered from forward to backward")
      ("dist.replicate_units", bind(c.dist.replicate_units),
       "comma-separated units whose frozen weights stay whole on every rank whatever the placement "
       "(e.g. `arcface`: its gather opens every step, before any compute could hide it)")
      ("dist.recompute", bind(c.dist.recompute),
       "which units recompute their forward in backward (activation checkpointing): `all` (least "
       "activation memory) | `blocks` (only the UNet's resnet and transformer blocks, as the official "
       "run's gradient checkpointing; the stems, samplers, Resampler, TAESD decoder and ArcFace keep "
       "their activations and stay gathered until their backward) | `none` (every unit keeps them: "
       "most memory, no second forward)");
  // clang-format on
  po::options_description eval("[eval]");
  eval.add_options()
      ("eval.eval_set", bind(c.eval.eval_set),
       "HDF5 evaluation set (`lookahead data ffhq` / `pack`): one reference photo per identity")
      ("eval.prompts", bind(c.eval.prompts),
       "text file of prompts, one per line (`#` comments)")
      ("eval.identities", bind(c.eval.identities),
       "first N identities of the set (0: all)")
      ("eval.samples", bind(c.eval.samples),
       "images per (identity, prompt)")
      ("eval.steps", bind(c.eval.steps),
       "sampler steps")
      ("eval.sampler", bind(c.eval.sampler),
       "`dpm_solver` (DPM-Solver++ 2M) | `euler` | `ddim`")
      ("eval.scheduler_config", bind(c.eval.scheduler_config),
       "diffusers `scheduler_config.json` (empty: SDXL base's)")
      ("eval.guidance", bind(c.eval.guidance),
       "`lookahead` (three-term, with and without the reference K/V) | `cfg`")
      ("eval.cfg_scale", bind(c.eval.cfg_scale),
       "`cfg` guidance scale")
      ("eval.scale_nokv", bind(c.eval.scale_nokv),
       "lookahead guidance: text scale without the reference K/V")
      ("eval.scale_full", bind(c.eval.scale_full),
       "lookahead guidance: scale of the fully conditioned term")
      ("eval.scale_kv", bind(c.eval.scale_kv),
       "lookahead guidance: scale of the reference-K/V-only term")
      ("eval.encoder_prompt", bind(c.eval.encoder_prompt),
       "prompt of the KV encoder's reference run")
      ("eval.resolution", bind(c.eval.resolution),
       "generated image side in pixels (a multiple of 8)")
      ("eval.seed", bind(c.eval.seed),
       "base seed; each (identity, prompt, sample) has its own")
      ("eval.clip_model", bind(c.eval.clip_model),
       "transformers `CLIPModel` folder for the CLIP score (required with `sdxl`)")
      ("eval.clip_model_name", bind(c.eval.clip_model_name),
       "name of that model, written into the results")
      ("eval.every", bind(c.eval.every),
       "training: evaluate every K steps (0: never)")
      ("eval.out", bind(c.eval.out),
       "output folder (default `<train.out>/eval`)")
      ("eval.save_images", bind(c.eval.save_images),
       "write the generated images next to `metrics.json`");
  po::options_description all("lookahead train options (INI: [section] key = value; flags: --section.key=value)");
  all.add(model).add(data).add(loss).add(optim).add(run).add(dist).add(eval);
  return all;
}

std::vector<std::string> missing_inputs(const trainer::TrainConfig& c, ConfigUse use) {
  namespace fs = std::filesystem;
  std::vector<std::string> missing;
  auto need = [&](const char* key, const std::string& path, bool folder) {
    if (path.empty()) return;
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (!fs::exists(st))
      missing.push_back(std::string(key) + " = " + path + ": no such " + (folder ? "folder" : "file"));
    else if (folder && !fs::is_directory(st))
      missing.push_back(std::string(key) + " = " + path + ": not a folder");
    else if (!folder && fs::is_directory(st))
      missing.push_back(std::string(key) + " = " + path + ": a folder, not a file");
  };
  // Weight files are loaded whatever the preset (tiny: over its random values) when named.
  if (use != ConfigUse::kEncode) {
    need("model.unet_weights", c.model.unet_weights, false);
    need("model.ip_adapter", c.model.ip_adapter, false);
    need("model.lcm_lora", c.model.lcm_lora, false);
    need("model.taesd", c.model.taesd, false);
    need("model.arcface", c.model.arcface, false);
  }
  need("model.unet_config", c.model.unet_config, false);
  need("model.mtcnn", c.model.mtcnn, true);
  if (!c.model.mtcnn.empty() && fs::is_directory(c.model.mtcnn))
    for (const char* net : {"pnet.pt", "rnet.pt", "onet.pt"})
      need("model.mtcnn", c.model.mtcnn + "/" + net, false);
  need("model.sdxl_folder", c.model.sdxl_folder, true);
  need("model.vae", c.model.vae, true);
  need("model.image_encoder", c.model.image_encoder, true);
  if (use != ConfigUse::kEncode && c.loss.lambda_dreamsim > 0) need("model.dreamsim", c.model.dreamsim, true);
  if (use == ConfigUse::kTrain) need("data.train_set", c.data.train_set, false);
  if (use == ConfigUse::kTrain && c.eval.every > 0) {
    need("eval.eval_set", c.eval.eval_set, false);
    need("eval.prompts", c.eval.prompts, false);
    need("eval.clip_model", c.eval.clip_model, true);
  }
  return missing;
}

void require_inputs(const trainer::TrainConfig& config, ConfigUse use, const c10::Device& device) {
  std::string text;
  if (const auto missing = missing_inputs(config, use); !missing.empty()) {
    text = "missing inputs:";
    for (const auto& m : missing) text += "\n  " + m;
  }
  for (const auto& w : trainer::check_weights(config, device)) text += (text.empty() ? "" : "\n") + w;
  if (!text.empty()) throw std::invalid_argument(text);
}

namespace {

/// The title of each INI section in the configuration reference, and a note under it.
struct SectionDoc {
  const char* name;
  const char* title;
  const char* note;
};
constexpr SectionDoc kSectionDocs[] = {
    {"model", "which networks and weights", ""},
    {"data", "the training set", ""},
    {"loss", "the two branches", ""},
    {"optim", "AdamW", ""},
    {"train", "the run", ""},
    {"dist", "sharding of the frozen weights", ""},
    {"eval", "evaluation ([evaluation.md](evaluation.md))",
     "Read by `lookahead eval`, and by `lookahead train` when `every > 0`."},
};

}  // namespace

std::string train_options_markdown() {
  trainer::TrainConfig defaults;
  const po::options_description options = train_options(defaults);
  std::ostringstream md;
  for (const SectionDoc& section : kSectionDocs) {
    md << "## `[" << section.name << "]` — " << section.title << "\n\n";
    if (*section.note) md << section.note << "\n\n";
    md << "| key | default | meaning |\n|---|---|---|\n";
    const std::string prefix = std::string(section.name) + ".";
    for (const auto& opt : options.options()) {
      const std::string& key = opt->long_name();
      if (key.rfind(prefix, 0) != 0) continue;
      // "arg (=value)": the default as bind() formats it.
      const std::string param = opt->format_parameter();
      const auto open = param.find("(=");
      std::string def;
      if (open != std::string::npos && param.size() > open + 2 && param.back() == ')')
        def.assign(param.begin() + static_cast<std::ptrdiff_t>(open + 2), param.end() - 1);
      std::string help;
      for (char ch : opt->description()) {
        if (ch == '|') help += '\\';  // a table cell's bar
        help += ch;
      }
      md << "| `" << key.substr(prefix.size()) << "` | " << (def.empty() ? "`\"\"`" : "`" + def + "`") << " | " << help
         << " |\n";
    }
    md << "\n";
  }
  std::string out = md.str();
  out.pop_back();  // one blank line between tables, none after the last
  return out;
}

std::string train_help() {
  trainer::TrainConfig defaults;
  std::ostringstream s;
  s << "usage: lookahead train --config FILE.ini [--config LAYER.ini ...] [--section.key=value ...] [--dry-run]\n\n"
    << train_options(defaults);
  return s.str();
}

trainer::TrainConfig parse_train_config(const std::vector<std::string>& args, bool& dry_run, bool& help,
                                        ConfigUse use) {
  trainer::TrainConfig config;
  po::options_description options = train_options(config);
  std::vector<std::string> config_files;
  po::options_description command("command");
  command.add_options()("config", po::value<std::vector<std::string>>(&config_files),
                        "INI configuration file; repeat to layer files (a later file's keys override an "
                        "earlier one's, e.g. a preset of launch/configs/ablation/ over a base)")(
      "dry-run", po::bool_switch(&dry_run), "print the resolved configuration, parameter counts and memory, then exit")(
      "help", po::bool_switch(&help), "this text");
  po::options_description cli;
  cli.add(command).add(options);
  po::variables_map vm;
  // Flags are stored first: Boost keeps the first value of an option, so they win over the file.
  po::store(po::command_line_parser(args).options(cli).run(), vm);
  if (vm.count("config")) {
    config_files = vm["config"].as<std::vector<std::string>>();
    // The last file first: Boost keeps the first value stored, so later files win over earlier ones.
    for (auto it = config_files.rbegin(); it != config_files.rend(); ++it) {
      std::ifstream in(*it);
      if (!in) throw std::invalid_argument("--config: cannot open '" + *it + "'");
      try {
        po::store(po::parse_config_file(in, options, /*allow_unregistered=*/false), vm);
      } catch (const po::error& e) {
        throw std::invalid_argument(*it + ": " + e.what());
      }
    }
  }
  po::notify(vm);
  if (help) return config;
  // Without a file every setting is a default, and the first complaint would be about whichever
  // required key validation reaches first; say what is actually missing.
  if (config_files.empty())
    throw std::invalid_argument(
        "--config: no configuration file given; start from launch/configs/tiny.ini (CPU-sized) or "
        "launch/configs/sdxl-lookahead.ini, and override any key with --section.key=value");
  validate(config, use);
  // The resolved configuration as INI, in section order.
  std::ostringstream ini;
  std::string section;
  for (const auto& opt : options.options()) {
    const std::string& key = opt->long_name();
    const auto dot = key.find('.');
    if (key.substr(0, dot) != section) {
      section = key.substr(0, dot);
      ini << (ini.tellp() > 0 ? "\n" : "") << "[" << section << "]\n";
    }
    ini << key.substr(dot + 1) << " = " << format_value(vm[key].value()) << "\n";
  }
  config.resolved_ini = ini.str();
  return config;
}

}  // namespace lookahead::launch
