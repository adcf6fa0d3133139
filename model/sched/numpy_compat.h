// The numpy routines diffusers' timestep schedules are computed with (linspace, arange, interp,
// round, in their exact float64 behaviour), and float32 math done by libtorch's own kernels, so
// that the samplers reproduce diffusers' schedules and step coefficients to the last bit.
#pragma once

#include <cstdint>
#include <vector>

#include "model/sched/noise_schedule.h"

namespace lookahead::model::sched {

namespace detail {

/// numpy.linspace in float64 (values i·step + start, last = stop when endpoint).
std::vector<double> np_linspace(double start, double stop, int64_t num, bool endpoint = true);
/// numpy.arange(start, stop, step) in float64, numpy's length and fill rule included.
std::vector<double> np_arange(double start, double stop, double step);
/// numpy.interp(x, [0, 1, …, len−1], fp): linear, clamped at both ends.
double np_interp_index(double x, const std::vector<double>& fp);
/// numpy.round for float64 (half to even).
double np_round(double x);
/// The training sigmas as float64 copies of diffusers' float32 values: [T].
std::vector<double> train_sigmas(const NoiseSchedule& schedule);

/// float32 sqrt / log / exp evaluated by libtorch's own CPU kernels on a 0-d tensor. diffusers
/// computes step coefficients as 0-d float32 tensor math, and torch's vectorized log/exp are not
/// glibc's, so this is what keeps the coefficients identical to the last bit.
float f32_sqrt(float x);
float f32_log(float x);
float f32_exp(float x);

}  // namespace detail

}  // namespace lookahead::model::sched
