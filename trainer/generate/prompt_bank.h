// Prompt templates for `lookahead data generate`: the official LCM-Lookahead ones
// (scripts/prompts_bank.py) or a user file, and filling a template with an identity description or
// with the training placeholder.
#pragma once

#include <string>
#include <vector>

namespace lookahead::trainer::generate {

/// The one placeholder a template holds, replaced by the identity description (or the training
/// placeholder word).
inline constexpr const char* kConcept = "{concept}";

/// Templates, each holding kConcept exactly once. Vanilla ones are plain photos (references for
/// training are drawn only from their images); stylized ones are the art styles.
struct PromptTemplates {
  std::vector<std::string> vanilla, stylized;
};

/// The official templates: vanilla "A photo of {concept}"; stylized a colorful graffiti, a pencil
/// drawing, a watercolor painting, a drawing in a comic book and an oil painting of {concept}.
PromptTemplates official_templates();

/// Templates from a user file: one a line, `vanilla: <template>` or `style: <template>`; blank
/// lines and lines starting with '#' are skipped; CRLF is fine. Throws GenerateInputError naming
/// the file and the line for: a missing, unreadable or empty file, a line of another kind, a
/// template without kConcept or with it twice, any other '{' or '}', text that
/// check_printable_text refuses (at most 300 bytes), a template repeated within its kind (both
/// lines named); and naming the file when there is no vanilla template.
PromptTemplates read_prompt_file(const std::string& path);

/// `tmpl` with its kConcept replaced by `subject` (the caller's error when it does not hold kConcept
/// exactly once: c10::Error).
std::string fill(const std::string& tmpl, const std::string& subject);

}  // namespace lookahead::trainer::generate
