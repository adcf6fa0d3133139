// The training loop: Trainer::run and the per-step glue around TrainState::step.
#include "trainer/trainer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/process_memory.h"
#include "dist/memory_estimate.h"
#include "trainer/landmarks.h"

namespace lookahead::trainer {

namespace {

using common::Clock;
using common::seconds_since;

/// The metrics line of one step.
StepRecord step_record(int64_t step, const StepStats& st, const OptimConfig& optim, at::ScalarType dtype,
                       double records_skipped, double step_s, double data_s) {
  StepRecord r;
  r.step = step;
  r.labels = {{"dtype", dtype == at::kBFloat16 ? "bf16" : "fp32"}};
  r.values = {{"loss_diffusion", st.loss_diffusion},
              {"loss_lookahead", st.loss_lookahead},
              {"alpha", st.alpha},
              {"t_diffusion_mean", st.t_diffusion_mean},
              {"t_lookahead_mean", st.t_lookahead_mean},
              {"grad_norm", st.grad_norm},
              {"lr_adapter", optim.lr_adapter},
              {"lr_lora", optim.lr_lora},
              {"faces_valid", static_cast<double>(st.faces_valid)},
              {"records_skipped", records_skipped},
              {"time_step_s", step_s},
              {"time_data_s", data_s},
              {"time_compute_s", st.compute_s},
              {"time_diffusion_s", st.diffusion_s},
              {"time_lookahead_s", st.lookahead_s},
              {"time_gather_wait_s", st.times.gather_wait_s},
              {"time_reduce_wait_s", st.times.reduce_wait_s},
              {"time_optimizer_s", st.optimizer_s},
              {"mem_frozen_shard_bytes", static_cast<double>(st.memory.frozen_shard_bytes)},
              {"mem_trainable_shard_bytes", static_cast<double>(st.memory.trainable_shard_bytes)},
              {"mem_optimizer_bytes", static_cast<double>(st.optimizer_state_bytes)},
              {"mem_peak_gathered_bytes", static_cast<double>(st.memory.peak_gathered_bytes)}};
  if (st.grad_norm_diffusion) r.values["grad_norm_diffusion"] = *st.grad_norm_diffusion;
  return r;
}

}  // namespace

std::string describe_precision(ModelDtype dtype, const c10::Device& device) {
  const bool bf16 = frozen_in_bf16(dtype, device.is_cuda());
  std::string out = "model.dtype = ";
  if (dtype == ModelDtype::kAuto) out += "auto -> ";
  out += bf16 ? "bf16 (frozen weights stored and gathered in bf16; trainables fp32 masters computed in bf16; "
                "gradients reduced and AdamW in fp32)"
              : "fp32 (every weight, gradient and optimizer state in fp32)";
  return out + " on " + (device.is_cuda() ? "GPU" : "CPU");
}

std::string describe_model(const TrainConfig& c, int world_size, int ranks_per_node, const c10::Device& device) {
  // Shapes only, on the meta device; the dtypes are those of a run on `device`.
  model::LookaheadModel m(model_config(c, device), at::kMeta);
  const std::vector<dist::UnitElements> units = dist::count_elements(m.units());
  int64_t frozen = 0, lcm = 0, adapter = 0, lora = 0;
  for (const auto& u : units) {
    frozen += u.frozen;
    lcm += u.lcm;
    adapter += u.adapter;
    lora += u.lora;
  }
  dist::ShardingLayout layout;
  layout.world_size = world_size;
  layout.frozen_shards = dist::frozen_shard_ranks(c.dist.placement, world_size, ranks_per_node);
  layout.frozen_bytes = m.tensor_options().dtype() == at::kBFloat16 ? 2.0 : 4.0;
  layout.compute_bytes = layout.frozen_bytes;
  layout.ring_units = c.dist.max_gathered_units;
  std::vector<std::string> names;
  for (const auto& u : units) names.push_back(u.name);
  layout.kept_units = kept_activation_units(c.dist.recompute, names);
  const dist::HeldBytes held = dist::held_bytes(units, layout);
  std::ostringstream s;
  s << std::fixed << std::setprecision(1);
  auto gib = [](double b) { return b / (1024.0 * 1024.0 * 1024.0); };
  s << describe_precision(c.model.dtype, device) << "\n"
    << "parameters (" << units.size() << " sharding units):\n"
    << "  frozen base      " << frozen << "\n"
    << "  frozen LCM-LoRA  " << lcm << (!c.model.lcm_lora.empty() ? " (attached from model.lcm_lora at load)" : "")
    << "\n"
    << "  trainable adapter " << adapter << " (lr " << std::defaultfloat << std::setprecision(6) << c.optim.lr_adapter
    << ")\n"
    << "  trainable LoRA   " << lora << " (lr " << c.optim.lr_lora << ")\n"
    << std::fixed << std::setprecision(1) << "memory per rank, " << world_size << " rank(s) on "
    << (device.is_cuda() ? "GPU" : "CPU") << ", placement " << dist::to_string(c.dist.placement)
    << ", frozen weights in " << (layout.frozen_bytes == 2.0 ? "bf16" : "fp32")
    << " (weights and optimizer only, activations excluded):\n"
    << "  frozen shard     " << gib(held.frozen + held.lcm) << " GiB\n"
    << "  trainable shard  " << gib(held.master) << " GiB (fp32 master)\n"
    << "  gradient shard   " << gib(held.grads) << " GiB (fp32)\n"
    << "  AdamW moments    " << gib(held.adam) << " GiB\n"
    << "  gather ring      " << gib(held.ring) << " GiB (the " << c.dist.max_gathered_units
    << " largest recomputed units' gathered buffers)\n"
    << "  kept units       " << gib(held.kept) << " GiB (" << layout.kept_units.size()
    << " units keeping their activations, dist.recompute = " << config_name(c.dist.recompute)
    << ": gathered from forward to backward)\n";
  return s.str();
}

Trainer::Trainer(dist::World& world, const TrainConfig& config, std::unique_ptr<BatchSource> data,
                 const std::atomic<bool>* stop)
    : world_(world), config_(config), data_(std::move(data)), stop_(stop), state_(world, config) {
  TORCH_CHECK(data_, "Trainer: no data source");
  if (!config.model.mtcnn.empty()) {
    const std::string& d = config.model.mtcnn;
    mtcnn_ = model::face::Mtcnn(model::face::MtcnnOptions());
    mtcnn_->load_weights(d + "/pnet.pt", d + "/rnet.pt", d + "/onet.pt");
    mtcnn_->eval();
  }
  if (world.is_root()) std::filesystem::create_directories(config.train.out);
  world.comm()->barrier()->wait();
  log_ = std::make_unique<MetricsLog>(config.train.out + "/metrics.jsonl", world.is_root(), config.train.progress,
                                      config.train.steps);
  log_->message(describe_precision(config.model.dtype, world.device()));
  if (!config.train.resume.empty()) resume(config.train.resume);
}

Trainer::~Trainer() = default;

bool Trainer::stop_requested() {
  // Every rank must agree, or one would checkpoint while the others train on.
  const double mine = stop_ && stop_->load() ? 1.0 : 0.0;
  return dist::all_reduce_values(*world_.comm(), {mine}, dist::ReduceOp::kMax)[0] != 0.0;
}

StepRecord Trainer::train_step() {
  const double age_at_start = first_step_ ? common::process_age_s() : 0.0;
  const bool peak_is_step = common::reset_peak_resident();
  const auto t_step = Clock::now();
  const int64_t step = state_.completed_steps();
  RankBatch rb = data_->next();
  const double data_s = seconds_since(t_step);
  skipped_records_ += rb.skipped_records;

  // The reference identity (no gradient); MTCNN finds the landmarks a record lacks.
  at::Tensor lm = rb.ref_pixel_landmarks.to(at::kDouble);  // [B, 5, 2]
  if (mtcnn_) faces_detected_ += fill_missing_landmarks(*mtcnn_, rb.ref_pixels, lm);
  state_.model().set_reference_identity(rb.batch, rb.ref_pixels, lm);

  const StepStats st = state_.step(rb.batch, state_.draw(config_.train.batch_per_rank, data_->latent_shape()), state_.alpha());
  faces_missing_ += config_.train.batch_per_rank * world_.size() - st.faces_valid;
  const double skipped = dist::all_reduce_values(*world_.comm(), {static_cast<double>(rb.skipped_records)},
                                                 dist::ReduceOp::kSum)[0];
  StepRecord r = step_record(step, st, config_.optim, state_.model().tensor_options().dtype().toScalarType(), skipped,
                             seconds_since(t_step), data_s);

  // Every rank's peak resident memory during this step (its whole life's where the kernel cannot
  // reset the mark), next to the parts the engine counts.
  const int ranks = world_.size();
  std::vector<double> peaks(static_cast<size_t>(ranks), 0.0);
  peaks[static_cast<size_t>(world_.rank())] = static_cast<double>(common::resident_memory().peak);
  peaks = dist::all_reduce_values(*world_.comm(), peaks, dist::ReduceOp::kSum);
  double peak_max = 0;
  for (int i = 0; i < ranks; ++i) {
    r.values["mem_rss_peak_bytes_rank" + std::to_string(i)] = peaks[static_cast<size_t>(i)];
    peak_max = std::max(peak_max, peaks[static_cast<size_t>(i)]);
  }
  r.values["mem_rss_peak_bytes"] = peak_max;
  r.labels["mem_rss_peak_scope"] = peak_is_step ? "step" : "process";
  if (first_step_) {
    r.values["time_setup_s"] = state_.setup_seconds();
    r.values["time_launch_to_step_s"] = age_at_start;
    std::ostringstream msg;
    msg << std::fixed << std::setprecision(1) << "start-up: the first step began " << age_at_start
        << " s after launch (model built, weights loaded and sharded in " << state_.setup_seconds() << " s)";
    log_->message(msg.str());
    first_step_ = false;
  }
  return r;
}

int64_t Trainer::run() {
  const int64_t start = step();
  while (step() < config_.train.steps) {
    if (stop_requested()) {
      log_->message("stop requested (signal): writing a checkpoint at step " + std::to_string(step()));
      save_checkpoint();
      return step() - start;
    }
    StepRecord r = train_step();
    const int64_t done = step();
    const bool evaluate_now = config_.eval.every > 0 && done % config_.eval.every == 0;
    if (evaluate_now) {
      std::ostringstream dir;
      dir << (config_.eval.out.empty() ? config_.train.out + "/eval" : config_.eval.out) << "/step-" << std::setw(6)
          << std::setfill('0') << done;
      const auto t = Clock::now();
      nlohmann::json metrics = evaluate(dir.str(), EvalRunInfo{"step-" + std::to_string(done), "", done},
                                        EvalGuidance::from_config(config_.eval));
      if (world_.is_root()) {
        for (const auto& [k, v] : eval_log_values(metrics)) r.values[k] = v;
        r.values["time_eval_s"] = seconds_since(t);
        log_->message("evaluation at step " + std::to_string(done) + ": " + dir.str() + "/report.html");
      }
    }
    if (evaluate_now || done % config_.train.log_every == 0 || done == config_.train.steps) log_->write(r);
    if (done % config_.train.checkpoint_every == 0 || done == config_.train.steps) save_checkpoint();
  }
  log_->message("samples without usable landmarks (masked out of the identity loss): " +
                std::to_string(faces_missing_) + "; landmarks found by MTCNN on this rank: " +
                std::to_string(faces_detected_) + "; corrupt records skipped: " + std::to_string(skipped_records_));
  return step() - start;
}

void Trainer::save_checkpoint() {
  const SavedCheckpoint r = state_.save(data_->cursor());
  std::ostringstream msg;
  msg << "checkpoint " << r.path << " (step " << step() << ", " << r.bytes / 1024 << " KiB, " << std::fixed
      << std::setprecision(2) << r.seconds << " s)";
  log_->message(msg.str());
}

nlohmann::json Trainer::evaluate(const std::string& out_dir, const EvalRunInfo& info, const EvalGuidance& guidance) {
  if (!evaluator_) evaluator_ = std::make_unique<Evaluator>(world_, config_, state_.model(), &state_.engine());
  return evaluator_->run(out_dir, info, guidance);
}

void Trainer::resume(const std::string& what) {
  const LoadedState r = state_.load(what);
  if (r.path.empty()) {
    log_->message("resume = latest: no checkpoint in " + state_.checkpoint_dir().string() + ", starting at step 0");
    log_->truncate_from(0);  // what a run that died before its first checkpoint logged
    return;
  }
  for (const auto& s : r.skipped) log_->message("skipped damaged checkpoint " + s);
  data_->seek(r.cursor);
  // Steps logged after this checkpoint by the run that stopped are redone now.
  log_->truncate_from(step());
  if (!r.rng_note.empty()) log_->message(r.rng_note);
  log_->message(describe_load("resumed from", r, step(), world_.size()));
}

}  // namespace lookahead::trainer
