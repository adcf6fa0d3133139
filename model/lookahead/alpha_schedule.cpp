// α drawn from a counter-based hash of (seed, block of steps).
#include "model/lookahead/alpha_schedule.h"

#include <c10/util/Exception.h>

#include <cmath>

#include "common/seed.h"

namespace lookahead::model {

using common::mix_seed;

namespace {

constexpr uint64_t kAlphaStream = 0x616c706861ULL;  // "alpha"

/// Uniform double in [0, 1) from 53 bits.
double unit(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

}  // namespace

AlphaSchedule::AlphaSchedule(uint64_t seed, AlphaScheduleOptions options) : seed_(seed), options_(options) {
  TORCH_CHECK(options.every >= 1, "AlphaSchedule: redraw period must be >= 1, got ", options.every);
  TORCH_CHECK(options.full_prob >= 0.0 && options.full_prob <= 1.0, "AlphaSchedule: full_prob must be in [0, 1], got ",
              options.full_prob);
  TORCH_CHECK(options.min_scale >= 0.0 && options.min_scale <= options.max_scale,
              "AlphaSchedule: need 0 <= min_scale <= max_scale, got ", options.min_scale, " and ", options.max_scale);
}

double AlphaSchedule::value(int64_t step) const {
  TORCH_CHECK(step >= 0, "AlphaSchedule: step must be non-negative, got ", step);
  const int64_t block = step / options_.every;
  const uint64_t key = mix_seed(mix_seed(seed_, kAlphaStream), static_cast<uint64_t>(block));
  if (unit(mix_seed(key, 1)) < options_.full_prob) return 1.0;
  return options_.min_scale + (options_.max_scale - options_.min_scale) * unit(mix_seed(key, 2));
}

double AlphaSchedule::at(int64_t step) {
  const double a = value(step);
  state_.alpha = a;
  state_.drawn_at = step - step % options_.every;
  return a;
}

void AlphaSchedule::restore(const State& state) {
  if (state.drawn_at >= 0) {
    TORCH_CHECK(state.drawn_at % options_.every == 0, "AlphaSchedule: state drawn at step ", state.drawn_at,
                " is not a multiple of the redraw period ", options_.every);
    TORCH_CHECK(std::abs(value(state.drawn_at) - state.alpha) < 1e-12, "AlphaSchedule: checkpointed alpha ",
                state.alpha, " at step ", state.drawn_at, " does not match this schedule's seed (expected ",
                value(state.drawn_at), ")");
  }
  state_ = state;
}

}  // namespace lookahead::model
