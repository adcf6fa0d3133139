// The LCM-Lookahead training loop (llm.c style): stop check, step, occasional evaluation, log,
// checkpoint. A step is data -> reference identity -> TrainState::step -> record; everything that
// is trained and checkpointed lives in the TrainState (trainer/train_state.h).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "dist/world.h"
#include "model/face/mtcnn_detect.h"
#include "trainer/batch_source.h"
#include "trainer/eval/evaluator.h"
#include "trainer/metrics_log.h"
#include "trainer/train_config.h"
#include "trainer/train_state.h"

namespace lookahead::trainer {

/// Elements per role of the model `config` describes (built on the meta device), and the bytes
/// each rank would hold for `world_size` ranks (`ranks_per_node` for placement node) computing on
/// `device` (the World's: model.dtype = auto means bf16 on a GPU, fp32 on the CPU).
std::string describe_model(const TrainConfig& config, int world_size, int ranks_per_node, const c10::Device& device);

/// The precision a run on `device` uses, in one line: "model.dtype = bf16 (frozen weights stored
/// and gathered in bf16; trainables fp32 masters computed in bf16; gradients reduced and AdamW in
/// fp32)", with "auto -> " first when model.dtype = auto resolved it. Logged at the start of
/// training and printed by --dry-run.
std::string describe_precision(ModelDtype dtype, const c10::Device& device);

class Trainer {
 public:
  /// Builds the training state (model, engine, optimizer; collective), the landmark fallback and
  /// the metrics log; resumes when train.resume says so. `stop` is raised by a signal handler
  /// (SIGTERM / SIGUSR1).
  Trainer(dist::World& world, const TrainConfig& config, std::unique_ptr<BatchSource> data,
          const std::atomic<bool>* stop = nullptr);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Trains from the current step to train.steps, or until a stop request (then checkpoints).
  /// Returns the number of steps run.
  int64_t run();
  int64_t step() const { return state_.completed_steps(); }
  /// Writes a checkpoint of the current state (collective).
  void save_checkpoint();
  TrainState& state() { return state_; }

 private:
  StepRecord train_step();
  void resume(const std::string& what);
  bool stop_requested();
  nlohmann::json evaluate(const std::string& out_dir, const EvalRunInfo& info, const EvalGuidance& guidance);

  dist::World& world_;
  TrainConfig config_;
  std::unique_ptr<BatchSource> data_;
  const std::atomic<bool>* stop_;
  TrainState state_;
  std::unique_ptr<MetricsLog> log_;
  model::face::Mtcnn mtcnn_{nullptr};  ///< landmark fallback (model.mtcnn), CPU
  std::unique_ptr<Evaluator> evaluator_;  ///< built at the first evaluation
  int64_t skipped_records_ = 0;
  int64_t faces_missing_ = 0;
  int64_t faces_detected_ = 0;
  bool first_step_ = true;  ///< the first step this process runs (start-up time is logged with it)
  int64_t saved_step_ = -1;  ///< the step of the last checkpoint this run wrote (a stop at it writes none)
};

}  // namespace lookahead::trainer
