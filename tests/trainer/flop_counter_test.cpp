// trainer/flop_counter: the FLOPs of products, convolutions and attention against their formulas,
// written out here from the shapes, on the CPU and on the meta device (where the step is traced),
// with the backward's share following which operands need a gradient.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include "trainer/activation_estimate.h"
#include "trainer/flop_counter.h"

namespace lookahead::trainer {
namespace {

class Devices : public ::testing::TestWithParam<c10::DeviceType> {
 protected:
  // The step is traced on meta with the trace's own shape functions (convolution, fused attention).
  static void SetUpTestSuite() { register_meta_kernels(); }
  at::TensorOptions opts() const { return at::TensorOptions().device(GetParam()); }
};

TEST_P(Devices, LinearIsOneProductAndItsGradientsFollowRequiresGrad) {
  at::Tensor weight = at::ones({11, 7}, opts()).requires_grad_(true);
  at::Tensor bias = at::ones({11}, opts()).requires_grad_(true);
  auto lin = [&](const at::Tensor& x) { return at::linear(x, weight, bias); };
  const double f = 2.0 * 3 * 5 * 7 * 11;  // [3, 5, 7] x [7, 11]
  {
    FlopCounter c;
    (void)lin(at::ones({3, 5, 7}, opts()));
    EXPECT_DOUBLE_EQ(c.flops().forward, f);
    EXPECT_DOUBLE_EQ(c.flops().backward, f);  // the weight's gradient only
  }
  {
    FlopCounter c;
    (void)lin(at::ones({3, 5, 7}, opts()).requires_grad_(true));
    EXPECT_DOUBLE_EQ(c.flops().backward, 2 * f);  // and the input's
  }
  weight.requires_grad_(false);
  bias.requires_grad_(false);
  {
    FlopCounter c;
    (void)lin(at::ones({15, 7}, opts()));
    EXPECT_DOUBLE_EQ(c.flops().forward, f);
    EXPECT_DOUBLE_EQ(c.flops().backward, 0);  // frozen, and the input needs nothing
  }
}

TEST_P(Devices, ConvolutionCountsOutputPositionsTimesKernel) {
  const at::Tensor x = at::ones({2, 4, 17, 19}, opts());
  const at::Tensor w = at::ones({8, 2, 3, 3}, opts());  // groups 2: 2 input channels per group
  FlopCounter c;
  const at::Tensor y = at::conv2d(x, w, {}, {2, 2}, {1, 1}, {1, 1}, 2);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 8, 9, 10}));
  EXPECT_DOUBLE_EQ(c.flops().forward, 2.0 * 2 * 8 * 9 * 10 * 2 * 3 * 3);
  EXPECT_DOUBLE_EQ(c.flops().backward, 0);
  FlopCounter inner;
  const at::Tensor w4 = at::ones({8, 4, 3, 3}, opts()).requires_grad_(true);
  (void)at::conv2d(x.clone().requires_grad_(true), w4, {}, 1, 1);  // 17 x 19 out, groups 1
  EXPECT_DOUBLE_EQ(inner.flops().forward, 2.0 * 2 * 8 * 17 * 19 * 4 * 3 * 3);
  EXPECT_DOUBLE_EQ(inner.flops().backward, 2 * inner.flops().forward);
}

TEST_P(Devices, AttentionCountsScoresAndWeightedSumOnce) {
  const at::Tensor q = at::ones({2, 4, 6, 8}, opts()), k = at::ones({2, 4, 10, 8}, opts()),
                   v = at::ones({2, 4, 10, 16}, opts());
  const double qk = 2.0 * 8 * 6 * 10 * 8, pv = 2.0 * 8 * 6 * 10 * 16;
  {
    FlopCounter c;
    (void)at::scaled_dot_product_attention(q, k, v);
    EXPECT_DOUBLE_EQ(c.flops().forward, qk + pv);  // the products inside are not counted again
    EXPECT_DOUBLE_EQ(c.flops().backward, 0);
  }
  {
    FlopCounter c;
    (void)at::scaled_dot_product_attention(q, k, v.clone().requires_grad_(true));
    EXPECT_DOUBLE_EQ(c.flops().backward, pv);  // dV = P^T dO
  }
  {
    FlopCounter c;
    (void)at::scaled_dot_product_attention(q.clone().requires_grad_(true), k, v);
    EXPECT_DOUBLE_EQ(c.flops().backward, pv + qk);  // dP = dO V^T, dQ = dS K
  }
}

INSTANTIATE_TEST_SUITE_P(CpuAndMeta, Devices, ::testing::Values(c10::kCPU, c10::kMeta),
                         [](const auto& info) { return info.param == c10::kCPU ? "cpu" : "meta"; });

TEST(FlopCounter, CountsInTheInnermostCounterOnly) {
  const at::Tensor a = at::ones({4, 5}), b = at::ones({5, 6});
  FlopCounter outer;
  (void)at::mm(a, b);
  {
    FlopCounter inner;
    (void)at::mm(a, b);
    (void)at::bmm(a.unsqueeze(0).expand({3, 4, 5}), b.unsqueeze(0).expand({3, 5, 6}));
    EXPECT_DOUBLE_EQ(inner.flops().forward, 4 * 2.0 * 4 * 5 * 6);
  }
  (void)at::addmm(at::zeros({4, 6}), a, b);
  EXPECT_DOUBLE_EQ(outer.flops().forward, 2 * 2.0 * 4 * 5 * 6);
}

TEST(FlopCounter, CountsNothingWithoutACounter) {
  const at::Tensor a = at::ones({4, 5}), b = at::ones({5, 6});
  { FlopCounter c; }
  (void)at::mm(a, b);  // the observer is gone
  FlopCounter c;
  EXPECT_DOUBLE_EQ(c.flops().forward, 0);
}

}  // namespace
}  // namespace lookahead::trainer
