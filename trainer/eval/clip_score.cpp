// The cosines are taken in float64 from the towers' projected embeddings, so a half-precision
// CLIP only costs the towers' own rounding.
#include "trainer/eval/clip_score.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <utility>

namespace lookahead::trainer {

ClipScorer::ClipScorer(model::vision::ClipModel model, model::text::ClipTokenizer tokenizer, std::string model_name)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), model_name_(std::move(model_name)) {
  TORCH_CHECK(!model_.is_empty(), "ClipScorer: the CLIP model is null");
  model_->eval();
  auto& opts = tokenizer_.options();
  opts.max_length = std::min(opts.max_length, model_->text_config.max_position_embeddings);
  TORCH_CHECK(opts.max_length >= 2, "ClipScorer: the text tower's max length ", opts.max_length, " leaves no room for BOS/EOS");
  opts.pad_to_max_length = true;
}

std::vector<ClipScore> ClipScorer::score(const at::Tensor& images, const std::vector<std::string>& prompts) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "ClipScorer: images must be [B, 3, H, W] in [0, 1], got ",
              images.sizes());
  const int64_t b = images.size(0);
  TORCH_CHECK(static_cast<int64_t>(prompts.size()) == b, "ClipScorer: ", b, " images but ", prompts.size(), " prompts");
  if (b == 0) return {};
  at::NoGradGuard no_grad;
  const at::Tensor& like = model_->logit_scale;  // the model's device and dtype
  const at::Tensor pixels = model::vision::clip_preprocess(images.detach().to(like.device(), at::kFloat),
                                                           model_->vision_config.image_size)
                                .to(like.scalar_type());  // [B, 3, S, S]
  std::vector<int64_t> flat;
  for (const auto& row : tokenizer_.encode_batch(prompts)) flat.insert(flat.end(), row.begin(), row.end());
  const at::Tensor ids = at::tensor(flat, at::kLong).view({b, -1}).to(like.device());  // [B, L]
  const model::vision::ClipModelOutput out = model_->forward(ids, pixels);
  const at::Tensor img = out.image_embeds.to(at::kCPU, at::kDouble), txt = out.text_embeds.to(at::kCPU, at::kDouble);
  const at::Tensor cos = (img * txt).sum(-1) / (img.norm(2, -1) * txt.norm(2, -1));  // [B]
  std::vector<ClipScore> result(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) {
    const double c = cos[i].item<double>();
    result[static_cast<size_t>(i)] = {c, 100.0 * std::max(c, 0.0)};
  }
  return result;
}

}  // namespace lookahead::trainer
