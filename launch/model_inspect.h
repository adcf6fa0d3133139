// `lookahead model inspect FILE`: what a weight file holds and which supported network it matches.
#pragma once

#include <string>
#include <vector>

namespace lookahead::launch {

/// Runs `lookahead model inspect` with the arguments after `inspect`; returns the exit code.
/// Throws boost::program_options::error for a bad command line, c10::Error for unreadable files.
int run_model_inspect(const std::vector<std::string>& args);

}  // namespace lookahead::launch
