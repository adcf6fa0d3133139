// The typed configuration of `lookahead train`, filled once by launch/ from an INI file and flag
// overrides and passed by const reference. Defaults are the official LCM-Lookahead
// hyper-parameters (docs/configuration.md, "Presets"). What each key means is written once, in the
// option table of launch/train_options.cpp (`lookahead train --help`, docs/configuration.md).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include "dist/placement.h"
#include "model/lookahead/guidance_mode.h"
#include "model/lookahead/variant.h"
#include "model/sched/make_sampler.h"

namespace lookahead::trainer {

/// model.preset: the published networks, or a random-initialized CPU-sized model of the family.
enum class Preset { kSdxl, kTiny };
/// model.dtype: storage / compute dtype of the frozen weights (trainables are fp32 masters).
enum class ModelDtype { kAuto, kFp32, kBf16 };
/// loss.mode: one optimizer step on L_diff + L_LH (the paper), or one after each branch (the
/// official code).
enum class LossMode { kSum, kAlternate };
/// dist.recompute: which sharding units recompute their forward in backward instead of keeping
/// their activations: every unit (least memory), only the UNet's resnet and transformer blocks
/// (the official run's gradient checkpointing), or none (most memory, least compute).
enum class Recompute { kAll, kBlocks, kNone };

/// model.dtype for a run on a GPU (`on_gpu`) or the CPU: whether frozen weights are bf16 (auto:
/// bf16 on a GPU, fp32 on the CPU).
constexpr bool frozen_in_bf16(ModelDtype dtype, bool on_gpu) {
  return dtype == ModelDtype::kBf16 || (dtype == ModelDtype::kAuto && on_gpu);
}

/// The INI spelling of every value of a configuration enum: `launch/` parses with it, and
/// whatever prints a configuration (the resolved INI, metrics, reports) spells values with it.
template <typename E>
struct ConfigNames;
template <>
struct ConfigNames<Preset> {
  static constexpr std::array<std::pair<std::string_view, Preset>, 2> values{
      {{"sdxl", Preset::kSdxl}, {"tiny", Preset::kTiny}}};
};
template <>
struct ConfigNames<ModelDtype> {
  static constexpr std::array<std::pair<std::string_view, ModelDtype>, 3> values{
      {{"auto", ModelDtype::kAuto}, {"fp32", ModelDtype::kFp32}, {"bf16", ModelDtype::kBf16}}};
};
template <>
struct ConfigNames<LossMode> {
  static constexpr std::array<std::pair<std::string_view, LossMode>, 2> values{
      {{"sum", LossMode::kSum}, {"alternate", LossMode::kAlternate}}};
};
template <>
struct ConfigNames<Recompute> {
  static constexpr std::array<std::pair<std::string_view, Recompute>, 3> values{
      {{"all", Recompute::kAll}, {"blocks", Recompute::kBlocks}, {"none", Recompute::kNone}}};
};
template <>
struct ConfigNames<dist::Placement> {
  static constexpr std::array<std::pair<std::string_view, dist::Placement>, 3> values{
      {{"full", dist::Placement::kFull}, {"node", dist::Placement::kNode}, {"replicate", dist::Placement::kReplicate}}};
};

template <>
struct ConfigNames<model::sched::SamplerKind> {
  static constexpr std::array<std::pair<std::string_view, model::sched::SamplerKind>, 3> values{
      {{"dpm_solver", model::sched::SamplerKind::kDpmSolver},
       {"euler", model::sched::SamplerKind::kEuler},
       {"ddim", model::sched::SamplerKind::kDdim}}};
};
template <>
struct ConfigNames<model::GuidanceMode> {
  static constexpr std::array<std::pair<std::string_view, model::GuidanceMode>, 2> values{
      {{"lookahead", model::GuidanceMode::kLookahead}, {"cfg", model::GuidanceMode::kCfg}}};
};

template <>
struct ConfigNames<model::PreviewKind> {
  static constexpr std::array<std::pair<std::string_view, model::PreviewKind>, 2> values{
      {{"lcm", model::PreviewKind::kLcm}, {"x0", model::PreviewKind::kX0}}};
};
template <>
struct ConfigNames<model::KvEncoderMode> {
  static constexpr std::array<std::pair<std::string_view, model::KvEncoderMode>, 2> values{
      {{"on", model::KvEncoderMode::kOn}, {"off", model::KvEncoderMode::kOff}}};
};

/// The INI spelling of `value`.
template <typename E>
constexpr std::string_view config_name(E value) {
  for (const auto& [name, v] : ConfigNames<E>::values)
    if (v == value) return name;
  return "?";
}

/// The value spelled `name`, or nothing.
template <typename E>
constexpr std::optional<E> parse_config_name(std::string_view name) {
  for (const auto& [n, v] : ConfigNames<E>::values)
    if (n == name) return v;
  return std::nullopt;
}

/// "a, b or c": the accepted spellings, for error messages and help.
template <typename E>
std::string config_choices() {
  std::string out;
  const auto& values = ConfigNames<E>::values;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += i + 1 == values.size() ? " or " : ", ";
    out += values[i].first;
  }
  return out;
}

