// Synthetic batches: one generator per (step, sample), columns drawn in a fixed order.
#include "model/lookahead/synthetic_batch.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <vector>

#include "model/face/align.h"

namespace lookahead::model {

SyntheticBatch synthetic_batch(const LookaheadModelConfig& config, const SyntheticShape& shape, int64_t step,
                               int64_t first, int64_t count) {
  TORCH_CHECK(count > 0 && first >= 0 && step >= 0, "synthetic_batch: need count > 0, first >= 0, step >= 0");
  const int64_t h = shape.latent, cross = config.unet.cross_attention_dim.at(0);
  const int64_t clip_dim = config.resampler.embedding_dim();
  const int64_t pooled = config.unet.projection_class_embeddings_input_dim - 6 * config.unet.addition_time_embed_dim;
  const double preview = 8.0 * static_cast<double>(h);  // TAESD upsamples 8x
  const double ref_side = static_cast<double>(shape.ref_pixels);
  enum Column { kZTgt, kZRef, kClipRef, kTgtPrompt, kTgtPooled, kRefPrompt, kRefPooled, kTimeIds, kLandmarks, kRefId,
                kRefPixels, kRefPixelLandmarks, kColumns };
  std::vector<at::Tensor> cols[kColumns];
  for (int64_t i = first; i < first + count; ++i) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(7919 * static_cast<uint64_t>(step) + static_cast<uint64_t>(i));
    cols[kZTgt].push_back(at::randn({1, 4, h, h}, g));
    cols[kZRef].push_back(at::randn({1, 4, h, h}, g));
    cols[kClipRef].push_back(at::randn({1, shape.clip_tokens, clip_dim}, g));
    cols[kTgtPrompt].push_back(at::randn({1, shape.prompt_tokens, cross}, g));
    cols[kTgtPooled].push_back(at::randn({1, pooled}, g));
    cols[kRefPrompt].push_back(at::randn({1, shape.prompt_tokens, cross}, g));
    cols[kRefPooled].push_back(at::randn({1, pooled}, g));
    cols[kTimeIds].push_back(at::randn({1, 6}, g));
    cols[kLandmarks].push_back(face::arcface_template(preview).unsqueeze(0) + at::randn({1, 5, 2}, g).to(at::kDouble));
    at::Tensor r = at::randn({1, 512}, g);
    cols[kRefId].push_back(r / r.norm(2, {1}, true));
    // Drawn last, so that the columns above do not depend on the photo's size.
    cols[kRefPixels].push_back(at::rand({1, 3, shape.ref_pixels, shape.ref_pixels}, g) * 2.0 - 1.0);
    cols[kRefPixelLandmarks].push_back(face::arcface_template(ref_side).unsqueeze(0) +
                                       at::randn({1, 5, 2}, g).to(at::kDouble));
  }
  auto cat = [&](Column c) { return at::cat(cols[c], 0); };
  SyntheticBatch s;
  Batch& b = s.batch;
  b.z_tgt = cat(kZTgt);
  b.z_ref = cat(kZRef);
  b.clip_ref = cat(kClipRef);
  // The all-zero image's features are one tensor for the whole run.
  b.clip_uncond = at::randn({1, shape.clip_tokens, clip_dim}, at::make_generator<at::CPUGeneratorImpl>(5));
  b.tgt_prompt = cat(kTgtPrompt);
  b.tgt_pooled = cat(kTgtPooled);
  b.ref_prompt = cat(kRefPrompt);
  b.ref_pooled = cat(kRefPooled);
  b.time_ids = cat(kTimeIds);
  b.ref_landmarks = cat(kLandmarks);
  b.ref_id = cat(kRefId);
  s.ref_pixels = cat(kRefPixels);
  s.ref_pixel_landmarks = cat(kRefPixelLandmarks);
  return s;
}

}  // namespace lookahead::model
