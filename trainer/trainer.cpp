// The training loop: Trainer::run and the per-step glue around TrainState::step.
#include "trainer/trainer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/process_memory.h"
#include "dist/memory_estimate.h"
#include "trainer/activation_estimate.h"
#include "trainer/cuda_memory.h"
#include "trainer/landmarks.h"

namespace lookahead::trainer {

namespace {

using common::Clock;
using common::seconds_since;

/// The metrics line of one step.
StepRecord step_record(int64_t step, const StepStats& st, const TrainConfig& config, at::ScalarType dtype,
                       double records_skipped, double step_s, double data_s) {
  const OptimConfig& optim = config.optim;
  const bool branch2 = lookahead_branch_on(config.loss);
  const bool lcm = branch2 && config.loss.preview == model::PreviewKind::kLcm;
  StepRecord r;
  r.step = step;
  // The variant that ran (docs/ablations.md): plots and reports tell runs apart by these.
  r.labels = {{"dtype", dtype == at::kBFloat16 ? "bf16" : "fp32"},
              {"preview", branch2 ? std::string(config_name(config.loss.preview)) : "none"},
              {"kv_encoder", std::string(config_name(config.model.kv_encoder))}};
  r.values = {{"loss_diffusion", st.loss_diffusion},
              {"loss_lookahead", st.loss_lookahead},
              {"loss_id", st.loss_id},
              {"loss_dreamsim", st.loss_dreamsim},
              {"lambda_id", config.loss.lambda_id},
              {"lambda_dreamsim", config.loss.lambda_dreamsim},
              {"t_diffusion_mean", st.t_diffusion_mean},
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
              {"comm_gathers", static_cast<double>(st.times.comm_gathers)},
              {"comm_gathered_bytes", static_cast<double>(st.times.comm_gathered_bytes)},
              {"comm_reduce_scatters", static_cast<double>(st.times.comm_reduce_scatters)},
              {"comm_reduced_bytes", static_cast<double>(st.times.comm_reduced_bytes)},
              {"time_optimizer_s", st.optimizer_s},
              {"mem_frozen_shard_bytes", static_cast<double>(st.memory.frozen_shard_bytes)},
              {"mem_trainable_shard_bytes", static_cast<double>(st.memory.trainable_shard_bytes)},
              {"mem_optimizer_bytes", static_cast<double>(st.optimizer_state_bytes)},
              {"mem_peak_gathered_bytes", static_cast<double>(st.memory.peak_gathered_bytes)}};
  if (st.grad_norm_diffusion) r.values["grad_norm_diffusion"] = *st.grad_norm_diffusion;
  if (lcm) {  // α and the second timestep exist only where the LCM branch runs
    r.values["alpha"] = st.alpha;
    r.values["t_lookahead_mean"] = st.t_lookahead_mean;
  }
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
  const double runtime = static_cast<double>(common::resident_memory().current);
  const StepMemoryPrediction p =
      predict_step_memory(c, model_config(c, device), world_size, ranks_per_node, c.data.resolution);
  const dist::ShardingLayout& layout = p.layout;
  const dist::HeldBytes& held = p.held;
  const ActivationEstimate& act = p.activations;
  std::ostringstream s;
  s << std::fixed << std::setprecision(1);
  auto gib = [](double b) { return b / (1024.0 * 1024.0 * 1024.0); };
  s << describe_precision(c.model.dtype, device) << "\n"
    << "parameters (" << p.units << " sharding units):\n"
    << "  frozen base      " << p.frozen << "\n"
    << "  frozen LCM-LoRA  " << p.lcm << (!c.model.lcm_lora.empty() ? " (attached from model.lcm_lora at load)" : "")
    << "\n"
    << "  trainable adapter " << p.adapter << " (lr " << std::defaultfloat << std::setprecision(6) << c.optim.lr_adapter
    << ")\n"
    << "  trainable LoRA   " << p.lora << " (lr " << c.optim.lr_lora << ")\n"
    << std::fixed << std::setprecision(1) << "memory per rank, " << world_size << " rank(s) on "
    << (device.is_cuda() ? "GPU" : "CPU") << ", placement " << dist::to_string(c.dist.placement)
    << ", frozen weights in " << (layout.frozen_bytes == 2.0 ? "bf16" : "fp32") << ":\n"
    << "  frozen shard     " << gib(held.frozen + held.lcm) << " GiB\n"
    << "  trainable shard  " << gib(held.master) << " GiB (fp32 master)\n"
    << "  gradient shard   " << gib(held.grads) << " GiB (fp32)\n"
    << "  AdamW moments    " << gib(held.adam) << " GiB\n"
    << "  gather ring      " << gib(held.ring) << " GiB (the " << c.dist.max_gathered_units
    << " largest recomputed units' gathered buffers)\n"
    << "  kept units       " << gib(held.kept) << " GiB (" << layout.kept_units.size()
    << " units keeping their activations, dist.recompute = " << config_name(c.dist.recompute)
    << ": gathered from forward to backward)\n";
  auto branch = [&](const char* name, const BranchPeak& b) {
    s << "  " << name << gib(b.total) << " GiB at " << (b.unit.empty() ? "the end of forward" : b.unit)
      << " (held from forward " << gib(b.kept) << ", recomputed " << gib(b.recompute) << ", gradients " << gib(b.grads)
      << ", unsharded gradients in flight " << gib(b.in_flight) << ")\n";
  };
  s << "activations per rank (one step traced on the meta device: batch " << c.train.batch_per_rank << ", "
    << c.data.resolution / 8 << "x" << c.data.resolution / 8 << " latents; " << act.unit_calls << " unit calls, "
    << act.backward_calls << " with a backward):\n";
  branch("branch 1 (diffusion) ", act.diffusion);
  branch("branch 2 (lookahead) ", act.lookahead);
  s << "  optimizer step       " << gib(act.optimizer) << " GiB (temporaries of the largest group)\n"
    << "  largest recomputed unit: " << act.largest_recompute_unit << ", " << gib(act.largest_recompute) << " GiB\n";
  s << "tensor memory per rank by phase (always held " << gib(p.base)
    << " GiB: frozen and trainable shards, moments):\n"
    << "  branch 1 " << gib(p.diffusion()) << " GiB (+ gathered weights " << gib(p.diffusion_weights) << ")\n"
    << "  branch 2 " << gib(p.lookahead()) << " GiB (+ gathered weights " << gib(p.lookahead_weights) << ")\n"
    << "  optimizer " << gib(p.optimizer()) << " GiB (gradient shards " << gib(held.grads)
    << ", or the unsharded gradients in flight at the end of backward " << gib(act.in_flight_end) << ")\n";
  double recompute = 0;  // a recomputed call's forward runs again in its backward
  for (const auto& call : act.calls)
    if (call.with_grad && !layout.kept_units.contains(call.unit)) recompute += call.flops.forward;
  s << std::setprecision(2) << "compute per step per rank (matrix products, convolutions, attention; 2 FLOPs per "
    << "multiply-add): forward " << act.flops.forward / 1e12 << " TFLOP, backward " << act.flops.backward / 1e12
    << " TFLOP, recompute " << recompute / 1e12 << " TFLOP\n"
    << std::setprecision(1);
  const dist::StepTraffic& t = p.traffic;
  auto mib = [](double b) { return b / (1024.0 * 1024.0); };
  s << "communication per step (" << world_size << " rank(s) on " << t.nodes << " node(s), ranks filling nodes in "
    << "order; ring all-gathers and reduce-scatters, as NCCL and OpenMPI's large-message rings):\n"
    << "  all-gathers      " << t.gathers << " unit gathers, " << mib(t.gathered) << " MiB gathered, "
    << mib(t.all_gather_sent_per_rank) << " MiB sent per rank, " << mib(t.all_gather_inter_node_per_node)
    << " MiB sent per node to other nodes\n"
    << "  reduce-scatters  " << t.reduce_scatters << " reductions, " << mib(t.reduced) << " MiB of fp32 gradients, "
    << mib(t.reduce_scatter_sent_per_rank) << " MiB sent per rank, " << mib(t.reduce_scatter_inter_node_per_node)
    << " MiB sent per node to other nodes\n";
  s << "predicted peak per rank " << gib(p.peak() + runtime) << " GiB = tensors " << gib(p.peak())
    << " + this process's resident memory before the model (libraries) " << gib(runtime)
    << (device.is_cuda() ? "; on the GPU add its context and the allocator's slack" : "") << "\n";
  // For scripts: the same in bytes, and the names metrics.jsonl measures them under.
  s << std::setprecision(0) << "predicted bytes per rank: mem_tensor_peak_diffusion_bytes=" << p.diffusion()
    << " mem_tensor_peak_lookahead_bytes=" << p.lookahead() << " mem_tensor_peak_optimizer_bytes=" << p.optimizer()
    << " runtime=" << runtime << "\n"
    << "predicted bytes per step: comm_sent_per_rank=" << t.sent_per_rank()
    << " comm_inter_node_sent_per_node=" << t.inter_node_per_node() << " comm_gathered_bytes=" << t.gathered
    << " comm_reduced_bytes=" << t.reduced << "\n"
    << "predicted flops per step: forward=" << act.flops.forward << " backward=" << act.flops.backward
    << " recompute=" << recompute << "\n";
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
  reset_cuda_memory_peaks(world_.device());
  const auto t_step = Clock::now();
  const int64_t step = state_.completed_steps();
  RankBatch rb = data_->next();
  const double data_s = seconds_since(t_step);
  skipped_records_ += rb.skipped_records;

  // The reference identity (no gradient); MTCNN finds the landmarks a record lacks.
  at::Tensor lm = rb.ref_pixel_landmarks.to(at::kDouble);  // [B, 5, 2]
  if (mtcnn_ && config_.loss.lambda_id > 0) faces_detected_ += fill_missing_landmarks(*mtcnn_, rb.ref_pixels, lm);
  state_.model().set_reference(rb.batch, rb.ref_pixels, lm);

  const StepStats st = state_.step(rb.batch, state_.draw(config_.train.batch_per_rank, data_->latent_shape()), state_.alpha());
  faces_missing_ += config_.train.batch_per_rank * world_.size() - st.faces_valid;
  const double skipped = dist::all_reduce_values(*world_.comm(), {static_cast<double>(rb.skipped_records)},
                                                 dist::ReduceOp::kSum)[0];
  StepRecord r = step_record(step, st, config_, state_.model().tensor_options().dtype().toScalarType(), skipped,
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
  if (st.tensor_peak_diffusion >= 0) {
    // Live CPU tensor bytes (the allocator's count) per phase, max over ranks: what the dry run's
    // memory model predicts, without the libraries and heap slack that the resident set adds.
    const std::vector<double> tp = dist::all_reduce_values(
        *world_.comm(),
        {static_cast<double>(st.tensor_peak_diffusion), static_cast<double>(st.tensor_peak_lookahead),
         static_cast<double>(st.tensor_peak_optimizer)},
        dist::ReduceOp::kMax);
    r.values["mem_tensor_peak_diffusion_bytes"] = tp[0];
    r.values["mem_tensor_peak_lookahead_bytes"] = tp[1];
    r.values["mem_tensor_peak_optimizer_bytes"] = tp[2];
    r.values["mem_tensor_peak_bytes"] = std::max({tp[0], tp[1], tp[2]});
  }
  if (const std::optional<CudaMemory> cm = cuda_memory(world_.device())) {
    // On a GPU: the caching allocator's peaks during this step (tensors; what it held from the
    // driver), max over ranks, and the driver's free memory at the step's end, min over ranks (the
    // tightest GPU). Every rank has a GPU or none (the engine's NCCL communicator needs one per
    // rank), so all ranks take part in this reduction or none does.
    const std::vector<double> g =
        dist::all_reduce_values(*world_.comm(),
                                {static_cast<double>(cm->peak_allocated), static_cast<double>(cm->peak_reserved),
                                 -static_cast<double>(cm->free), static_cast<double>(cm->total)},
                                dist::ReduceOp::kMax);
    r.values["mem_cuda_peak_allocated_bytes"] = g[0];
    r.values["mem_cuda_peak_reserved_bytes"] = g[1];
    r.values["mem_cuda_free_bytes"] = -g[2];
    r.values["mem_cuda_total_bytes"] = g[3];
  }
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
      // A stop right after a periodic checkpoint does not write the same step again: the time a
      // scheduler leaves before its SIGKILL goes to one checkpoint, not two.
      if (saved_step_ == step()) {
        log_->message("stop requested (signal): the checkpoint at step " + std::to_string(step()) +
                      " is written already");
      } else {
        log_->message("stop requested (signal): writing a checkpoint at step " + std::to_string(step()));
        save_checkpoint();
      }
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
  saved_step_ = step();
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
    // What a run that died before its first checkpoint logged; step 0 is a start, not a resume.
    log_->truncate_from(0, /*mark_resumed=*/false);
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
