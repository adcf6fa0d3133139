// TimestepDistribution: p(t) ∝ 1 − a·cos(πt/T), sampled by inverting its CDF.
#include "model/sched/timestep_distribution.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <numbers>
#include <vector>

namespace lookahead::model::sched {

TimestepDistribution::TimestepDistribution(double a, int64_t num_train_timesteps)
    : a_(a), T_(num_train_timesteps) {
  TORCH_CHECK(std::isfinite(a) && a >= -1.0 && a <= 1.0,
              "TimestepDistribution: a must lie in [-1, 1] so that p(t) >= 0, got ", a);
  TORCH_CHECK(T_ >= 1, "TimestepDistribution: num_train_timesteps must be >= 1, got ", T_);
  std::vector<double> w(static_cast<size_t>(T_));
  double total = 0;
  for (int64_t t = 0; t < T_; ++t) {
    w[static_cast<size_t>(t)] =
        1.0 - a * std::cos(std::numbers::pi * static_cast<double>(t) / static_cast<double>(T_));
    total += w[static_cast<size_t>(t)];
  }
  probs_ = at::tensor(w, at::kDouble) / total;  // [T]
  cdf_ = probs_.cumsum(0);                      // [T]
  // Rounding can leave the last entry a hair below 1; a uniform draw must never fall past it.
  cdf_[T_ - 1] = 1.0;
}

at::Tensor TimestepDistribution::sample(int64_t n, at::Generator& generator) const {
  TORCH_CHECK(n >= 0, "TimestepDistribution::sample: n must be >= 0, got ", n);
  TORCH_CHECK(generator.defined() && generator.device().is_cpu(),
              "TimestepDistribution::sample needs a CPU generator (draws are made on the host and "
              "are identical on every machine); move the result to the device afterwards");
  const at::Tensor u = at::rand({n}, generator, at::TensorOptions().dtype(at::kDouble));  // [n] in [0, 1)
  // First t with cdf[t] > u: P(t) = cdf[t] − cdf[t−1] = p(t).
  return at::searchsorted(cdf_, u, /*out_int32=*/false, /*right=*/true).clamp_max(T_ - 1);
}

at::Tensor TimestepDistribution::sample(int64_t n, uint64_t seed) const {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return sample(n, generator);
}

}  // namespace lookahead::model::sched
