// `lookahead train` options: every key of every INI section, its default and its help, bound to
// the typed TrainConfig. Parsed once here; the trainer only sees the struct.
#pragma once

#include <c10/core/Device.h>
#include <boost/program_options/options_description.hpp>

#include <string>
#include <vector>

#include "trainer/train_config.h"

namespace lookahead::launch {

/// The options of `lookahead train`, grouped by INI section ("model.unet_weights", ...), bound to `config`.
boost::program_options::options_description train_options(trainer::TrainConfig& config);

/// Parses `--config FILE.ini` plus `--section.key=value` overrides (flags win over the file) into
/// a validated TrainConfig; throws std::invalid_argument naming the key for bad values and
/// boost::program_options::error for unknown keys. `dry_run` / `help` report those flags.
/// What a configuration is parsed for: which keys must be set.
enum class ConfigUse {
  kTrain,     ///< data.train_set and (sdxl) every weight file
  kEvaluate,  ///< (sdxl) every weight file; no training set
  kEncode,    ///< only the input encoders (model.sdxl_folder / image_encoder, checked when built)
};

trainer::TrainConfig parse_train_config(const std::vector<std::string>& args, bool& dry_run, bool& help,
                                        ConfigUse use = ConfigUse::kTrain);

/// Inputs the configuration names that are not there, one line each ("model.lcm_lora = PATH: no
/// such file"): the weight files named (any preset; not for kEncode), model.unet_config, the MTCNN folder and its
/// three files, the encoder folders, the training set (kTrain) and, with eval.every > 0, the
/// evaluation set and prompts. Empty when everything is in place.
std::vector<std::string> missing_inputs(const trainer::TrainConfig& config, ConfigUse use = ConfigUse::kTrain);

/// Refuses a configuration, all at once and before anything is built, whose inputs are missing
/// (missing_inputs) or whose weight files do not fit the model it builds on `device`
/// (trainer::check_weights, headers only): throws std::invalid_argument (exit 2) with one line per
/// problem, each naming the key and the file. Returns when everything is in place.
void require_inputs(const trainer::TrainConfig& config, ConfigUse use, const c10::Device& device);

/// The help text of every option (`lookahead train --help`).
std::string train_help();

/// The configuration reference's tables, one per INI section, in Markdown (`lookahead train
/// --help-markdown`; docs/configuration.md holds this text and tests/launch checks that it does).
std::string train_options_markdown();

}  // namespace lookahead::launch
