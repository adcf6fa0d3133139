#include "trainer/generate/prompt_bank.h"

#include <c10/util/Exception.h>

#include <cstring>
#include <map>

#include "trainer/generate/generate_error.h"
#include "trainer/generate/text_lines.h"

namespace lookahead::trainer::generate {
namespace {

constexpr size_t kMaxTemplateBytes = 300;

size_t count_concepts(const std::string& tmpl) {
  size_t n = 0;
  for (size_t at = tmpl.find(kConcept); at != std::string::npos; at = tmpl.find(kConcept, at + 1)) ++n;
  return n;
}

}  // namespace

PromptTemplates official_templates() {
  PromptTemplates t;
  t.vanilla = {"A photo of {concept}"};
  t.stylized = {"A colorful graffiti of {concept}", "A pencil drawing of {concept}",
                "A watercolor painting of {concept}", "A drawing of {concept} in a comic book",
                "An oil painting of {concept}"};
  return t;
}

PromptTemplates read_prompt_file(const std::string& path) {
  PromptTemplates templates;
  // Repeats are refused within a kind: the same text in both kinds is a legitimate (if odd) choice.
  std::map<std::pair<bool, std::string>, int64_t> first_line;
  for (const TextLine& line : read_text_lines(path, "prompts file")) {
    if (is_blank(line.text)) continue;
    const std::string text = trim_spaces(line.text);
    if (text[0] == '#') continue;
    const size_t colon = text.find(':');
    const std::string kind = colon == std::string::npos ? "" : text.substr(0, colon);
    if (kind != "vanilla" && kind != "style")
      throw GenerateInputError(path, line.number,
                               "expected 'vanilla: <template>' or 'style: <template>' (or a '#' comment)");
    const bool vanilla = kind == "vanilla";
    std::string tmpl = trim_spaces(text.substr(colon + 1));
    if (tmpl.empty()) throw GenerateInputError(path, line.number, "the " + kind + " template is empty");
    check_printable_text(path, line.number, tmpl, kMaxTemplateBytes);
    const size_t concepts = count_concepts(tmpl);
    if (concepts != 1)
      throw GenerateInputError(path, line.number,
                               std::string("the template must hold {concept} exactly once, it holds it ") +
                                   std::to_string(concepts) + " times");
    std::string rest = tmpl;
    rest.erase(rest.find(kConcept), std::strlen(kConcept));
    if (rest.find_first_of("{}") != std::string::npos)
      throw GenerateInputError(path, line.number, "'{' or '}' outside {concept}: {concept} is the only placeholder");
    const auto [it, inserted] = first_line.emplace(std::make_pair(vanilla, tmpl), line.number);
    if (!inserted)
      throw GenerateInputError(path, line.number,
                               "repeats the " + kind + " template of line " + std::to_string(it->second));
    (vanilla ? templates.vanilla : templates.stylized).push_back(std::move(tmpl));
  }
  if (templates.vanilla.empty())
    throw GenerateInputError(path, -1,
                             "no 'vanilla:' template; at least one is needed (training references are drawn "
                             "from vanilla images)");
  return templates;
}

std::string fill(const std::string& tmpl, const std::string& subject) {
  TORCH_CHECK(count_concepts(tmpl) == 1, "fill: the template must hold {concept} exactly once: \"", tmpl, "\"");
  std::string s = tmpl;
  s.replace(s.find(kConcept), std::strlen(kConcept), subject);
  return s;
}

}  // namespace lookahead::trainer::generate
