// The whole LCM-Lookahead network as one object (docs/training.md, "One step"): ONE SDXL UNet whose
// frozen base weights serve three networks through run-time adapter selection — the KV encoder
// ({"encoder"} LoRAs, truncated after up_blocks[1]), the decoder ({}: the frozen base) and the LCM
// branch ({"lcm"}: base + α·LCM-LoRA, unfused) — plus the IP-Adapter Plus (Resampler and
// to_k_ip / to_v_ip), the TAESD decoder for the preview and an ArcFace network for the identity
// loss. Trainable: the Resampler and to_k_ip / to_v_ip ("adapter" group), the encoder LoRAs and
// KV-head LoRAs ("lora" group). Everything else is frozen.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dist/unit_runner.h"
#include "model/adapters/ip_adapter.h"
#include "model/adapters/kv_encoder.h"
#include "model/adapters/resampler.h"
#include "model/lookahead/alpha_schedule.h"
#include "model/lookahead/step_draw.h"
#include "model/lookahead/variant.h"
#include "model/nn/lora.h"
#include "model/sched/noise_schedule.h"
#include "model/unet/unet_2d_condition.h"
#include "model/unet/unet_config.h"
#include "model/vae/autoencoder_tiny.h"
#include "model/vae/vae_config.h"
#include "model/vision/dreamsim.h"

namespace lookahead::model {

/// Architecture and training constants of the network. Defaults: SDXL base, IP-Adapter Plus
/// (ViT-H), TAESDXL, IR-SE50 and the official hyperparameters (docs/configuration.md, "Presets").
struct LookaheadModelConfig {
  unet::UNetConfig unet = unet::UNetConfig::sdxl_base();
  /// Resampler settings; its tensor_options are ignored (the model's dtype and device are used).
  adapters::ResamplerOptions resampler;
  vae::TinyConfig taesd = vae::TinyConfig::taesdxl();
  /// "irse50" (TreB1eN IR-SE50, the official ID loss), "iresnet50" or "iresnet100" (insightface).
  std::string arcface = "irse50";
  /// iresnet only: stage depths overriding the named preset (e.g. {1, 1, 1, 1} for fast tests).
  std::vector<int64_t> arcface_layers;
  /// Encoder LoRA / KV-head LoRA ranks (4 / 4) and the encoder's last up block.
  adapters::KvEncoderOptions kv_encoder;
  /// > 0: a random frozen LCM-LoRA of this rank is created in code on the layers `lcm_lora_select`
  /// accepts (random-init test configs). 0: the LCM-LoRA comes from a kohya file (LookaheadWeightFiles::lcm_lora).
  int64_t lcm_lora_rank = 0;
  std::function<bool(const std::string& layer_path)> lcm_lora_select;
  /// Standard deviation of the random LCM-LoRA's up and down matrices (nonzero so that α matters).
  double lcm_lora_init_std = 0.3;
  double adapter_drop_p = 0.1;        ///< per sample, branch 1: IP tokens -> unconditional tokens
  double kv_drop_p = 0.05;            ///< reference-token dropout, both branches
  double lambda_id = 1e-3;            ///< λ of the ArcFace identity loss
  /// The ablation switches (docs/ablations.md): no KV encoder (IP-Adapter Plus alone) and the
  /// image the lookahead branch's losses see (LCM preview or the diffusion branch's x̂0).
  bool use_kv_encoder = true;
  PreviewKind preview = PreviewKind::kLcm;
  /// λ of the DreamSim term between the preview and the reference photo (the official
  /// configuration's 1e-3); > 0 builds the DreamSim network `dreamsim` (frozen, one sharding unit
  /// per base network).
  double lambda_dreamsim = 0;
  vision::DreamSimOptions dreamsim = vision::DreamSimOptions::ensemble();
  double diffusion_timestep_a = 0.5;  ///< importance sampler of branch 1
  double lcm_timestep_a = 0.2;        ///< importance sampler of branch 2
  double ip_scale = 1.0;              ///< IP-Adapter attention scale (training and official inference)
  sched::NoiseScheduleConfig schedule;  ///< SDXL's DDPM training schedule
  at::ScalarType dtype = at::kFloat;  ///< dtype of every module's weights

