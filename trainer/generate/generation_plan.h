// What `lookahead data generate` makes for one identity: the list of images, each with its prompts
// and generator seed, in the order of the official script (scripts/faces_generation.py).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/generate/prompt_bank.h"

namespace lookahead::trainer::generate {

/// How many images per identity and how they are seeded.
struct PlanOptions {
  int64_t vanilla_per_identity = 40;  ///< V, the official vanilla_images_per_prompt
  int64_t style_rounds = 8;           ///< K: each stylized template K times (stylized_images_per_prompt)
  uint64_t seed = 0;                  ///< the plan's seed; image seeds are hashed from it
  std::string placeholder = "face";   ///< the concept word of training prompts ("A photo of face")

  /// V >= 1, K >= 0, a non-empty placeholder without '{' or '}'; c10::Error naming the option.
  void validate() const;
};

/// One image to generate.
struct PlannedImage {
  int64_t identity = 0;
  int64_t index = 0;  ///< within the identity: 0..V-1 vanilla, then the stylized ones
  bool vanilla = true;
  std::string full_prompt;      ///< the template filled with the identity description
  std::string training_prompt;  ///< the template filled with the placeholder
  /// The image's generator seed, < 2^63: a hash of (plan seed, identity, index). torch's CPU
  /// generator keeps only the low 32 bits of a seed, so seeds within an identity differ there.
  uint64_t seed = 0;
};

/// The images of `identity` (>= 0): V vanilla images cycling through `templates.vanilla` (image i
/// uses template i mod T; the official script, with its one vanilla template, makes the same list),
/// then K rounds, each of every stylized template in order. V + K * S images; depends only on the
/// arguments, so any rank plans any identity.
std::vector<PlannedImage> plan_identity(const PlanOptions& options, const PromptTemplates& templates, int64_t identity,
                                        const std::string& description);

}  // namespace lookahead::trainer::generate
