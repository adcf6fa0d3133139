// Face-network layers: fresh weights are Kaiming-normal convolutions / linears and identity
// BatchNorms (weight 1, bias 0, mean 0, var 1), PReLU slopes 0.25 as in PyTorch; checkpoints
// overwrite them all (and under nn::SkipInit the random ones are not drawn).
#include "model/face/layers.h"

#include <ATen/ATen.h>

#include <cmath>

#include "model/nn/skip_init.h"

namespace lookahead::model::face {

namespace {
/// N(0, std²) values, or uninitialized ones under nn::SkipInit (a file overwrites them).
at::Tensor normal_weight(at::IntArrayRef shape, double std, const at::TensorOptions& options) {
  if (nn::SkipInit::active() || options.device().is_meta()) return at::empty(shape, options);
  return at::randn(shape, options).mul_(std);
}
}  // namespace

ConvImpl::ConvImpl(const ConvOptions& options_) : options(options_) { reset(); }

void ConvImpl::reset() {
  const auto& o = options;
  const double fan_in = static_cast<double>(o.in_channels() * o.kernel_size() * o.kernel_size());
  weight = register_parameter("weight",
                              normal_weight({o.out_channels(), o.in_channels(), o.kernel_size(), o.kernel_size()},
                                            std::sqrt(2.0 / fan_in), o.tensor_options()));
  if (o.bias()) bias = register_parameter("bias", at::zeros({o.out_channels()}, o.tensor_options()));
}

at::Tensor ConvImpl::forward(const at::Tensor& x) {
  return at::conv2d(x, weight, bias, options.stride(), options.padding());
}

BatchNormImpl::BatchNormImpl(const BatchNormOptions& options_) : options(options_) { reset(); }

void BatchNormImpl::reset() {
  const auto n = options.num_features();
  const auto& t = options.tensor_options();
  weight = register_parameter("weight", at::ones({n}, t));
  bias = register_parameter("bias", at::zeros({n}, t));
  running_mean = register_buffer("running_mean", at::zeros({n}, t));
  running_var = register_buffer("running_var", at::ones({n}, t));
  num_batches_tracked = register_buffer("num_batches_tracked", at::zeros({}, t.dtype(at::kLong)));
}

at::Tensor BatchNormImpl::forward(const at::Tensor& x) {
  return at::batch_norm(x, weight, bias, running_mean, running_var, /*training=*/false, /*momentum=*/0.0,
                        options.eps(), /*cudnn_enabled=*/true);
}

PReluImpl::PReluImpl(int64_t channels_, at::TensorOptions tensor_options_)
    : channels(channels_), tensor_options(tensor_options_) {
  reset();
}

void PReluImpl::reset() { weight = register_parameter("weight", at::full({channels}, 0.25, tensor_options)); }

at::Tensor PReluImpl::forward(const at::Tensor& x) { return at::prelu(x, weight); }

LinearImpl::LinearImpl(int64_t in, int64_t out, at::TensorOptions tensor_options_)
    : in_features(in), out_features(out), tensor_options(tensor_options_) {
  reset();
}

void LinearImpl::reset() {
  weight = register_parameter(
      "weight", normal_weight({out_features, in_features}, 1.0 / std::sqrt(static_cast<double>(in_features)),
                              tensor_options));
  bias = register_parameter("bias", at::zeros({out_features}, tensor_options));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) { return at::linear(x, weight, bias); }

at::Tensor l2_normalize(const at::Tensor& x) { return x / x.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12); }

}  // namespace lookahead::model::face
