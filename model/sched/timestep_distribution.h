// Importance-sampled training timesteps: t ∈ {0, …, T−1} with p(t) ∝ 1 − a·cos(π t / T), the
// official LCM-Lookahead `importance_sampling_fn` (a = 0.5 for the diffusion branch, 0.2 for the
// LCM branch; both favour noisier timesteps). Draws come from a caller-owned torch generator so
// that a run is reproducible from its seed and resumable from the generator state.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lookahead::model::sched {

/// a of the diffusion branch (3:1 density from t≈T to t≈0).
inline constexpr double kDiffusionImportanceA = 0.5;
/// a of the LCM lookahead branch (1.5:1).
inline constexpr double kLcmImportanceA = 0.2;

/// Inverse-CDF sampler of p(t) ∝ 1 − a·cos(πt/T).
class TimestepDistribution {
 public:
  /// a ∈ [−1, 1] (a = 0 is uniform); T ≥ 1.
  explicit TimestepDistribution(double a, int64_t num_train_timesteps = 1000);

  double a() const { return a_; }
  int64_t num_train_timesteps() const { return T_; }
  /// p(t), t = 0..T−1: [T] float64 summing to 1.
  const at::Tensor& probabilities() const { return probs_; }

  /// n timesteps: [n] int64 on the CPU. `generator` must be a CPU generator; it is advanced by
  /// exactly n uniform draws, so the same seed gives the same timesteps on every machine.
  at::Tensor sample(int64_t n, at::Generator& generator) const;
  /// Same, from a fresh CPU generator seeded with `seed`.
  at::Tensor sample(int64_t n, uint64_t seed) const;

 private:
  double a_;
  int64_t T_;
  at::Tensor probs_;  // [T] float64
  at::Tensor cdf_;    // [T] float64, cdf_[T-1] == 1
};

}  // namespace lookahead::model::sched
