// The face checks of `lookahead data generate`: MTCNN finds each generated image's largest face
// (its box, probability and 5 landmarks, stored so that training never detects again), and
// ArcFace embeds the aligned face for the identity filter.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

#include "model/face/mtcnn_detect.h"
#include "trainer/eval/id_similarity.h"

namespace lookahead::trainer::generate {

/// Where the face networks come from.
struct FaceCheckOptions {
  std::string mtcnn;                       ///< folder of facenet-pytorch's pnet.pt, rnet.pt, onet.pt
  std::string arcface;                     ///< ArcFace weights (.pth / .pt / .safetensors); empty: detection only
  std::string arcface_network = "irse50";  ///< irse50 (the ID loss's), iresnet50 or iresnet100
  double min_face_size = 64;               ///< pixels: a face whose box is smaller on either side counts as none
};

/// One image's checks.
struct FaceResult {
  bool found = false;    ///< a face of at least min_face_size
  float prob = 0;        ///< O-Net probability of that face (0 without one)
  at::Tensor box;        ///< [4] float32 (x1, y1, x2, y2), NaN without a face
  at::Tensor landmarks;  ///< [5, 2] float32 (x, y), NaN without a face
};

class FaceCheck {
 public:
  /// Loads the networks (float32 on `device`). Throws c10::Error naming a missing file.
  FaceCheck(const FaceCheckOptions& options, at::Device device);

  /// Detection for each image of `images` uint8 [B, H, W, 3] RGB.
  std::vector<FaceResult> detect(const at::Tensor& images);
  /// [B, 512] unit-norm ArcFace embeddings of the detected faces (zeros where none); requires
  /// has_embedder().
  at::Tensor embed(const at::Tensor& images, const std::vector<FaceResult>& faces);
  bool has_embedder() const { return id_ != nullptr; }

 private:
  FaceCheckOptions options_;
  model::face::Mtcnn mtcnn_{nullptr};
  std::shared_ptr<torch::nn::Module> arcface_;
  std::unique_ptr<IdSimilarity> id_;
};

}  // namespace lookahead::trainer::generate
