// `lookahead model init --preset sdxl|sdxl-turbo|tiny --out DIR`: random weights in every public
// layout the preset's configuration names, and a training configuration pointing at them.
#pragma once

#include <string>
#include <vector>

namespace lookahead::launch {

/// Runs `lookahead model init` with the arguments after `init`; returns the exit code. Throws
/// std::invalid_argument (exit 2) naming the flag for a bad preset or dtype, an --out that cannot
/// be created or written, or a non-empty --out without --force.
int run_model_init(const std::vector<std::string>& args);

}  // namespace lookahead::launch