  /// The published networks (weights from LookaheadWeightFiles).
  static LookaheadModelConfig sdxl();
  /// A small network of the same family (tiny UNet with cross dim 24 and pooled text 16, Resampler
  /// 12 -> 24, TAESD with 8 channels, iresnet {1,1,1,1}, random LCM-LoRA of rank 4) that runs a
  /// step on the CPU at batch 2 and 8x8 latents (64x64 previews).
  static LookaheadModelConfig tiny();
  /// tiny() with a mid-size UNet of SDXL's block structure (64/128/128 channels, 2 resnets per down
  /// block, transformer depth 1/2/2) and TAESD at 16 channels: a step at 32x32 latents takes
  /// seconds on the CPU (benchmarks, the memory model's validation).
  static LookaheadModelConfig mid();
  /// Whether the LCM-LoRA SDXL adapts the UNet layer at `layer_path`: PEFT's target modules of its
  /// training script (a suffix match; docs/models.md, "LoRA"). With lcm_lora_rank 64 it gives the
  /// published file's structure without the file (shape-only models on meta).
  static bool lcm_lora_sdxl_target(const std::string& layer_path);

  /// Whether the lookahead branch's losses run (some weight is nonzero).
  bool lookahead_branch() const { return lambda_id > 0 || lambda_dreamsim > 0; }
  /// Whether the LCM-LoRA is used (and attached): the branch runs on the LCM preview.
  bool uses_lcm() const { return lookahead_branch() && preview == PreviewKind::kLcm; }
};

/// Files of the published weights; empty paths are skipped.
struct LookaheadWeightFiles {
  std::string unet;        ///< diffusers UNet safetensors (single file or .index.json)
  std::string ip_adapter;  ///< IP-Adapter Plus (.bin or .safetensors)
  std::string lcm_lora;    ///< kohya LCM-LoRA safetensors (attached as adapter "lcm")
  std::string taesd;       ///< TAESD(XL) safetensors (only `decoder.*` is used)
  std::string arcface;     ///< ArcFace weights (.pth / .pt / .safetensors)
  std::string dreamsim;    ///< the `dreamsim` package's cache folder (used with lambda_dreamsim > 0)
};

/// One rank's share of a step's inputs, on the model's device (floating tensors are cast to the
/// model's dtype where they enter a network).
struct Batch {
  at::Tensor z_tgt;        ///< [B, 4, h, w] target latents (VAE, scaled)
  at::Tensor z_ref;        ///< [B, 4, h, w] reference latents (VAE, scaled)
  at::Tensor clip_ref;     ///< [B, T, D] CLIP ViT-H penultimate features of the reference photo
  at::Tensor clip_uncond;  ///< [1, T, D] the same for the all-zero image
  at::Tensor tgt_prompt;   ///< [B, M, cross_attention_dim] target prompt embeddings
  at::Tensor tgt_pooled;   ///< [B, P] pooled target prompt embedding
  at::Tensor ref_prompt;   ///< [B, M, cross_attention_dim] reference prompt embeddings
  at::Tensor ref_pooled;   ///< [B, P]
  at::Tensor time_ids;     ///< [B, 6] SDXL micro-conditioning
  at::Tensor ref_landmarks;  ///< [B, 5, 2] reference face landmarks in preview pixels; non-finite: none
  at::Tensor ref_id;       ///< [B, 512] ArcFace embedding of the reference photo, unit norm
  at::Tensor ref_dreamsim;  ///< [B, D] DreamSim embedding of the reference photo (lambda_dreamsim > 0)

