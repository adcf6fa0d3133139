// `lookahead model tokenize`: how SDXL's two CLIP tokenizers see a prompt (ids, tokens, where the
// 77-token window cuts it), for debugging prompts and captions.
#pragma once

#include <string>
#include <vector>

namespace lookahead::launch {

/// Runs `lookahead model tokenize` with the arguments after `tokenize`; returns the exit code.
/// Throws boost::program_options::error for a bad command line, c10::Error for unreadable files.
int run_model_tokenize(const std::vector<std::string>& args);

}  // namespace lookahead::launch
