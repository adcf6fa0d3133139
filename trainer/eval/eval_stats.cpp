// The t quantile inverts the t distribution's tail, ½·I_{ν/(ν+t²)}(ν/2, ½), by bisection; the
// incomplete beta is its continued fraction (modified Lentz). Past 1e5 degrees of freedom the
// fraction needs ~√ν terms, so the Cornish-Fisher expansion around the normal quantile (exact to
// ν⁻⁵ there, far below double precision) takes over.
#include "trainer/eval/eval_stats.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <cmath>

namespace lookahead::trainer {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// Continued fraction of I_x(a, b) (converges fast for x < (a + 1) / (a + b + 2)).
double beta_continued_fraction(double x, double a, double b) {
  constexpr double kTiny = 1e-300, kEps = 1e-15;
  constexpr int kMaxTerms = 200000;
  double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);
  if (std::abs(d) < kTiny) d = kTiny;
  d = 1.0 / d;
  double h = d;
  // One Lentz update with the partial numerator `coeff`; returns the factor applied to h.
  const auto step = [&](double coeff) {
    d = 1.0 + coeff * d;
    if (std::abs(d) < kTiny) d = kTiny;
    c = 1.0 + coeff / c;
    if (std::abs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    h *= d * c;
    return d * c;
  };
  for (int m = 1; m <= kMaxTerms; ++m) {
    const double md = m;
    step(md * (b - md) * x / ((a + 2 * md - 1.0) * (a + 2 * md)));                        // d_{2m}
    const double delta = step(-(a + md) * (a + b + md) * x / ((a + 2 * md) * (a + 2 * md + 1.0)));  // d_{2m+1}
    if (std::abs(delta - 1.0) < kEps) return h;
  }
  TORCH_CHECK(false, "regularized_incomplete_beta: no convergence for x = ", x, ", a = ", a, ", b = ", b);
}

/// Tail probability P(T > t) of Student's t with ν degrees of freedom, t >= 0.
double t_upper_tail(double t, double dof) { return 0.5 * regularized_incomplete_beta(dof / (dof + t * t), dof / 2, 0.5); }

/// Root of a decreasing `f` - target on [lo, hi] by bisection to the last representable bit.
template <typename F>
double bisect_decreasing(F f, double target, double lo, double hi) {
  for (int i = 0; i < 2000 && lo < hi; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) break;
    (f(mid) > target ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

}  // namespace

double regularized_incomplete_beta(double x, double a, double b) {
  TORCH_CHECK(a > 0 && b > 0 && x >= 0 && x <= 1, "regularized_incomplete_beta: needs a, b > 0 and x in [0, 1], got x = ",
              x, ", a = ", a, ", b = ", b);
  if (x == 0.0 || x == 1.0) return x;
  const double log_front = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  if (x < (a + 1.0) / (a + b + 2.0)) return std::exp(log_front) * beta_continued_fraction(x, a, b) / a;
  return 1.0 - std::exp(log_front) * beta_continued_fraction(1.0 - x, b, a) / b;
}

double normal_quantile(double p) {
  TORCH_CHECK(p > 0 && p < 1, "normal_quantile: p must lie in (0, 1), got ", p);
  if (p < 0.5) return -normal_quantile(1.0 - p);
  // Upper tail ½·erfc(z/√2) = 1 - p, decreasing in z; erfc keeps full relative precision there.
  return bisect_decreasing([](double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }, 1.0 - p, 0.0, 40.0);
}

double student_t_quantile(double p, double dof) {
  TORCH_CHECK(p > 0 && p < 1, "student_t_quantile: p must lie in (0, 1), got ", p);
  TORCH_CHECK(dof > 0 && !std::isnan(dof), "student_t_quantile: degrees of freedom must be positive, got ", dof);
  if (p < 0.5) return -student_t_quantile(1.0 - p, dof);
  if (p == 0.5) return 0.0;
  if (dof > 1e5) {
    // Cornish-Fisher (Abramowitz & Stegun 26.7.5).
    const double z = normal_quantile(p), z2 = z * z;
    const double g1 = (z2 + 1) * z / 4;
    const double g2 = ((5 * z2 + 16) * z2 + 3) * z / 96;
    const double g3 = (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384;
    const double g4 = ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) * z / 92160;
    return z + (g1 + (g2 + (g3 + g4 / dof) / dof) / dof) / dof;
  }
  const double tail = 1.0 - p;
  double hi = 1.0;
  while (t_upper_tail(hi, dof) > tail) {
    hi *= 2.0;
    TORCH_CHECK(std::isfinite(hi), "student_t_quantile: no bracket for p = ", p, ", dof = ", dof);
  }
  return bisect_decreasing([dof](double t) { return t_upper_tail(t, dof); }, tail, 0.0, hi);
}

Summary summarize(const std::vector<double>& values) {
  Summary s;
  s.n = static_cast<int64_t>(values.size());
  if (s.n == 0) return s;
  double sum = 0;
  for (const double v : values) {
    TORCH_CHECK(std::isfinite(v), "summarize: values must be finite (filter undefined samples first), got ", v);
    sum += v;
  }
  s.mean = sum / static_cast<double>(s.n);
  if (s.n < 2) return s;
  double squares = 0;
  for (const double v : values) squares += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(squares / static_cast<double>(s.n - 1));
  const double half = student_t_quantile(0.975, static_cast<double>(s.n - 1)) * s.std / std::sqrt(static_cast<double>(s.n));
  s.ci_low = s.mean - half;
  s.ci_high = s.mean + half;
  return s;
}

nlohmann::json to_json(const Summary& s) {
  return {{"n", s.n},
          {"mean", number_or_null(s.mean)},
          {"std", number_or_null(s.std)},
          {"ci95", nlohmann::json::array({number_or_null(s.ci_low), number_or_null(s.ci_high)})}};
}

}  // namespace lookahead::trainer
