// Landmarks for samples whose training-set record has none: MTCNN on the reference photo, as the
// official pipeline detects faces (docs/training.md, "Data requirements").
#pragma once

#include <ATen/core/Tensor.h>

#include "model/face/mtcnn_detect.h"

namespace lookahead::trainer {

/// For every sample whose landmarks contain a NaN, runs `mtcnn` on its image and takes the first
/// (largest) face's 5 landmarks; samples where no face is found keep NaN. `images` [B, 3, S, S] in
/// [-1, 1]; `landmarks` [B, 5, 2] in the same pixels, updated in place. Returns how many were filled.
int64_t fill_missing_landmarks(model::face::MtcnnImpl& mtcnn, const at::Tensor& images, at::Tensor& landmarks);

}  // namespace lookahead::trainer
