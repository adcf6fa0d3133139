// GroupNorm and LayerNorm whose parameters can be created on any device (meta included), so a
// full-size network can be built without allocating its weights.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

namespace lookahead::model::nn {

/// GroupNorm(num_groups, channels, eps), affine. Input [B, C, ...].
struct GroupNormOptions {
  GroupNormOptions(int64_t groups, int64_t channels) : num_groups_(groups), num_channels_(channels) {}
  TORCH_ARG(int64_t, num_groups);
  TORCH_ARG(int64_t, num_channels);
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
};

class GroupNormImpl : public torch::nn::Cloneable<GroupNormImpl> {
 public:
  explicit GroupNormImpl(const GroupNormOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  GroupNormOptions options;
  at::Tensor weight, bias;  // [C]
};
TORCH_MODULE(GroupNorm);

/// LayerNorm over the last dimension, affine.
struct LayerNormOptions {
  explicit LayerNormOptions(int64_t dim) : dim_(dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
};

class LayerNormImpl : public torch::nn::Cloneable<LayerNormImpl> {
 public:
  explicit LayerNormImpl(const LayerNormOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [..., dim]
  void pretty_print(std::ostream& stream) const override;
  LayerNormOptions options;
  at::Tensor weight, bias;  // [dim]
};
TORCH_MODULE(LayerNorm);

}  // namespace lookahead::model::nn
