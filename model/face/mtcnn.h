// The three MTCNN networks (P-Net, R-Net, O-Net) of facenet-pytorch 2.6.0 (models/mtcnn.py),
// whose named_parameters() are the keys of its shipped pnet.pt / rnet.pt / onet.pt state dicts.
// Inputs are RGB crops normalised as facenet-pytorch does: (pixel - 127.5) * 0.0078125.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "model/face/layers.h"

namespace lookahead::model::face {

/// P-Net outputs: per-position box regression and face probability.
struct PNetOutput {
  at::Tensor regression;   ///< [B, 4, h, w] (conv4_2)
  at::Tensor probability;  ///< [B, 2, h, w] softmax over (non-face, face) (conv4_1)
};

/// Fully convolutional proposal net: conv1 3x3 (3->10), PReLU, MaxPool 2/2 (ceil), conv2 3x3
/// (10->16), PReLU, conv3 3x3 (16->32), PReLU, heads conv4_1 (->2, softmax) and conv4_2 (->4).
class PNetImpl : public torch::nn::Cloneable<PNetImpl> {
 public:
  explicit PNetImpl(at::TensorOptions tensor_options = {});
  void reset() override;
  PNetOutput forward(const at::Tensor& x);  // [B, 3, H, W] -> maps of (H - 2) / 2 - 4 per side
  at::TensorOptions tensor_options;
  Conv conv1{nullptr}, conv2{nullptr}, conv3{nullptr}, conv4_1{nullptr}, conv4_2{nullptr};
  PRelu prelu1{nullptr}, prelu2{nullptr}, prelu3{nullptr};
};
TORCH_MODULE(PNet);

/// R-Net / O-Net outputs; landmarks only from O-Net (x1..x5 then y1..y5, relative to the box).
struct RefineOutput {
  at::Tensor regression;   ///< [B, 4]
  at::Tensor probability;  ///< [B, 2] softmax
  at::Tensor landmarks;    ///< [B, 10] (O-Net) or undefined (R-Net)
};

/// Refinement net on 24x24 crops: conv1 3x3 (3->28), PReLU, MaxPool 3/2 (ceil), conv2 3x3
/// (28->48), PReLU, MaxPool 3/2 (ceil), conv3 2x2 (48->64), PReLU, flatten in (W, H, C) order
/// (facenet-pytorch permutes to NWHC), dense4 (576->128), PReLU, dense5_1 (->2), dense5_2 (->4).
class RNetImpl : public torch::nn::Cloneable<RNetImpl> {
 public:
  explicit RNetImpl(at::TensorOptions tensor_options = {});
  void reset() override;
  RefineOutput forward(const at::Tensor& x);  // [B, 3, 24, 24]
  at::TensorOptions tensor_options;
  Conv conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  PRelu prelu1{nullptr}, prelu2{nullptr}, prelu3{nullptr}, prelu4{nullptr};
  Linear dense4{nullptr}, dense5_1{nullptr}, dense5_2{nullptr};
};
TORCH_MODULE(RNet);

/// Output net on 48x48 crops: conv1 3x3 (3->32), PReLU, MaxPool 3/2, conv2 3x3 (32->64), PReLU,
/// MaxPool 3/2, conv3 3x3 (64->64), PReLU, MaxPool 2/2, conv4 2x2 (64->128), PReLU, flatten
/// (W, H, C), dense5 (1152->256), PReLU, dense6_1 (->2), dense6_2 (->4), dense6_3 (->10).
class ONetImpl : public torch::nn::Cloneable<ONetImpl> {
 public:
  explicit ONetImpl(at::TensorOptions tensor_options = {});
  void reset() override;
  RefineOutput forward(const at::Tensor& x);  // [B, 3, 48, 48]
  at::TensorOptions tensor_options;
  Conv conv1{nullptr}, conv2{nullptr}, conv3{nullptr}, conv4{nullptr};
  PRelu prelu1{nullptr}, prelu2{nullptr}, prelu3{nullptr}, prelu4{nullptr}, prelu5{nullptr};
  Linear dense5{nullptr}, dense6_1{nullptr}, dense6_2{nullptr}, dense6_3{nullptr};
};
TORCH_MODULE(ONet);

}  // namespace lookahead::model::face
