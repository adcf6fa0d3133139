// numpy's linspace / arange / interp / round in float64, and float32 sqrt / log / exp through
// libtorch's kernels (see numpy_compat.h).
#include "model/sched/numpy_compat.h"

#include <ATen/ATen.h>

#include <cmath>

namespace lookahead::model::sched {

namespace detail {

std::vector<double> np_linspace(double start, double stop, int64_t num, bool endpoint) {
  TORCH_CHECK(num >= 0, "np_linspace: num must be >= 0");
  const int64_t div = endpoint ? num - 1 : num;
  const double delta = stop - start;
  std::vector<double> y(static_cast<size_t>(num));
  if (div > 0) {
    const double step = delta / static_cast<double>(div);
    for (int64_t i = 0; i < num; ++i) {
      // numpy divides first when the step underflows to zero.
      y[static_cast<size_t>(i)] = step == 0 ? static_cast<double>(i) / static_cast<double>(div) * delta
                                            : static_cast<double>(i) * step;
    }
  } else {
    for (int64_t i = 0; i < num; ++i) {
      y[static_cast<size_t>(i)] = static_cast<double>(i) * delta;
    }
  }
  for (double& v : y) {
    v += start;
  }
  if (endpoint && num > 1) {
    y.back() = stop;
  }
  return y;
}

std::vector<double> np_arange(double start, double stop, double step) {
  TORCH_CHECK(step != 0 && std::isfinite(step), "np_arange: step must be finite and non-zero");
  const double len_f = std::ceil((stop - start) / step);
  const int64_t len = len_f > 0 ? static_cast<int64_t>(len_f) : 0;
  std::vector<double> y(static_cast<size_t>(len));
  if (len == 0) {
    return y;
  }
  // numpy fills buffer[i] = start + i * (buffer[1] - buffer[0]), not start + i * step.
  y[0] = start;
  if (len > 1) {
    y[1] = start + step;
    const double delta = y[1] - start;
    for (int64_t i = 2; i < len; ++i) {
      y[static_cast<size_t>(i)] = start + static_cast<double>(i) * delta;
    }
  }
  return y;
}

double np_interp_index(double x, const std::vector<double>& fp) {
  TORCH_CHECK(!fp.empty(), "np_interp_index: empty table");
  const auto last = static_cast<int64_t>(fp.size()) - 1;
  if (x <= 0) {
    return fp.front();
  }
  if (x >= static_cast<double>(last)) {
    return fp.back();
  }
  const auto j = static_cast<int64_t>(std::floor(x));
  const double fj = fp[static_cast<size_t>(j)];
  if (static_cast<double>(j) == x) {
    return fj;
  }
  const double slope = (fp[static_cast<size_t>(j + 1)] - fj) / 1.0;
  return slope * (x - static_cast<double>(j)) + fj;
}

double np_round(double x) { return std::nearbyint(x); }

std::vector<double> train_sigmas(const NoiseSchedule& schedule) {
  const at::Tensor s = schedule.train_sigmas_f32().to(at::kDouble).contiguous();
  const double* p = s.const_data_ptr<double>();
  return std::vector<double>(p, p + s.numel());
}

namespace {

template <typename Op>
float f32_unary(float x, Op op) {
  return op(at::scalar_tensor(x, at::TensorOptions().dtype(at::kFloat))).template item<float>();
}

}  // namespace

float f32_sqrt(float x) {
  return f32_unary(x, [](const at::Tensor& t) { return t.sqrt(); });
}

float f32_log(float x) {
  return f32_unary(x, [](const at::Tensor& t) { return t.log(); });
}

float f32_exp(float x) {
  return f32_unary(x, [](const at::Tensor& t) { return t.exp(); });
}

}  // namespace detail

}  // namespace lookahead::model::sched
