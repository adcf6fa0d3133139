// MTCNN face detection (facenet-pytorch 2.6.0 `MTCNN.detect` / `detect_face`): image pyramid,
// P-Net proposals, R-Net and O-Net refinement with NMS and box regression, 5 landmarks. One
// uint8 RGB image at a time; boxes and landmarks are pixel coordinates of that image.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <string>

#include "model/face/mtcnn.h"

namespace lookahead::model::face {

/// Face-probability thresholds of P-Net, R-Net and O-Net.
using MtcnnThresholds = std::array<double, 3>;

/// facenet-pytorch MTCNN defaults.
struct MtcnnOptions {
  TORCH_ARG(double, min_face_size) = 20.0;
  TORCH_ARG(double, factor) = 0.709;
  TORCH_ARG(MtcnnThresholds, thresholds) = MtcnnThresholds{0.6, 0.7, 0.7};
  TORCH_ARG(bool, select_largest) = true;  ///< order faces by box area (else by O-Net NMS order)
  TORCH_ARG(at::TensorOptions, tensor_options) = at::TensorOptions();
};

/// Detected faces, largest first with select_largest (so row 0 is the face LCM-Lookahead uses).
struct FaceDetections {
  at::Tensor boxes;      ///< [N, 4] float32 (x1, y1, x2, y2)
  at::Tensor probs;      ///< [N] float32 O-Net face probability
  at::Tensor landmarks;  ///< [N, 5, 2] float32 (x, y): left eye, right eye, nose, mouth left, mouth right
};

/// The three networks under the names pnet / rnet / onet (load each from its own state dict
/// with load_weights, or all at once with keys prefixed "pnet.", "rnet.", "onet.").
class MtcnnImpl : public torch::nn::Cloneable<MtcnnImpl> {
 public:
  explicit MtcnnImpl(const MtcnnOptions& options = {});
  void reset() override;
  /// Loads facenet-pytorch's pnet / rnet / onet state dicts (safetensors files), strictly.
  void load_weights(const std::string& pnet_file, const std::string& rnet_file, const std::string& onet_file);
  /// Detects faces in `image` [H, W, 3] uint8 RGB (any device the networks live on).
  FaceDetections detect(const at::Tensor& image);

  MtcnnOptions options;
  PNet pnet{nullptr};
  RNet rnet{nullptr};
  ONet onet{nullptr};
};
TORCH_MODULE(Mtcnn);

/// Greedy non-maximum suppression, highest score first, on boxes [N, 4] (x1, y1, x2, y2) with
/// scores [N]; a box is dropped when its overlap with a kept one exceeds `threshold`. Overlap is
/// IoU with areas (x2 - x1)(y2 - y1) (torchvision.ops.nms) or, with `min_union_plus_one`,
/// intersection over the smaller area with +1 pixel extents (facenet-pytorch's nms_numpy 'Min').
/// Returns kept indices (int64) in score order.
at::Tensor face_nms(const at::Tensor& boxes, const at::Tensor& scores, double threshold, bool min_union_plus_one = false);

}  // namespace lookahead::model::face
