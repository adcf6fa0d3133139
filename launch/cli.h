// Command-line parsing for the `lookahead` executable. Configuration is read here once (argv and
// the environment) into typed structs that the rest of the program receives by const reference.
#pragma once

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/variables_map.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "dist/world.h"

namespace lookahead::launch {

/// Exit codes of the `lookahead` executable.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,        ///< any other error (bad file, bad value, ...)
  kExitUsage = 2,        ///< bad command line
  kExitDistributed = 3,  ///< collective timeout, rank mismatch, backend failure
};

/// Options every subcommand shares: how the World starts and reacts to failures.
boost::program_options::options_description world_options();
/// WorldConfig from parsed world_options(), validated (throws std::invalid_argument naming the flag).
dist::WorldConfig world_config(const boost::program_options::variables_map& vm);

/// Parses `args` against `desc` (plus --help); throws boost::program_options::error on bad input.
boost::program_options::variables_map parse(const std::vector<std::string>& args,
                                            const boost::program_options::options_description& desc);

/// "[2, 3]": a tensor shape as the CLI prints it.
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace lookahead::launch
