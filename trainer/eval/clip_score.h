// CLIP score of generated images against their prompts (docs/evaluation.md, "Metrics"; torchmetrics'
// definition): 100 · max(cos(image_embeds, text_embeds), 0) per (image_i, prompt_i) pair.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "model/text/clip_tokenizer.h"
#include "model/vision/clip_vision.h"

namespace lookahead::trainer {

/// One pair's score.
struct ClipScore {
  double cosine = 0;  ///< cos(image_embeds, text_embeds)
  double score = 0;   ///< 100 · max(cosine, 0)
};

class ClipScorer {
 public:
  /// `model` (e.g. openai/clip-vit-large-patch14 via clip_model_from_pretrained) is put in eval
  /// mode; the tokenizer truncates and pads to the text tower's max_position_embeddings.
  /// `model_name` is what reports call it.
  ClipScorer(model::vision::ClipModel model, model::text::ClipTokenizer tokenizer, std::string model_name);

  /// Scores image i against prompt i: `images` [B, 3, H, W] in [0, 1] (any device; CLIP
  /// preprocessing at the model's image_size), B == prompts.size().
  std::vector<ClipScore> score(const at::Tensor& images, const std::vector<std::string>& prompts);

  const std::string& model_name() const { return model_name_; }

 private:
  model::vision::ClipModel model_;
  model::text::ClipTokenizer tokenizer_;
  std::string model_name_;
};

}  // namespace lookahead::trainer
