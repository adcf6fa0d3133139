// MTCNN fallback for missing landmarks.
#include "trainer/landmarks.h"

#include <ATen/ATen.h>

namespace lookahead::trainer {

int64_t fill_missing_landmarks(model::face::MtcnnImpl& mtcnn, const at::Tensor& images, at::Tensor& landmarks) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "fill_missing_landmarks: images must be [B, 3, S, S], got ",
              images.sizes());
  TORCH_CHECK(landmarks.dim() == 3 && landmarks.size(0) == images.size(0) && landmarks.size(1) == 5 &&
                  landmarks.size(2) == 2,
              "fill_missing_landmarks: landmarks must be [B, 5, 2], got ", landmarks.sizes());
  const at::Tensor missing = at::isfinite(landmarks).flatten(1).all(1).logical_not().cpu();  // [B]
  int64_t filled = 0;
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < images.size(0); ++i) {
    if (!missing[i].item<bool>()) continue;
    // Back to the uint8 RGB image MTCNN was built for: [-1, 1] -> [0, 255], HWC.
    at::Tensor img = ((images[i].detach().to(at::kCPU, at::kFloat) + 1.0) * 127.5)
                         .round()
                         .clamp(0, 255)
                         .to(at::kByte)
                         .permute({1, 2, 0})
                         .contiguous();  // [S, S, 3]
    model::face::FaceDetections d = mtcnn.detect(img);
    if (!d.boxes.defined() || d.boxes.size(0) == 0) continue;
    landmarks[i].copy_(d.landmarks[0].to(landmarks.options()));
    ++filled;
  }
  return filled;
}

}  // namespace lookahead::trainer
