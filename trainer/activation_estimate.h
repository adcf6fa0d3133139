// What a training step keeps between forward and backward, per rank, by tracing the step on the
// meta device: the real networks run on shape-only tensors, the autograd engine's default
// saved-tensor hooks record every tensor an operation saves for its backward, and a unit runner
// records each unit call's inputs and outputs. From that trace and the sharded engine's rules
// (a recomputed unit keeps only its inputs; a kept unit keeps its whole saved graph; a unit's
// backward recomputes its forward; each unit's full fp32 gradient is reduce-scattered
// asynchronously and held until the step's finish_gradients) it finds the largest live set during
// each branch's backward. No values are computed: the SDXL model at 1024², batch 4, traces in
// seconds. dist/memory_estimate.h holds the weights and optimizer part.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "dist/memory_estimate.h"
#include "dist/traffic_estimate.h"
#include "model/lookahead/lookahead_model.h"
#include "model/lookahead/synthetic_batch.h"
#include "trainer/flop_counter.h"
#include "trainer/train_config.h"

namespace lookahead::trainer {

/// The peak of one branch's backward and what it is made of (bytes per rank).
struct BranchPeak {
  double total = 0;      ///< the sum of the parts below at the peak
  std::string unit;      ///< the unit whose backward is running at the peak ("" : the end of forward)
  double kept = 0;       ///< held from forward to backward: recomputed units' inputs, kept units' saved graphs, saved
                         ///< tensors outside units
  double recompute = 0;  ///< the running unit's recomputed saved tensors
  double grads = 0;  ///< gradients of the running unit's outputs and inputs, its parameters' compute-dtype gradients
  double in_flight = 0;  ///< unsharded fp32 gradient buffers handed to reduce-scatter and not yet finished
};

/// One unit call of the traced step, in call order.
struct TracedUnitCall {
  std::string unit;
  int branch = 0;          ///< 0: the reference identity, 1: the diffusion branch, 2: the lookahead branch
  bool with_grad = false;  ///< the call gets a backward (the engine's rule)
  Flops flops;             ///< its forward, and its backward's gradients (without the recompute)
};

struct ActivationEstimate {
  BranchPeak diffusion;          ///< branch 1
  BranchPeak lookahead;          ///< branch 2 (in loss.mode sum, branch 1's gradient buffers are still in flight)
  double optimizer = 0;          ///< temporaries of the optimizer step (those of the largest group)
  int64_t unit_calls = 0;        ///< unit calls in the step
  int64_t backward_calls = 0;    ///< those that get a backward
  double largest_recompute = 0;  ///< the largest saved set of one recomputed unit call
  std::string largest_recompute_unit;
  double in_flight_end = 0;  ///< unsharded gradient buffers pending when the last backward ends
  std::set<std::string> diffusion_units, lookahead_units;  ///< units each branch calls (gathers)
  std::map<std::string, dist::UnitUse> uses;               ///< each unit's calls in the step
  std::vector<TracedUnitCall> calls;                       ///< every unit call, in order
  Flops flops;  ///< the step's counted FLOPs on one rank (unit calls and what runs between them)
};

/// What the estimate needs of a run.
struct ActivationShape {
  int64_t batch = 1;             ///< samples per rank
  model::SyntheticShape inputs;  ///< latent side, CLIP and prompt token counts
  int64_t world_size = 1;        ///< for the reduce-scatter output shards
  LossMode mode = LossMode::kSum;
  std::set<std::string> kept_units;  ///< units that keep their activations (dist.recompute)
};

/// Registers shape functions for meta tensors (once per process): the operators whose meta
/// kernels PyTorch keeps in Python, and scaled_dot_product_attention routed to the fused path the
/// runs take. estimate_activations calls it.
void register_meta_kernels();

/// Traces one training step of `config` on the meta device (an LCM-LoRA that would come from a
/// file is created with the LCM-LoRA SDXL's structure instead) and returns the per-rank peaks.
ActivationEstimate estimate_activations(model::LookaheadModelConfig config, const ActivationShape& shape);

/// The token counts of the real encoders for a preset's model (SDXL: 257 CLIP ViT-H tokens, 77
/// prompt tokens; the tiny preset: those of its tiny encoders) at `resolution` pixels.
model::SyntheticShape activation_inputs(const TrainConfig& config, int64_t resolution);

/// A run's per-rank memory in each phase of a step: what the engine always holds (frozen shards,
/// fp32 trainable shards, AdamW moments), the gathered weights of the units the phase runs (the
/// ring's largest and the kept units'), and the traced activations; in the optimizer phase the
/// gradient shards and the update's temporaries, or the gradient buffers still in flight when
/// the backward ends, whichever is larger.
struct StepMemoryPrediction {
  dist::ShardingLayout layout;
  dist::HeldBytes held;  ///< by role, the ring and kept units over the whole step (dist::held_bytes)
  ActivationEstimate activations;
  int64_t frozen = 0, lcm = 0, adapter = 0, lora = 0;  ///< parameter counts
  int64_t units = 0;
  std::vector<dist::UnitElements> unit_elements;  ///< each unit's counted elements by role
  dist::StepTraffic
      traffic;      ///< bytes sent per step (ring all-gathers and reduce-scatters, ranks filling nodes in order)
  double base = 0;  ///< held in every phase
  double diffusion_weights = 0, lookahead_weights = 0;  ///< gathered weights while each branch runs
  double diffusion() const { return base + diffusion_weights + activations.diffusion.total; }
  double lookahead() const { return base + lookahead_weights + activations.lookahead.total; }
  double optimizer() const { return base + std::max(activations.in_flight_end, held.grads + activations.optimizer); }
  double peak() const { return std::max({diffusion(), lookahead(), optimizer()}); }
};

/// Predicts the memory of one rank of `config` on `world_size` ranks (`ranks_per_node` per node)
/// for `model` (model_config(config, device) for a run), at `resolution` pixels and
/// train.batch_per_rank samples; `inputs` replaces the real encoders' token counts
/// (activation_inputs) for a model run on other shapes (the benchmarks' synthetic batches).
StepMemoryPrediction predict_step_memory(const TrainConfig& config, const model::LookaheadModelConfig& model,
                                         int64_t world_size, int64_t ranks_per_node, int64_t resolution,
                                         const std::optional<model::SyntheticShape>& inputs = std::nullopt);

}  // namespace lookahead::trainer
