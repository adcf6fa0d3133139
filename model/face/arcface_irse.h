// IR-SE50 face recognition backbone from TreB1eN/InsightFace_Pytorch (model.py `Backbone(50,
// drop_ratio, 'ir_se')`, the `model_ir_se50.pth` that pSp/e4e and LCM-Lookahead's ID loss use).
// named_parameters()+named_buffers() are that checkpoint's keys (input_layer.*, body.N.*,
// output_layer.*); structure and names follow TreB1eN's public model.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "model/face/layers.h"

namespace lookahead::model::face {

/// IR / IR-SE backbone hyper-parameters: num_layers 50 (units 3,4,14,3), 100 (3,13,30,3) or
/// 152 (3,8,36,3); `se` selects bottleneck_IR_SE (true) or bottleneck_IR units.
struct IRSEOptions {
  TORCH_ARG(int64_t, num_layers) = 50;
  TORCH_ARG(bool, se) = true;
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
};

/// bottleneck_IR(_SE)(in, depth, stride). shortcut_layer: MaxPool2d(1, stride) (a strided
/// subsample, no keys) when in == depth, else {0: Conv1x1(stride), 1: BN}. res_layer: {0: BN(in),
/// 1: Conv3x3(in->depth), 2: PReLU, 3: Conv3x3(stride), 4: BN, 5: SEModule{fc1, fc2}}.
class BottleneckIRImpl : public torch::nn::Cloneable<BottleneckIRImpl> {
 public:
  BottleneckIRImpl(int64_t in_channel, int64_t depth, int64_t stride, bool se, at::TensorOptions tensor_options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);  // [B, in, H, W] -> [B, depth, H/stride, W/stride]

  int64_t in_channel, depth, stride;
  bool se;
  at::TensorOptions tensor_options;
  Conv short_conv{nullptr};
  BatchNorm short_bn{nullptr};
  BatchNorm res_bn0{nullptr}, res_bn4{nullptr};
  Conv res_conv1{nullptr}, res_conv3{nullptr};
  PRelu res_prelu{nullptr};
  Conv se_fc1{nullptr}, se_fc2{nullptr};  // SE reduction 16, 1x1 convs without bias
};
TORCH_MODULE(BottleneckIR);

/// TreB1eN Backbone. Input: aligned 112x112 RGB faces in [-1, 1] ((pixel - 127.5) / 127.5;
/// LCM-Lookahead feeds its [-1, 1] images directly), shape [B, 3, 112, 112]. BatchNorm runs in
/// eval mode and Dropout (drop_ratio 0.6 in training) is the identity.
class IRSEImpl : public torch::nn::Cloneable<IRSEImpl> {
 public:
  explicit IRSEImpl(const IRSEOptions& options = {});
  void reset() override;
  /// Output-layer features before l2_norm.
  at::Tensor features(const at::Tensor& x);  // [B, 3, 112, 112] -> [B, 512]
  /// L2-normalised embedding, as TreB1eN's Backbone.forward returns.
  at::Tensor forward(const at::Tensor& x);  // [B, 3, 112, 112] -> [B, 512]

  IRSEOptions options;
  Conv in_conv{nullptr};
  BatchNorm in_bn{nullptr};
  PRelu in_prelu{nullptr};
  std::vector<BottleneckIR> body;
  BatchNorm out_bn{nullptr}, out_bn1d{nullptr};
  Linear out_linear{nullptr};
};
TORCH_MODULE(IRSE);

}  // namespace lookahead::model::face
