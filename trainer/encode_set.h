// `lookahead data encode`: adds to a training set the tensors the trainer reads — VAE latents of
// each record's image, SDXL prompt embeddings of its prompt, CLIP image features — plus the file-
// level CLIP features of the all-zero image ("clip_uncond"), computed with a model::Conditioner.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dist/world.h"
#include "model/lookahead/conditioner.h"

namespace lookahead::trainer {

struct EncodeOptions {
  std::string in;               ///< training set to read (docs/data.md)
  std::string out;              ///< training set to write (may equal `in`: written aside, renamed at the end)
  int64_t resolution = 1024;    ///< images are resized / center-cropped to this before the VAE (as the loader does)
  int64_t batch = 4;            ///< records per encoder call on each rank
  bool half_latents = false;    ///< store latents as float16
};

struct EncodeReport {
  int64_t records = 0;
  std::vector<int64_t> latent_shape;   ///< per record: [4, h, w]
  std::vector<int64_t> prompt_shape;   ///< [M, D]
  int64_t pooled_dim = 0;              ///< P
  std::vector<int64_t> clip_shape;     ///< [T, D]
  double seconds = 0;
};

/// CLIP preprocessing of one decoded record image (uint8 [H, W, 3]) as `data encode` does it: the
/// whole image, shortest side to `size`, center crop, CLIP normalization -> [1, 3, size, size].
at::Tensor clip_pixels(const at::Tensor& image, int64_t size);

/// Encodes every record of o.in into o.out. Collective: every rank calls it with the same options
/// and an identical conditioner. Records go to the ranks in fixed blocks of o.batch (block j to
/// rank j mod world size, the last block zero-padded to o.batch), so each record is computed by
/// the same calls whatever the rank count; results are gathered to rank 0, which writes the file
/// (image bytes, identity, prompt, photo flag and landmarks copied unchanged). Returns the same
/// report on every rank.
EncodeReport encode_training_set(dist::World& world, model::Conditioner& cond, const EncodeOptions& o);

}  // namespace lookahead::trainer
