// ArcFace iresnet (insightface recognition/arcface_torch/backbones/iresnet.py): iresnet50
// (layers 3,4,14,3) and iresnet100 (3,13,30,3). named_parameters()+named_buffers() are the keys
// of arcface_torch's backbone.pth state_dict (docs/models.md, "Faces").
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "model/face/layers.h"

namespace lookahead::model::face {

/// IResNet hyper-parameters. iresnet100: layers {3,13,30,3}; iresnet50: {3,4,14,3}.
struct IResNetOptions {
  /// Options of a named network: "iresnet50" or "iresnet100"; throws c10::Error otherwise.
  static IResNetOptions named(const std::string& name);
  /// Reads the JSON config {"network": "iresnet100", "layers": [3,13,30,3], "num_features": 512}
  /// (every key optional; "network" presets the layers, "layers" overrides them; any other key is
  /// refused naming it).
  static IResNetOptions from_json_file(const std::string& path);

  TORCH_ARG(std::vector<int64_t>, layers) = std::vector<int64_t>{3, 13, 30, 3};
  TORCH_ARG(int64_t, num_features) = 512;
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
};

/// IBasicBlock: bn1 -> conv1 (3x3) -> bn2 -> prelu -> conv2 (3x3, stride) -> bn3, plus the
/// identity or downsample.{0: Conv1x1(stride), 1: BN}; no activation after the add.
class IBasicBlockImpl : public torch::nn::Cloneable<IBasicBlockImpl> {
 public:
  IBasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride, bool downsample, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, inplanes, H, W] -> [B, planes, H/stride, W/stride]

  int64_t inplanes, planes, stride;
  bool has_downsample;
  at::TensorOptions tensor_options;
  BatchNorm bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  Conv conv1{nullptr}, conv2{nullptr};
  PRelu prelu{nullptr};
  Conv down_conv{nullptr};
  BatchNorm down_bn{nullptr};
};
TORCH_MODULE(IBasicBlock);

/// The iresnet backbone. Input: aligned 112x112 RGB faces normalised to [-1, 1], i.e.
/// (pixel - 127.5) / 127.5, shape [B, 3, 112, 112]. Always evaluates BatchNorm in eval mode
/// and dropout (p = 0 in arcface_torch) as the identity.
class IResNetImpl : public torch::nn::Cloneable<IResNetImpl> {
 public:
  explicit IResNetImpl(const IResNetOptions& options = {});
  void reset() override;
  /// Raw 512-d features (the `features` BatchNorm1d output, as arcface_torch returns them).
  at::Tensor features(const at::Tensor& x);  // [B, 3, 112, 112] -> [B, num_features]
  /// L2-normalised embedding (identity similarity = dot product).
  at::Tensor forward(const at::Tensor& x);  // [B, 3, 112, 112] -> [B, num_features]

  IResNetOptions options;
  Conv conv1{nullptr};
  BatchNorm bn1{nullptr}, bn2{nullptr}, features_bn{nullptr};
  PRelu prelu{nullptr};
  std::vector<std::vector<IBasicBlock>> stages;  // layer1..layer4
  Linear fc{nullptr};
};
TORCH_MODULE(IResNet);

}  // namespace lookahead::model::face
