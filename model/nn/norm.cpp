// GroupNorm / LayerNorm on top of ATen's functional kernels.
#include "model/nn/norm.h"

#include <ATen/ATen.h>

#include "model/nn/skip_init.h"

namespace lookahead::model::nn {

namespace {
void init_affine(at::Tensor& weight, at::Tensor& bias) {
  if (weight.is_meta() || SkipInit::active()) return;
  at::NoGradGuard no_grad;
  weight.fill_(1.0);
  bias.zero_();
}
}  // namespace

GroupNormImpl::GroupNormImpl(const GroupNormOptions& options_) : options(options_) { reset(); }

void GroupNormImpl::reset() {
  TORCH_CHECK(options.num_channels() % options.num_groups() == 0, "GroupNorm: ", options.num_channels(),
              " channels are not divisible into ", options.num_groups(), " groups");
  weight = register_parameter("weight", at::empty({options.num_channels()}, options.tensor_options()));
  bias = register_parameter("bias", at::empty({options.num_channels()}, options.tensor_options()));
  init_affine(weight, bias);
}

at::Tensor GroupNormImpl::forward(const at::Tensor& x) {
  return at::group_norm(x, options.num_groups(), weight, bias, options.eps());
}

void GroupNormImpl::pretty_print(std::ostream& stream) const {
  stream << "GroupNorm(" << options.num_groups() << ", " << options.num_channels() << ", eps=" << options.eps() << ")";
}

LayerNormImpl::LayerNormImpl(const LayerNormOptions& options_) : options(options_) { reset(); }

void LayerNormImpl::reset() {
  weight = register_parameter("weight", at::empty({options.dim()}, options.tensor_options()));
  bias = register_parameter("bias", at::empty({options.dim()}, options.tensor_options()));
  init_affine(weight, bias);
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) {
  return at::layer_norm(x, {options.dim()}, weight, bias, options.eps());
}

void LayerNormImpl::pretty_print(std::ostream& stream) const {
  stream << "LayerNorm(" << options.dim() << ", eps=" << options.eps() << ")";
}

}  // namespace lookahead::model::nn
