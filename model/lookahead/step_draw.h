// The random draw of one training step (noise, both branches' timesteps, adapter dropout,
// reference-token dropout seeds), made so that it does not depend on how the global batch is split
// across ranks: every per-sample value comes from a generator seeded by (seed, step, global sample
// index), and the batch-shared values from (seed, step) alone. N ranks holding slices of the
// global batch therefore see exactly the values one rank holding all of it would.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>

namespace lookahead::model {

/// Probabilities and sampler settings of a step draw (the official training values).
struct StepDrawOptions {
  double adapter_drop_p = 0.1;       ///< per sample: IP tokens replaced by the unconditional ones (branch 1)
  double diffusion_timestep_a = 0.5; ///< importance sampler a of branch 1
  double lcm_timestep_a = 0.2;       ///< importance sampler a of branch 2
  int64_t num_train_timesteps = 1000;
};

/// Values of samples [first, first + size()) of the global batch of one step. CPU tensors.
struct StepDraw {
  int64_t step = 0;
  int64_t first = 0;
  at::Tensor noise;           ///< [n, C, h, w] float32: ε, shared by both branches (as the official code)
  at::Tensor timesteps;       ///< [n] int64: t of branch 1 (p ∝ 1 − 0.5·cos(πt/T))
  at::Tensor lcm_timesteps;   ///< [n] int64: t' of branch 2 (p ∝ 1 − 0.2·cos(πt/T))
  at::Tensor adapter_drop;    ///< [n] bool: IP tokens of the sample replaced by the unconditional ones
  uint64_t kv_drop_seed = 0;      ///< reference-token dropout of branch 1 (same on every rank)
  uint64_t lcm_kv_drop_seed = 0;  ///< reference-token dropout of branch 2 (same on every rank)

  int64_t size() const { return timesteps.defined() ? timesteps.size(0) : 0; }
};

/// Draws samples [first, first + count) of step `step` of a global batch of `global_batch`
/// samples; `latent_shape` is one sample's latent shape {C, h, w}. Deterministic in its arguments
/// and independent of (first, count) per sample: draw(…, 0, 4) equals the concatenation of
/// draw(…, 0, 2) and draw(…, 2, 2).
StepDraw draw_step(const StepDrawOptions& options, uint64_t seed, int64_t step, int64_t global_batch, int64_t first,
                   int64_t count, at::IntArrayRef latent_shape);

/// A CPU generator seeded with `seed` (for ReferenceKv::drop_tokens with a StepDraw seed).
at::Generator cpu_generator(uint64_t seed);

}  // namespace lookahead::model
