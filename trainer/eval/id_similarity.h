// Identity similarity for evaluation: MTCNN finds each image's largest face, its 5 landmarks align
// it to the 112x112 ArcFace template, and a face-recognition network embeds it; the score of a
// generated image is the cosine of its embedding to the reference identity's.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <limits>
#include <vector>

#include "model/face/mtcnn_detect.h"

namespace lookahead::trainer {

/// Face embeddings: aligned faces [B, 3, 112, 112] in [-1, 1] -> [B, 512] unit-norm embeddings.
/// It may be a collective (a sharded ArcFace): IdSimilarity calls it exactly once per
/// embed() / score(), with every row of the batch, whatever was detected.
using FaceEmbedder = std::function<at::Tensor(const at::Tensor& faces)>;

/// One generated image's identity score.
struct IdScore {
  bool face_found = false;
  double similarity = std::numeric_limits<double>::quiet_NaN();  ///< cosine to the reference; NaN without a face
  at::Tensor landmarks;  ///< [5, 2] float32 (x, y) pixels of the detected face; undefined without one
};

class IdSimilarity {
 public:
  /// `mtcnn` keeps the largest face first (MtcnnOptions::select_largest, its default).
  IdSimilarity(model::face::Mtcnn mtcnn, FaceEmbedder embedder);

  /// Embeddings [B, 512] (float32, the embedder's device) of `images` uint8 [B, H, W, 3] RGB.
  /// `landmarks` [B, 5, 2] (x, y) pixels per image; a row holding a NaN, or an undefined tensor for
  /// all rows, means: detect with MTCNN. found[i] is false when row i has neither (its embedding is
  /// zeros, its face a zero image). Calls the embedder exactly once with all B faces.
  at::Tensor embed(const at::Tensor& images, const at::Tensor& landmarks, std::vector<bool>* found);

  /// Cosine (in float64, both sides re-normalised) of each generated image's MTCNN-detected face
  /// to `reference` [512]; `generated` uint8 [N, H, W, 3]. One embedder call.
  std::vector<IdScore> score(const at::Tensor& reference, const at::Tensor& generated);

 private:
  /// embed() that also returns the landmarks used per row ([B, 5, 2] float32 CPU, NaN where none).
  at::Tensor embed_with_landmarks(const at::Tensor& images, const at::Tensor& landmarks, std::vector<bool>& found,
                                  at::Tensor& used_landmarks);

  model::face::Mtcnn mtcnn_;
  FaceEmbedder embedder_;
};

}  // namespace lookahead::trainer
