// Random inputs of the shapes a LookaheadModel takes, for benchmarks, equivalence tests and smoke
// runs without a training set. Every sample is drawn from its own generator (seeded by step and
// global sample index), so a rank's slice of a global batch holds the same values on any rank
// count.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "model/lookahead/lookahead_model.h"

namespace lookahead::model {

/// Token counts and sizes of a synthetic batch (defaults: the tiny preset's test shapes).
struct SyntheticShape {
  int64_t latent = 8;         ///< latent side h = w (previews are 8 x this)
  int64_t clip_tokens = 5;    ///< T of the CLIP image features (SDXL: 257)
  int64_t prompt_tokens = 3;  ///< M of the prompt embeddings (SDXL: 77)
  int64_t ref_pixels = 64;    ///< side of the reference photo (the training resolution)
};

/// A rank's share of a synthetic global batch: the model's inputs plus the reference photo its
/// identity would be computed from.
struct SyntheticBatch {
  Batch batch;                     ///< ref_landmarks on the preview grid, ref_id random of unit norm
  at::Tensor ref_pixels;           ///< [B, 3, S, S] in [-1, 1]
  at::Tensor ref_pixel_landmarks;  ///< [B, 5, 2] float64, the template's jittered by N(0, 1) pixels
};

/// Samples [first, first + count) of global batch `step`, shaped for `config`. Float32 on the CPU.
SyntheticBatch synthetic_batch(const LookaheadModelConfig& config, const SyntheticShape& shape, int64_t step,
                               int64_t first, int64_t count);

}  // namespace lookahead::model
