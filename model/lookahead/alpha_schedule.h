// The LCM-LoRA scale schedule of "alignment preservation" (docs/training.md, "The α schedule"): α = 1 with probability
// 0.5, otherwise α ~ U(0.1, 1), redrawn every 5 steps and held in between. The lookahead loss is
// also multiplied by α. Here the value is a pure function of (seed, step), so a resumed or
// re-sharded run gets the same α without replaying history; the state is kept for checkpoints.
#pragma once

#include <cstdint>

namespace lookahead::model {

struct AlphaScheduleOptions {
  double full_prob = 0.5;  ///< probability of α = 1 (the full LCM-LoRA)
  double min_scale = 0.1;  ///< otherwise α ~ U(min_scale, max_scale)
  double max_scale = 1.0;
  int64_t every = 5;       ///< steps between redraws
};

/// Example:
///   AlphaSchedule alphas(seed);
///   double a = alphas.at(step);   // same for steps 0..4, 5..9, ...
class AlphaSchedule {
 public:
  /// What a checkpoint stores: the α in force and the step it was drawn at (-1: none yet).
  struct State {
    double alpha = 1.0;
    int64_t drawn_at = -1;
  };

  explicit AlphaSchedule(uint64_t seed, AlphaScheduleOptions options = {});
  /// α for `step` (≥ 0); records it in the state.
  double at(int64_t step);
  /// α for `step` without touching the state.
  double value(int64_t step) const;

  const State& state() const { return state_; }
  /// Restores a checkpointed state; TORCH_CHECKs that it agrees with this schedule's seed.
  void restore(const State& state);
  const AlphaScheduleOptions& options() const { return options_; }

 private:
  uint64_t seed_;
  AlphaScheduleOptions options_;
  State state_;
};

}  // namespace lookahead::model