  int64_t size() const { return z_tgt.defined() ? z_tgt.size(0) : 0; }
};

/// Result of the diffusion branch.
struct DiffusionBranch {
  at::Tensor loss;  ///< [] mse(ε̂, ε) in float32, mean over the local batch
  at::Tensor x0;    ///< [B, C, h, w] float32 x̂0 of ε̂ at the branch's timestep (with graph), when asked for
};

/// Result of the lookahead branch.
struct LookaheadLoss {
  at::Tensor loss;     ///< [] the branch's local loss: id_loss (+ the other terms)
  at::Tensor id_loss;  ///< [] α·λ·mean over usable samples of (1 − cos); 0 (with graph) when none
  /// [] α·λ_DreamSim·mean over the local batch of DreamSim(preview, reference); 0 without the term
  at::Tensor dreamsim_loss;
  at::Tensor per_sample;  ///< [B] float32 α·λ·(1 − cos), 0 for unusable samples (for a global mean)
  at::Tensor valid;       ///< [B] bool: the sample's landmarks are usable (all finite)
  int64_t valid_count = 0;
  at::Tensor preview;     ///< [B, 3, H, W] the decoded preview x̂ in [-1, 1], detached (for logging)
};

/// Example:
///   LookaheadModel model(LookaheadModelConfig::tiny());
///   StepDraw d = model.draw(seed, step, global_batch, first, batch.size(), {4, 8, 8});
///   at::Tensor l1 = model.diffusion_loss(batch, d);
///   LookaheadLoss l2 = model.lookahead_loss(batch, d, alphas.at(step));
///   (l1 + l2.loss).backward();
class LookaheadModel {
 public:
  /// Builds every network on `device` (at::kMeta: shapes only, no memory). The networks whose
  /// file `files` names are allocated without initial values and then loaded from it (strict key
  /// and shape checks, naming the file on error; the LCM-LoRA is attached as adapter "lcm" sharing
  /// lcm_scale()); the others get random weights. On meta, `files` must be empty.
  explicit LookaheadModel(LookaheadModelConfig config, at::Device device = at::kCPU,
                          const LookaheadWeightFiles& files = {});
  ~LookaheadModel();
  LookaheadModel(const LookaheadModel&) = delete;
  LookaheadModel& operator=(const LookaheadModel&) = delete;

  /// The trainable tensors the construction's files held (the IP-Adapter's, keys as in units())
  /// in the files' own dtypes: a model in bf16 holds only their rounding, and fp32 master weights
  /// start from these. Moved out: a second call returns nothing.
  std::map<std::string, at::Tensor> take_file_trainables() { return std::move(file_trainables_); }

  /// The sharding units in execution order: "image_proj", the UNet's units (stem_in, blocks,
  /// stem_out), "taesd.decoder", "arcface". Every parameter, buffer and adapter tensor is in
  /// exactly one unit and one role.
  std::vector<dist::ShardingUnit> units();

  /// Trainable tensors by group (keys as in units()): Resampler + to_k_ip / to_v_ip ...
  std::vector<std::pair<std::string, at::Tensor>> adapter_parameters();
  /// ... and encoder LoRAs + KV-head LoRAs.
  std::vector<std::pair<std::string, at::Tensor>> lora_parameters();

  /// The step's random draw for samples [first, first + count) (see draw_step), with this model's
  /// probabilities and samplers. latent_shape: {C, h, w}.
  StepDraw draw(uint64_t seed, int64_t step, int64_t global_batch, int64_t first, int64_t count,
                at::IntArrayRef latent_shape) const;

  /// Branch 1: mse(ε̂, ε) in float32, mean over the local batch (docs/training.md, "One step", item 4).
  at::Tensor diffusion_loss(const Batch& batch, const StepDraw& draw) { return diffusion_branch(batch, draw).loss; }
  /// Branch 1, and with `with_x0` the base's x̂0 estimate for an x0 preview (x0_lookahead_loss).
  DiffusionBranch diffusion_branch(const Batch& batch, const StepDraw& draw, bool with_x0 = false);
  /// Branch 2 at LCM-LoRA scale `alpha` (left in lcm_scale() afterwards): the ArcFace identity
  /// loss of the one-step LCM preview, multiplied by α·λ. Needs config().uses_lcm().
  LookaheadLoss lookahead_loss(const Batch& batch, const StepDraw& draw, double alpha);
  /// Branch 2 of the x0 ablation: the same losses (scale 1: there is no α) on the decoded x̂0 of
  /// a diffusion_branch(…, with_x0 = true); no second UNet run.
  LookaheadLoss x0_lookahead_loss(const Batch& batch, const DiffusionBranch& diffusion);

