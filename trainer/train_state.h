// The sharded Lookahead: everything a run trains and checkpoints, apart from the loop around it.
// One LookaheadModel built identically on every rank, its sharding units handed to the sharded
// engine, the sharded AdamW over the trainable groups and the α schedule, built from the typed
// configuration; one training step; save and load with the RNG state and the data cursor. The
// trainer, the step benchmark, the equivalence tests, `eval` and `export` all use this one object,
// so the step a benchmark times is the step users run (docs/training.md, "One step").
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "dist/sharded_adamw.h"
#include "dist/sharded_engine.h"
#include "dist/world.h"
#include "model/lookahead/lookahead_model.h"
#include "trainer/batch_source.h"
#include "trainer/train_config.h"

namespace lookahead::trainer {

/// The model configuration a TrainConfig asks for on `device` (preset, ranks, loss
/// hyper-parameters, model.dtype resolved for that device).
model::LookaheadModelConfig model_config(const TrainConfig& config, const c10::Device& device);

/// The engine options of [dist], with the frozen dtype of `model_dtype` (trainables are fp32
/// masters that compute in the same dtype as the frozen weights).
dist::EngineOptions engine_options(const DistConfig& config, at::ScalarType model_dtype);

/// The units (of `unit_names`, LookaheadModel::units() order) that keep their activations under
/// dist.recompute `policy`: none (all), every unit but the UNet's resnets and transformers
/// (blocks), every unit (none).
std::set<std::string> kept_activation_units(Recompute policy, const std::vector<std::string>& unit_names);

/// What one step measured; host values, the same on every rank unless marked local.
struct StepStats {
  double loss_diffusion = 0;   ///< mean over the global batch
  double loss_lookahead = 0;   ///< the lookahead branch's loss: loss_id + loss_dreamsim
  double loss_id = 0;          ///< α·λ·(1 − cos), mean over the global batch's usable samples
  double loss_dreamsim = 0;    ///< α·λ_DreamSim·DreamSim(preview, reference), mean over the global batch
  double alpha = 0;            ///< LCM-LoRA scale of branch 2
  double t_diffusion_mean = 0;  ///< mean timestep of branch 1 over the global batch
  double t_lookahead_mean = 0;  ///< mean timestep of branch 2 over the global batch
  double grad_norm = 0;        ///< global gradient norm before clipping (of branch 2's step in alternate mode)
  std::optional<double> grad_norm_diffusion;  ///< alternate mode: branch 1's
  int64_t faces_valid = 0;     ///< samples of the global batch with usable landmarks
  // Local to this rank (on a GPU: device time between CUDA events on the compute stream, so a
  // phase counts its kernels, not their launches; trainer/phase_clock.h):
  double compute_s = 0;        ///< both branches, forward and backward (optimizer excluded)
  double diffusion_s = 0;      ///< branch 1's forward and backward
  double lookahead_s = 0;      ///< branch 2's forward and backward
  double optimizer_s = 0;      ///< finish_gradients, clipping and AdamW
  dist::PhaseTimes times;      ///< the engine's phase split of this step
  dist::EngineMemory memory;   ///< bytes held right after the last finish_gradients (gradient shards exist)
  int64_t optimizer_state_bytes = 0;
  /// Peak bytes of live CPU tensors in each phase (trainer/tensor_memory.h; -1 when not counted):
  /// branch 1's forward and backward, branch 2's (with alternate mode's first optimizer step), the
  /// optimizer step.
  int64_t tensor_peak_diffusion = -1, tensor_peak_lookahead = -1, tensor_peak_optimizer = -1;
};

/// For benchmarks and tests: a model other than the one the configuration names, and changes to
/// it before the engine takes its tensors over.
struct TrainStateOptions {
  /// Used instead of model_config(config, device); no weight files are loaded then.
  std::optional<model::LookaheadModelConfig> model;
  /// Runs on the whole (unsharded) model after weights are loaded, identically on every rank
  /// (e.g. non-zero LoRA up-projections, so that every LoRA passes gradients from step 0).
  std::function<void(model::LookaheadModel&)> before_sharding;
  /// false: no optimizer (inference: `eval`); its moments are never allocated, checkpoints load
  /// the trainables only, and step() and save() refuse.
  bool with_optimizer = true;
};

/// A written checkpoint.
struct SavedCheckpoint {
  std::string path;
  int64_t bytes = 0;
  double seconds = 0;  ///< wall time of the whole (collective) save
};

/// Where a checkpoint load ended.
struct LoadedState {
  std::string path;                   ///< the checkpoint loaded ("" when `latest` found none)
  data::Cursor cursor;
  std::vector<std::string> skipped;   ///< damaged newer checkpoints passed over ("file: reason")
  std::string rng_note;               ///< why per-rank RNG states were re-derived ("" when restored)
  int64_t saved_world_size = 0;
};

/// "VERB PATH at step N (saved on S rank(s), now W)" (verb: "loaded checkpoint", "resumed from").
std::string describe_load(const std::string& verb, const LoadedState& loaded, int64_t step, int world_size);

/// Example:
///   TrainState state(world, config);
///   SyntheticBatch s = model::synthetic_batch(state.model().config(), {}, 0, first, b);
///   state.model().set_reference_identity(s.batch, s.ref_pixels, s.ref_pixel_landmarks);
///   StepStats st = state.step(s.batch, state.draw(b, {4, 8, 8}), state.alpha());
class TrainState {
 public:
  /// Sets the intra-op threads (train.threads; 0: the node's cores shared by its ranks), builds
  /// the model (identically on every rank: the CPU generator is seeded with train.seed),
  /// loads the weight files [model] names, shards it and builds the optimizer, whose fp32
  /// masters hold the files' trainable values exactly whatever model.dtype. Collective.
  TrainState(dist::World& world, const TrainConfig& config, TrainStateOptions options = {});
  ~TrainState();
  TrainState(const TrainState&) = delete;
  TrainState& operator=(const TrainState&) = delete;

