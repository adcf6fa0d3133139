// The one-step LCM "lookahead" preview used in training: from the LCM UNet's output at the
// CURRENT timestep t (not the next one, as diffusers' multi-step LCMScheduler would use), the
// consistency boundary condition gives ẑ0 = c_out(t)·x0(ε̂) + c_skip(t)·z_t, as the official
// LCM-Lookahead `LCMSingleStepScheduler.step` computes it. Plain tensor ops, so the gradient of
// the image-space loss flows through ẑ0 into the model output.
#pragma once

#include <ATen/core/Tensor.h>

#include "model/sched/noise_schedule.h"

namespace lookahead::model::sched {

/// LCM boundary-condition scalings for a batch of timesteps: s = t·timestep_scaling,
/// c_skip = σ_d² / (s² + σ_d²), c_out = s / √(s² + σ_d²).
struct LcmBoundary {
  at::Tensor c_skip;  // [B] float32
  at::Tensor c_out;   // [B] float32
};

/// Scalings for integer timesteps t [B] (computed in float32 on t's device, as diffusers does
/// for a tensor timestep). sigma_data 0.5 and timestep_scaling 10 are the LCM-LoRA SDXL values.
LcmBoundary lcm_boundary_scalings(const at::Tensor& timesteps, double timestep_scaling = 10.0,
                                  double sigma_data = 0.5);

/// One-step preview ẑ0 = c_out·x0 + c_skip·z_t with x0 = schedule.predict_x0(z_t, model_output, t).
/// z_t, model_output: [B, C, H, W] (any rank ≥ 1); timesteps: [B] integer, the t z_t was noised to.
/// Coefficients are float32, so fp16/bf16 inputs give a float32 result. Differentiable.
at::Tensor lcm_preview(const NoiseSchedule& schedule, const at::Tensor& z_t, const at::Tensor& model_output,
                       const at::Tensor& timesteps, double timestep_scaling = 10.0, double sigma_data = 0.5);

}  // namespace lookahead::model::sched
