// Which ablation variant a run trains (docs/ablations.md): the keys that change what the step
// computes and which tensors exist. A checkpoint of one variant does not resume into another.
#pragma once

#include <string>

#include "trainer/train_config.h"

namespace lookahead::trainer {

/// The variant keys of a configuration.
struct RunVariant {
  model::KvEncoderMode kv_encoder = model::KvEncoderMode::kOn;
  model::PreviewKind preview = model::PreviewKind::kLcm;
  double lambda_id = 1e-3;
  double lambda_dreamsim = 0;

  static RunVariant of(const TrainConfig& config);
  /// The variant of a resolved INI text (a checkpoint's meta/config). Keys it lacks keep the
  /// defaults above: checkpoints written before the switches existed are the full model.
  static RunVariant from_ini(const std::string& text);
  /// The variant of an INI file (e.g. a preset of launch/configs/ablation/); throws
  /// std::invalid_argument naming the file when it cannot be read or holds a bad value.
  static RunVariant from_file(const std::string& path);
  /// "preview=lcm kv_encoder=on lambda_id=0.001 lambda_dreamsim=0"
  std::string describe() const;
  /// Sets these keys in `config` (the benchmarks' way of running a preset).
  void apply(TrainConfig& config) const;
};

/// Why a checkpoint of variant `saved` cannot resume into `now` ("" when it can), naming the key:
/// model.kv_encoder and loss.preview must match, and loss.lambda_id / loss.lambda_dreamsim may
/// change their value but not between zero and nonzero (that adds or removes a branch's
/// networks). A preview change matters only where the lookahead branch runs.
std::string variant_mismatch(const RunVariant& saved, const RunVariant& now);

}  // namespace lookahead::trainer