  /// Steps completed (the next step's index).
  int64_t completed_steps() const { return step_; }
  /// Seconds the constructor took: the model built, its files loaded and the engine's shards made.
  double setup_seconds() const { return setup_s_; }
  /// The random draw (noise, timesteps, dropouts) of the next step for this rank's slice
  /// [rank · per_rank, (rank + 1) · per_rank) of the global batch. latent_shape: {C, h, w}.
  model::StepDraw draw(int64_t per_rank, const std::vector<int64_t>& latent_shape) const;
  /// The LCM-LoRA scale α of the next step (recorded in the α state that checkpoints store).
  double alpha();

  /// One training step on this rank's share of the global batch (collective): branch 1 (the
  /// diffusion loss) forward and backward; branch 2 (the lookahead identity loss, rescaled so
  /// that the average over ranks is the mean over the global batch's usable samples) forward
  /// and backward while branch 1's gradient reduce-scatters are in flight; one optimizer step
  /// (loss.mode sum), or one after each branch (alternate). `batch.ref_id` must be set.
  StepStats step(const model::Batch& batch, const model::StepDraw& draw, double alpha);

  /// Where checkpoints go: <train.out>/checkpoints.
  std::filesystem::path checkpoint_dir() const;
  /// Writes a checkpoint of the current state into checkpoint_dir() (collective): trainables and
  /// their AdamW state, the step, `cursor`, the α state, every rank's CPU RNG state, the frozen
  /// groups' hashes and the resolved configuration; keeps train.keep_checkpoints.
  SavedCheckpoint save(const data::Cursor& cursor);
  /// Loads a checkpoint ("latest": the newest in checkpoint_dir(); else a file or folder;
  /// collective): trainables, optimizer, step, α and RNG state (when the world size is the
  /// saving run's). A damaged checkpoint falls back to the one before when
  /// train.fallback_to_previous. Returns an empty path when "latest" finds none.
  LoadedState load(const std::string& what);

  model::LookaheadModel& model() { return *model_; }
  dist::ShardedEngine& engine() { return *engine_; }
  dist::ShardedAdamW& optimizer() {
    TORCH_CHECK(optimizer_, "TrainState: built without an optimizer (TrainStateOptions::with_optimizer)");
    return *optimizer_;
  }
  const TrainConfig& config() const { return config_; }
  dist::World& world() { return world_; }

  /// Gathered trainable tensors by checkpoint key (collective; fp32 CPU copies on every rank).
  std::map<std::string, at::Tensor> trainable_tensors();

 private:
  dist::World& world_;
  TrainConfig config_;
  std::unique_ptr<model::LookaheadModel> model_;
  std::unique_ptr<dist::ShardedEngine> engine_;
  std::unique_ptr<dist::ShardedAdamW> optimizer_;
  std::unique_ptr<model::AlphaSchedule> alpha_;
  int64_t step_ = 0;
  double setup_s_ = 0;
};

}  // namespace lookahead::trainer
