// Small layers shared by the face networks (ArcFace iresnet, IR-SE50): Conv2d, BatchNorm (eval
// mode, running statistics as buffers), PReLU and Linear with PyTorch key names, built with
// explicit tensor options so a whole network can be constructed on the meta device.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace lookahead::model::face {

/// Options of Conv2d (square kernel; no dilation or groups).
struct ConvOptions {
  ConvOptions(int64_t in, int64_t out, int64_t kernel) : in_channels_(in), out_channels_(out), kernel_size_(kernel) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, padding) = 0;
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
};

/// nn.Conv2d: keys `weight` [out, in, k, k] and, with bias, `bias` [out].
class ConvImpl : public torch::nn::Cloneable<ConvImpl> {
 public:
  explicit ConvImpl(const ConvOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, in, H, W] -> [B, out, H', W']
  ConvOptions options;
  at::Tensor weight;
  at::Tensor bias;
};
TORCH_MODULE(Conv);

/// Options of BatchNorm (1d or 2d: the statistics are per channel, dimension 1).
struct BatchNormOptions {
  explicit BatchNormOptions(int64_t features) : num_features_(features) {}
  TORCH_ARG(int64_t, num_features);
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
};

/// nn.BatchNorm1d/2d in eval mode: parameters `weight`, `bias`; buffers `running_mean`,
/// `running_var`, `num_batches_tracked` (int64 scalar, loaded and unused).
class BatchNormImpl : public torch::nn::Cloneable<BatchNormImpl> {
 public:
  explicit BatchNormImpl(const BatchNormOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, C, ...] -> same
  BatchNormOptions options;
  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
};
TORCH_MODULE(BatchNorm);

/// nn.PReLU(C): key `weight` [C]; y = max(0, x) + a_c min(0, x).
class PReluImpl : public torch::nn::Cloneable<PReluImpl> {
 public:
  PReluImpl(int64_t channels, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, C, ...] -> same
  int64_t channels;
  at::TensorOptions tensor_options;
  at::Tensor weight;
};
TORCH_MODULE(PRelu);

/// nn.Linear(in, out) with bias: keys `weight` [out, in], `bias` [out].
class LinearImpl : public torch::nn::Cloneable<LinearImpl> {
 public:
  LinearImpl(int64_t in, int64_t out, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, in] -> [B, out]
  int64_t in_features, out_features;
  at::TensorOptions tensor_options;
  at::Tensor weight, bias;
};
TORCH_MODULE(Linear);

/// Row-wise L2 normalisation x / ||x||_2 (norm clamped at 1e-12), as TreB1eN's `l2_norm`.
at::Tensor l2_normalize(const at::Tensor& x);  // [B, D] -> [B, D]

}  // namespace lookahead::model::face