/// [model]: which networks and weights.
struct ModelConfig {
  Preset preset = Preset::kSdxl;
  std::string unet_config;
  std::string unet_weights;
  std::string ip_adapter;
  std::string lcm_lora;
  std::string taesd;
  std::string arcface;
  std::string arcface_network = "irse50";
  std::string mtcnn;
  int64_t encoder_lora_rank = 4;
  int64_t kv_lora_rank = 4;
  double ip_scale = 1.0;
  ModelDtype dtype = ModelDtype::kAuto;
  /// Off: IP-Adapter Plus alone (no encoder run, no reference K/V, no LoRA trainables).
  model::KvEncoderMode kv_encoder = model::KvEncoderMode::kOn;
  /// The `dreamsim` package's cache folder (loss.lambda_dreamsim > 0).
  std::string dreamsim;
  // Networks that only encode inputs (`lookahead data encode`, on-the-fly encoding, evaluation).
  std::string sdxl_folder;
  std::string vae;
  std::string image_encoder;
};

/// [data]
struct DataConfig {
  std::string train_set;
  int64_t resolution = 1024;
  int64_t loader_threads = 2;
  int64_t prefetch_batches = 2;
  bool skip_corrupt = false;
  /// Augmentation (needs on-the-fly encoding: precomputed latents are of the unaugmented image).
  bool random_crop = false;
  double hflip_p = 0;
};

/// [loss]
struct LossConfig {
  LossMode mode = LossMode::kSum;
  double lambda_id = 1e-3;
  double lambda_dreamsim = 0;
  model::PreviewKind preview = model::PreviewKind::kLcm;
  double adapter_drop = 0.1;
  double kv_drop = 0.05;
  double timestep_a_diffusion = 0.5;
  double timestep_a_lookahead = 0.2;
  int64_t alpha_every = 5;
  double alpha_p_one = 0.5;
  double alpha_min = 0.1;
};

/// [optim]
struct OptimConfig {
  double lr_adapter = 1e-5;
  double lr_lora = 5e-6;
  double weight_decay = 0.01;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double clip = 1.0;
};

/// [train]
struct TrainLoopConfig {
  int64_t steps = 5001;
  int64_t batch_per_rank = 4;
  uint64_t seed = 0;
  std::string out = "out/train";
  int64_t log_every = 1;
  int64_t checkpoint_every = 500;
  int64_t keep_checkpoints = 3;
  std::string resume;
  bool fallback_to_previous = true;
  bool progress = true;
  int64_t threads = 0;
};

/// [dist]
struct DistConfig {
  dist::Placement placement = dist::Placement::kFull;
  bool prefetch = true;
  int64_t max_gathered_units = 4;
  bool keep_gathered = false;
  Recompute recompute = Recompute::kBlocks;
  /// Comma-separated units whose frozen weights stay whole on every rank.
  std::string replicate_units;
};

/// dist.replicate_units as a set of unit names.
std::set<std::string> replicate_unit_names(const DistConfig& c);

/// [eval]: `lookahead eval`, and a small evaluation every `every` steps of training.
struct EvalConfig {
  std::string eval_set;
  std::string prompts;
  int64_t identities = 0;
  int64_t samples = 4;
  int64_t steps = 50;
  model::sched::SamplerKind sampler = model::sched::SamplerKind::kDpmSolver;
  std::string scheduler_config;
  model::GuidanceMode guidance = model::GuidanceMode::kLookahead;
  double cfg_scale = 5.0;
  double scale_nokv = 3.0;
  double scale_full = 2.0;
  double scale_kv = 2.0;
  std::string encoder_prompt = "A photo of a face";
  int64_t resolution = 1024;
  uint64_t seed = 0;
  std::string clip_model;
  std::string clip_model_name = "openai/clip-vit-large-patch14";
  int64_t every = 0;
  std::string out;
  bool save_images = true;
};

/// Whether the lookahead branch runs at all: some term of it has a nonzero weight.
inline bool lookahead_branch_on(const LossConfig& c) { return c.lambda_id > 0 || c.lambda_dreamsim > 0; }

struct TrainConfig {
  ModelConfig model;
  DataConfig data;
  LossConfig loss;
  OptimConfig optim;
  TrainLoopConfig train;
  DistConfig dist;
  EvalConfig eval;
  /// The resolved configuration as INI text (stored in checkpoints and printed by --dry-run).
  std::string resolved_ini;
};

}  // namespace lookahead::trainer
