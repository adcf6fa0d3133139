// Tensor comparisons for gtest with the worst element in the failure message.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace lookahead::test {

/// |got - want| <= atol + rtol * |want| element-wise (compared in float64); a failure names `what`,
/// the worst element's index and both values.
inline void expect_close(const at::Tensor& got_any, const at::Tensor& want_any, double rtol, double atol,
                         const std::string& what) {
  at::Tensor got = got_any.detach().cpu().to(at::kDouble), want = want_any.detach().cpu().to(at::kDouble);
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  at::Tensor excess = (got - want).abs() - (want.abs() * rtol + atol);
  if (excess.numel() == 0) return;
  const int64_t worst = excess.reshape({-1}).argmax().item<int64_t>();
  EXPECT_LE(excess.reshape({-1})[worst].item<double>(), 0.0)
      << what << ": element " << worst << " got " << got.reshape({-1})[worst].item<double>() << " want "
      << want.reshape({-1})[worst].item<double>();
}

}  // namespace lookahead::test
