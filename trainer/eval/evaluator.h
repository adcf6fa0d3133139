// Evaluation of the trained encoder (docs/evaluation.md): for every evaluation identity (a reference
// photo and its landmarks) and every prompt, generate N images with the base UNet and the encoder,
// measure ID similarity (MTCNN + ArcFace, cosine to the reference) and CLIP score, and write
// metrics.json, the images and an HTML report. The (identity, prompt) items are spread over the
// ranks, which run in lockstep through the sharded engine; results are gathered on rank 0. Seeds
// depend only on (eval.seed, identity, prompt, sample), so the results do not depend on the
// number of ranks.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "dist/world.h"
#include "model/lookahead/lookahead_model.h"
#include "trainer/train_config.h"

namespace lookahead::dist {
class ShardedEngine;
}

namespace lookahead::trainer {

/// What one evaluation run is called and where its weights came from (written into the results).
struct EvalRunInfo {
  std::string label;       ///< name in tables and plots, e.g. "step-40"
  std::string checkpoint;  ///< checkpoint file the trainables came from ("" during training)
  int64_t step = 0;        ///< training step of those weights
};

/// Guidance settings of one evaluation (from EvalConfig, or one point of a sweep).
struct EvalGuidance {
  model::GuidanceMode mode = model::GuidanceMode::kLookahead;
  double cfg_scale = 5.0;
  double scale_nokv = 3.0, scale_full = 2.0, scale_kv = 2.0;
  static EvalGuidance from_config(const EvalConfig& config);
  /// "3/2/2" (lookahead) or "cfg 5" — used in labels.
  std::string describe() const;
};

/// The seed of sample `sample` of (identity, prompt): a SplitMix64 mix of all four, so that no
/// sample's noise depends on how the work is split.
uint64_t eval_sample_seed(uint64_t base_seed, int64_t identity, int64_t prompt_index, int64_t sample);

/// Reads a prompts file: one prompt per line; blank lines and lines starting with '#' are skipped.
/// Throws naming the file when it cannot be read or holds no prompt.
std::vector<std::string> read_prompts(const std::string& path);

class Evaluator {
 public:
  /// Builds the evaluation networks next to `model` (the prompt / image / VAE encoders, MTCNN,
  /// the CLIP model of the score) and reads the evaluation set and the prompts. `engine`, when
  /// given, is the sharded engine `model` runs through (steps are ended after each item).
  /// Collective: every rank must construct it.
  Evaluator(dist::World& world, const TrainConfig& config, model::LookaheadModel& model,
            dist::ShardedEngine* engine = nullptr);
  ~Evaluator();
  Evaluator(const Evaluator&) = delete;
  Evaluator& operator=(const Evaluator&) = delete;

  /// Evaluates the model's current weights with `guidance` (collective). Rank 0 writes
  /// <out_dir>/metrics.json, the images (eval.save_images) and <out_dir>/report.html, and
  /// returns the metrics document; other ranks return an empty object.
  nlohmann::json run(const std::string& out_dir, const EvalRunInfo& info, const EvalGuidance& guidance);

  /// Number of (identity, prompt) items and identities being evaluated.
  int64_t num_items() const;
  int64_t num_identities() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The overall figures of a metrics document as flat metric-log values ("eval_id_similarity", ...).
std::vector<std::pair<std::string, double>> eval_log_values(const nlohmann::json& metrics);

}  // namespace lookahead::trainer
