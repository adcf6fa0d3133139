// The LCM-Lookahead trainer: one LookaheadModel whose units run through the sharded engine, the
// sharded AdamW, the α schedule, the data source, checkpoints and metrics. One step is DESIGN.md
// §1: branch 1 (diffusion) forward and backward, then branch 2 (lookahead) while branch 1's
// gradient reduce-scatters are in flight, one optimizer step (loss.mode = sum) or two (alternate).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "dist/sharded_adamw.h"
#include "dist/sharded_engine.h"
#include "dist/world.h"
#include "model/lookahead/lookahead_model.h"
#include "model/face/mtcnn_detect.h"
#include "trainer/batch_source.h"
#include "trainer/evaluator.h"
#include "trainer/metrics_log.h"
#include "trainer/train_config.h"

namespace lookahead::trainer {

/// The model configuration a TrainConfig asks for (presets, ranks, loss hyper-parameters).
model::LookaheadModelConfig model_config(const TrainConfig& config, const c10::Device& device);

/// Elements per role of the model `config` describes (built on the meta device), and the bytes
/// each rank would hold for `world_size` ranks (`ranks_per_node` for placement node) computing on
/// `device` (the World's: model.dtype = auto means bf16 on a GPU, fp32 on the CPU).
std::string describe_model(const TrainConfig& config, int world_size, int ranks_per_node, const c10::Device& device);

class Trainer {
 public:
  /// Builds the model (identically on every rank), the engine and the optimizer; resumes when
  /// train.resume says so. `stop` is raised by a signal handler (SIGTERM / SIGUSR1). A null
  /// `data` builds a trainer that can only load checkpoints and export (run() refuses).
  Trainer(dist::World& world, const TrainConfig& config, std::unique_ptr<BatchSource> data,
          const std::atomic<bool>* stop = nullptr);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Trains from the current step to train.steps, or until a stop request (then checkpoints).
  /// Returns the number of steps run.
  int64_t run();
  int64_t step() const { return step_; }
  /// Writes a checkpoint of the current state (collective).
  void save_checkpoint();
  model::LookaheadModel& model() { return *model_; }
  dist::ShardedEngine& engine() { return *engine_; }
  dist::ShardedAdamW& optimizer() { return *optimizer_; }
  /// Gathered trainable tensors by checkpoint key (collective; fp32 CPU copies on every rank).
  std::map<std::string, at::Tensor> trainable_tensors();
  /// Where checkpoints go: <train.out>/checkpoints.
  std::string checkpoint_dir() const;
  /// Loads a checkpoint ("latest" or a path; collective): trainables, optimizer, step, cursor, α
  /// and RNG state. Returns the path it loaded ("" when "latest" found none).
  std::string load_checkpoint(const std::string& what);
  /// Evaluates the current weights (collective; eval section of the config) into `out_dir`;
  /// returns the metrics document on rank 0 (empty elsewhere). The evaluation networks are built
  /// on first use.
  nlohmann::json evaluate(const std::string& out_dir, const EvalRunInfo& info, const EvalGuidance& guidance);

 private:
  StepRecord train_step();
  std::string resume(const std::string& what);
  bool stop_requested();

  dist::World& world_;
  TrainConfig config_;
  std::unique_ptr<BatchSource> data_;
  const std::atomic<bool>* stop_;
  std::unique_ptr<model::LookaheadModel> model_;
  std::unique_ptr<dist::ShardedEngine> engine_;
  std::unique_ptr<dist::ShardedAdamW> optimizer_;
  std::unique_ptr<model::AlphaSchedule> alpha_;
  std::unique_ptr<MetricsLog> log_;
  model::face::Mtcnn mtcnn_{nullptr};  ///< landmark fallback (model.mtcnn), CPU
  std::unique_ptr<Evaluator> evaluator_;  ///< built at the first evaluation
  int64_t step_ = 0;
  int64_t skipped_records_ = 0;
  int64_t faces_missing_ = 0;
  int64_t faces_detected_ = 0;
};

}  // namespace lookahead::trainer
