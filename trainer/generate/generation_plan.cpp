#include "trainer/generate/generation_plan.h"

#include <c10/util/Exception.h>

#include <unordered_set>

#include "common/seed.h"

namespace lookahead::trainer::generate {

void PlanOptions::validate() const {
  TORCH_CHECK(vanilla_per_identity >= 1, "generation plan: vanilla_per_identity must be >= 1, got ",
              vanilla_per_identity);
  TORCH_CHECK(style_rounds >= 0, "generation plan: style_rounds must be >= 0, got ", style_rounds);
  TORCH_CHECK(!placeholder.empty() && placeholder.find_first_of("{}") == std::string::npos,
              "generation plan: placeholder must be a non-empty word without braces, got \"", placeholder, "\"");
}

std::vector<PlannedImage> plan_identity(const PlanOptions& options, const PromptTemplates& templates, int64_t identity,
                                        const std::string& description) {
  options.validate();
  TORCH_CHECK(identity >= 0, "plan_identity: identity must be >= 0, got ", identity);
  TORCH_CHECK(!templates.vanilla.empty(), "plan_identity: at least one vanilla template is needed");
  const int64_t styles = static_cast<int64_t>(templates.stylized.size());
  std::vector<PlannedImage> plan;
  plan.reserve(static_cast<size_t>(options.vanilla_per_identity + options.style_rounds * styles));
  const auto add = [&](const std::string& tmpl, bool vanilla) {
    PlannedImage image;
    image.identity = identity;
    image.index = static_cast<int64_t>(plan.size());
    image.vanilla = vanilla;
    image.full_prompt = fill(tmpl, description);
    image.training_prompt = fill(tmpl, options.placeholder);
    plan.push_back(std::move(image));
  };
  for (int64_t i = 0; i < options.vanilla_per_identity; ++i)
    add(templates.vanilla[static_cast<size_t>(i) % templates.vanilla.size()], true);
  for (int64_t round = 0; round < options.style_rounds; ++round)
    for (const std::string& tmpl : templates.stylized) add(tmpl, false);

  // Two seeds equal in their low 32 bits would give the same noise (torch's mt19937 seeds from
  // them), so a collision there is re-hashed until the image has noise of its own.
  std::unordered_set<uint32_t> used;
  for (PlannedImage& image : plan) {
    uint64_t h = common::derive_seed(options.seed, static_cast<uint64_t>(identity), static_cast<uint64_t>(image.index));
    while (!used.insert(static_cast<uint32_t>(h >> 1)).second) h = common::splitmix64(h);
    image.seed = h >> 1;
  }
  return plan;
}

}  // namespace lookahead::trainer::generate
