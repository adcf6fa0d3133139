// Per-sample generators for split-invariant step draws.
#include "model/lookahead/step_draw.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "common/seed.h"
#include "model/sched/timestep_distribution.h"

namespace lookahead::model {

using common::mix_seed;

namespace {

// Stream tags keep the per-sample and batch-shared seeds of one step apart.
constexpr uint64_t kSampleStream = 0x73616d706c65ULL;  // "sample"
constexpr uint64_t kKvStream = 0x6b7664726f70ULL;      // "kvdrop"

}  // namespace

at::Generator cpu_generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

StepDraw draw_step(const StepDrawOptions& options, uint64_t seed, int64_t step, int64_t global_batch, int64_t first,
                   int64_t count, at::IntArrayRef latent_shape) {
  TORCH_CHECK(global_batch > 0 && first >= 0 && count >= 0 && first + count <= global_batch,
              "draw_step: samples [", first, ", ", first + count, ") are not inside a global batch of ", global_batch);
  TORCH_CHECK(options.adapter_drop_p >= 0.0 && options.adapter_drop_p <= 1.0,
              "draw_step: adapter drop probability must be in [0, 1], got ", options.adapter_drop_p);
  const sched::TimestepDistribution diffusion(options.diffusion_timestep_a, options.num_train_timesteps);
  const sched::TimestepDistribution lcm(options.lcm_timestep_a, options.num_train_timesteps);

  const uint64_t step_seed = mix_seed(seed, static_cast<uint64_t>(step));
  std::vector<at::Tensor> noise, t, t2;
  std::vector<bool> drop;
  for (int64_t i = first; i < first + count; ++i) {
    at::Generator gen = cpu_generator(mix_seed(mix_seed(step_seed, kSampleStream), static_cast<uint64_t>(i)));
    // Scalars first, noise last: a sample's timesteps do not depend on the latent resolution.
    t.push_back(diffusion.sample(1, gen));
    t2.push_back(lcm.sample(1, gen));
    drop.push_back(at::empty({1}, at::kDouble).uniform_(0.0, 1.0, gen).item<double>() < options.adapter_drop_p);
    noise.push_back(at::randn(latent_shape, gen, at::kFloat));
  }
  StepDraw out;
  out.step = step;
  out.first = first;
  std::vector<int64_t> noise_shape{count};
  noise_shape.insert(noise_shape.end(), latent_shape.begin(), latent_shape.end());
  out.noise = count ? at::stack(noise) : at::empty(noise_shape, at::kFloat);  // [n, C, h, w]
  out.timesteps = count ? at::cat(t) : at::empty({0}, at::kLong);
  out.lcm_timesteps = count ? at::cat(t2) : at::empty({0}, at::kLong);
  out.adapter_drop = at::empty({count}, at::kBool);
  for (int64_t i = 0; i < count; ++i) out.adapter_drop[i] = static_cast<bool>(drop[i]);
  const uint64_t kv = mix_seed(step_seed, kKvStream);
  out.kv_drop_seed = mix_seed(kv, 1);
  out.lcm_kv_drop_seed = mix_seed(kv, 2);
  return out;
}

}  // namespace lookahead::model