  /// IP tokens [B, Q, D_out] of the reference features; samples with `drop` set (a [B] bool
  /// tensor, or undefined for none) get the unconditional tokens instead.
  at::Tensor image_tokens(const at::Tensor& clip_ref, const at::Tensor& clip_uncond, const at::Tensor& drop);
  /// ArcFace embedding (unit norm) of aligned 112x112 faces in [-1, 1].
  at::Tensor arcface(const at::Tensor& faces);
  /// The reference identity of a batch, without gradient: sets `batch.ref_id` [B, 512] (float32)
  /// to the ArcFace embedding of the reference photos `ref_pixels` [B, 3, S, S] in [-1, 1],
  /// aligned by `landmarks` [B, 5, 2] in their pixels, and `batch.ref_landmarks` to those
  /// landmarks moved to the preview's pixel grid (8 x the latent side of batch.z_tgt). Samples
  /// whose landmarks are not all finite are aligned on the template (every rank runs the same
  /// modules) and keep non-finite landmarks, so the identity loss masks them out.
  void set_reference_identity(Batch& batch, const at::Tensor& ref_pixels, const at::Tensor& landmarks);

  /// What the step's losses need of the reference photos `ref_pixels` [B, 3, S, S] in [-1, 1]
  /// with `landmarks` [B, 5, 2] in their pixels, without gradient: the landmarks on the preview's
  /// grid always, the reference identity (set_reference_identity) only when λ_ID > 0, so that a
  /// run without the identity loss never runs ArcFace, and the reference's DreamSim embedding
  /// (`batch.ref_dreamsim`) when λ_DreamSim > 0.
  void set_reference(Batch& batch, const at::Tensor& ref_pixels, const at::Tensor& landmarks);

  /// Runs every unit of units() through `runner` (null: in place); it must outlive its use.
  void set_unit_runner(dist::UnitRunner* runner);

  const LookaheadModelConfig& config() const { return config_; }
  const at::TensorOptions& tensor_options() const { return options_; }
  unet::UNet2DConditionModel unet() const { return unet_; }
  adapters::IpAdapter ip_adapter() const { return ip_; }
  /// The KV encoder; refused when config().use_kv_encoder is off.
  adapters::KvEncoder& encoder();
  bool has_kv_encoder() const { return encoder_ != nullptr; }
  vae::DecoderTiny taesd_decoder() const { return taesd_decoder_; }
  std::shared_ptr<torch::nn::Module> arcface_module() const { return arcface_module_; }
  /// The DreamSim network (null unless lambda_dreamsim > 0).
  vision::DreamSim dreamsim() const { return dreamsim_; }
  /// DreamSim embedding [B, D] (float32) of images [B, 3, H, W] in [-1, 1], resized as the
  /// official loss does, each base network through its sharding unit.
  at::Tensor dreamsim_embedding(const at::Tensor& images);
  /// The LCM-LoRA scale α shared by every "lcm" adapter.
  const std::shared_ptr<nn::LoraScale>& lcm_scale() const { return lcm_scale_; }
  const sched::NoiseSchedule& schedule() const { return schedule_; }

 private:
  /// The constructor's loads (see there).
  void load_weights(const LookaheadWeightFiles& files);
  unet::UNetInputs unet_inputs(const at::Tensor& sample, const at::Tensor& t, const at::Tensor& prompt,
                               const at::Tensor& pooled, const at::Tensor& time_ids) const;
  void check_batch(const Batch& batch, const StepDraw& draw) const;
  /// The reference K/V of a branch (null without a KV encoder) and the decoder's inputs.
  unet::UNetInputs branch_inputs(const Batch& batch, const at::Tensor& eps, const at::Tensor& t, const at::Tensor& ip,
                                 uint64_t kv_drop_seed);
  /// The losses of a branch on the latent image z0 [B, C, h, w] (float32, with graph), times `scale`.
  LookaheadLoss preview_losses(const Batch& batch, const at::Tensor& z0, double scale);
  void freeze();

  LookaheadModelConfig config_;
  at::TensorOptions options_;
  unet::UNet2DConditionModel unet_{nullptr};
  adapters::IpAdapter ip_{nullptr};
  std::unique_ptr<adapters::KvEncoder> encoder_;
  vae::DecoderTiny taesd_decoder_{nullptr};
  std::shared_ptr<torch::nn::Module> arcface_module_;
  vision::DreamSim dreamsim_{nullptr};
  dist::UnitRunner* runner_ = nullptr;
  std::function<at::Tensor(const at::Tensor&)> arcface_forward_;
  std::shared_ptr<nn::LoraScale> lcm_scale_;
  bool lcm_attached_ = false;
  std::map<std::string, at::Tensor> file_trainables_;  ///< see take_file_trainables()
  sched::NoiseSchedule schedule_;
};

}  // namespace lookahead::model
