// One-step LCM preview at the current timestep (see lcm_preview.h).
#include "model/sched/lcm_preview.h"

#include <ATen/ATen.h>

#include <cmath>

namespace lookahead::model::sched {

LcmBoundary lcm_boundary_scalings(const at::Tensor& timesteps, double timestep_scaling, double sigma_data) {
  TORCH_CHECK(timesteps.defined() && timesteps.dim() == 1, "lcm_boundary_scalings: timesteps must be [B]");
  TORCH_CHECK(std::isfinite(timestep_scaling) && timestep_scaling > 0,
              "lcm_boundary_scalings: timestep_scaling must be > 0, got ", timestep_scaling);
  TORCH_CHECK(std::isfinite(sigma_data) && sigma_data > 0, "lcm_boundary_scalings: sigma_data must be > 0, got ",
              sigma_data);
  // Same op order as diffusers: an int64 tensor times a Python float is float32; `a / tensor` is
  // reciprocal(tensor) * a in torch's Python operator.
  const double sd2 = sigma_data * sigma_data;
  const at::Tensor s = timesteps.to(at::kFloat) * timestep_scaling;  // [B]
  const at::Tensor denom = s.pow(2) + sd2;                          // [B]
  return LcmBoundary{denom.reciprocal() * sd2, s / denom.pow(0.5)};
}

at::Tensor lcm_preview(const NoiseSchedule& schedule, const at::Tensor& z_t, const at::Tensor& model_output,
                       const at::Tensor& timesteps, double timestep_scaling, double sigma_data) {
  schedule.check_timesteps(timesteps, z_t, "lcm_preview");
  const at::Tensor x0 = schedule.predict_x0(z_t, model_output, timesteps);  // [B, ...]
  const LcmBoundary b = lcm_boundary_scalings(timesteps.to(z_t.device()), timestep_scaling, sigma_data);
  std::vector<int64_t> shape(static_cast<size_t>(z_t.dim()), 1);
  shape[0] = z_t.size(0);
  return b.c_out.reshape(shape) * x0 + b.c_skip.reshape(shape) * z_t;
}

}  // namespace lookahead::model::sched
