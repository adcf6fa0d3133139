// Summary statistics of evaluation metrics: mean, sample standard deviation and the 95 % Student-t
// confidence interval of the mean, with the t quantile computed (not tabulated).
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace lookahead::trainer {

/// A metric over n samples. std uses n - 1 (undefined, NaN, for n < 2); [ci_low, ci_high] is the
/// 95 % confidence interval of the mean, mean ± t_{0.975, n-1} · std / √n (NaN for n < 2).
struct Summary {
  int64_t n = 0;
  double mean = std::numeric_limits<double>::quiet_NaN();
  double std = std::numeric_limits<double>::quiet_NaN();
  double ci_low = std::numeric_limits<double>::quiet_NaN();
  double ci_high = std::numeric_limits<double>::quiet_NaN();
};

/// Summary of `values` (all finite: the caller filters undefined samples out; throws otherwise).
Summary summarize(const std::vector<double>& values);

/// {"n": n, "mean": …, "std": …, "ci95": [lo, hi]}; undefined (NaN) numbers are written as null.
nlohmann::json to_json(const Summary& s);

/// Regularized incomplete beta function I_x(a, b) for a, b > 0 and x in [0, 1].
double regularized_incomplete_beta(double x, double a, double b);

/// Quantile of the standard normal distribution, p in (0, 1).
double normal_quantile(double p);

/// Quantile of Student's t distribution with `dof` > 0 degrees of freedom, p in (0, 1).
double student_t_quantile(double p, double dof);

}  // namespace lookahead::trainer
