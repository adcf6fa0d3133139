// The training loop.
#include "trainer/trainer.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <thread>

#include "checkpoints/checkpoint.h"
#include "model/face/align.h"
#include "trainer/landmarks.h"

namespace lookahead::trainer {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

/// Landmarks with NaN rows (no face) replaced by the template's, so that every rank runs the same
/// modules; such samples are masked out of the identity loss.
at::Tensor safe_landmarks(const at::Tensor& lm, double size) {
  at::Tensor valid = at::isfinite(lm).flatten(1).all(1).view({-1, 1, 1});  // [B, 1, 1]
  at::Tensor fallback = model::face::arcface_template(size).to(lm.options()).unsqueeze(0).expand_as(lm);
  return at::where(valid, lm, fallback);
}

}  // namespace

model::LookaheadModelConfig model_config(const TrainConfig& c, const c10::Device& device) {
  model::LookaheadModelConfig m = c.model.preset == "tiny" ? model::LookaheadModelConfig::tiny() : model::LookaheadModelConfig::sdxl();
  if (!c.model.unet_config.empty()) m.unet = model::unet::UNetConfig::from_file(c.model.unet_config);
  m.arcface = c.model.preset == "tiny" ? m.arcface : c.model.arcface_network;
  m.kv_encoder.lora_rank(c.model.encoder_lora_rank).kv_lora_rank(c.model.kv_lora_rank);
  m.adapter_drop_p = c.loss.adapter_drop;
  m.kv_drop_p = c.loss.kv_drop;
  m.lambda_id = c.loss.lambda_id;
  m.diffusion_timestep_a = c.loss.timestep_a_diffusion;
  m.lcm_timestep_a = c.loss.timestep_a_lookahead;
  m.ip_scale = c.model.ip_scale;
  const bool bf16 = c.model.dtype == "bf16" || (c.model.dtype == "auto" && device.is_cuda());
  m.dtype = bf16 ? at::kBFloat16 : at::kFloat;
  return m;
}

std::string describe_model(const TrainConfig& c, int world_size, int ranks_per_node, const c10::Device& device) {
  // Shapes only, on the meta device; the dtypes are those of a run on `device`.
  model::LookaheadModel m(model_config(c, device), at::kMeta);
  int64_t frozen = 0, lcm = 0, adapter = 0, lora = 0, largest_unit = 0;
  size_t units = 0;
  for (const auto& u : m.units()) {
    int64_t n = 0;
    for (auto [role, total] : {std::pair{&u.frozen, &frozen}, {&u.lcm, &lcm}, {&u.adapter, &adapter}, {&u.lora, &lora}})
      for (const auto& [k, t] : *role) {
        *total += t.numel();
        n += t.numel();
      }
    largest_unit = std::max(largest_unit, n);
    ++units;
  }
  const double frozen_bytes = m.tensor_options().dtype() == at::kBFloat16 ? 2.0 : 4.0;
  const double shard = c.dist.placement == "full" ? world_size : c.dist.placement == "node" ? ranks_per_node : 1;
  const double trainable = static_cast<double>(adapter + lora);
  std::ostringstream s;
  s << std::fixed << std::setprecision(1);
  auto gib = [](double b) { return b / (1024.0 * 1024.0 * 1024.0); };
  s << "parameters (" << units << " sharding units):\n"
    << "  frozen base      " << frozen << "\n"
    << "  frozen LCM-LoRA  " << lcm << (c.model.preset == "sdxl" ? " (attached from model.lcm_lora at load)" : "") << "\n"
    << "  trainable adapter " << adapter << " (lr " << std::defaultfloat << std::setprecision(6)
    << c.optim.lr_adapter << ")\n"
    << "  trainable LoRA   " << lora << " (lr " << c.optim.lr_lora << ")\n"
    << std::fixed << std::setprecision(1)
    << "memory per rank, " << world_size << " rank(s) on " << (device.is_cuda() ? "GPU" : "CPU") << ", placement "
    << c.dist.placement << ", frozen weights in " << (frozen_bytes == 2.0 ? "bf16" : "fp32")
    << " (weights and optimizer only, activations excluded):\n"
    << "  frozen shard     " << gib(static_cast<double>(frozen + lcm) * frozen_bytes / shard) << " GiB\n"
    << "  trainable shard  " << gib(trainable * 4.0 / world_size) << " GiB (fp32 master)\n"
    << "  gradient shard   " << gib(trainable * 4.0 / world_size) << " GiB (fp32)\n"
    << "  AdamW moments    " << gib(trainable * 8.0 / world_size) << " GiB\n"
    << "  gather ring      " << gib(static_cast<double>(largest_unit) * frozen_bytes * static_cast<double>(c.dist.max_gathered_units))
    << " GiB (" << c.dist.max_gathered_units << " x largest unit)\n";
  return s.str();
}

Trainer::Trainer(dist::World& world, const TrainConfig& config, std::unique_ptr<BatchSource> data,
                 const std::atomic<bool>* stop)
    : world_(world), config_(config), data_(std::move(data)), stop_(stop) {
  const c10::Device device = world.device();
  // Ranks of a node share its cores; more threads than cores only add contention.
  const int64_t cores = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  at::set_num_threads(static_cast<int>(config.train.threads > 0 ? config.train.threads
                                                                 : std::max<int64_t>(1, cores / world.local_size())));
  // Random initial values (tiny preset, LoRAs) must be identical on every rank.
  at::manual_seed(config.train.seed);
  model_ = std::make_unique<model::LookaheadModel>(model_config(config, device), device);
  if (config.model.preset == "sdxl")
    model_->load_weights({config.model.unet_weights, config.model.ip_adapter, config.model.lcm_lora, config.model.taesd,
                          config.model.arcface});

  dist::EngineOptions eo;
  eo.placement = dist::placement_from_string(config.dist.placement);
  eo.prefetch = config.dist.prefetch;
  eo.max_gathered_units = config.dist.max_gathered_units;
  eo.keep_gathered = config.dist.keep_gathered;
  eo.frozen_dtype = model_->tensor_options().dtype().toScalarType();
  eo.trainable_compute_dtype = eo.frozen_dtype;
  std::vector<dist::EngineUnit> units;
  for (auto& u : model_->units()) units.push_back(dist::EngineUnit{u.name, u.frozen, u.lcm, u.adapter, u.lora});
  engine_ = std::make_unique<dist::ShardedEngine>(world, std::move(units), eo);
  model_->set_unit_runner(engine_.get());

  dist::AdamWOptions ao;
  ao.beta1 = config.optim.beta1;
  ao.beta2 = config.optim.beta2;
  ao.eps = config.optim.eps;
  optimizer_ = std::make_unique<dist::ShardedAdamW>(
      std::vector<dist::AdamWGroupOptions>{{"adapter", config.optim.lr_adapter, config.optim.weight_decay},
                                           {"lora", config.optim.lr_lora, config.optim.weight_decay}},
      ao);
  for (auto& [g, lr] : engine_->trainable_groups()) optimizer_->add(g, lr);

  model::AlphaScheduleOptions alpha;
  alpha.full_prob = config.loss.alpha_p_one;
  alpha.min_scale = config.loss.alpha_min;
  alpha.every = config.loss.alpha_every;
  alpha_ = std::make_unique<model::AlphaSchedule>(config.train.seed, alpha);

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
  if (!config.train.resume.empty()) resume(config.train.resume);
}

Trainer::~Trainer() {
  if (model_) model_->set_unit_runner(nullptr);
}

std::string Trainer::checkpoint_dir() const { return config_.train.out + "/checkpoints"; }

bool Trainer::stop_requested() {
  // Every rank must agree, or one would checkpoint while the others train on.
  const double mine = stop_ && stop_->load() ? 1.0 : 0.0;
  return dist::all_reduce_values(*world_.comm(), {mine}, dist::ReduceOp::kMax)[0] != 0.0;
}

StepRecord Trainer::train_step() {
  const auto t_step = Clock::now();
  engine_->reset_times();
  const int64_t b = config_.train.batch_per_rank, global = b * world_.size(), first = world_.rank() * b;
  const auto t_data = Clock::now();
  RankBatch rb = data_->next();
  const double data_s = seconds_since(t_data);
  skipped_records_ += rb.skipped_records;
  model::Batch& batch = rb.batch;
  const at::TensorOptions opts = model_->tensor_options();

  // The reference identity: ArcFace of the aligned reference photo (no gradient), and its
  // landmarks moved to the preview's pixel grid (8 x the latent size).
  const double preview = 8.0 * static_cast<double>(batch.z_tgt.size(-1));
  const double ref_size = static_cast<double>(rb.ref_pixels.size(-1));
  at::Tensor lm = rb.ref_pixel_landmarks.to(at::kDouble);  // [B, 5, 2]
  if (mtcnn_) faces_detected_ += fill_missing_landmarks(*mtcnn_, rb.ref_pixels, lm);
  const at::Tensor valid = at::isfinite(lm).flatten(1).all(1);
  {
    at::NoGradGuard no_grad;
    at::Tensor faces = model::face::align_faces(rb.ref_pixels.to(opts), safe_landmarks(lm, ref_size));
    batch.ref_id = model_->arcface(faces).to(at::kFloat);  // [B, 512]
  }
  batch.ref_landmarks = lm * (preview / ref_size);

  // The identity loss is a mean over the usable samples of the whole global batch. Host values go
  // over the World's MPI communicator, whatever device the model runs on.
  const std::vector<double> counts =
      dist::all_reduce_values(*world_.comm(), {valid.sum().item<double>(), static_cast<double>(rb.skipped_records)},
                              dist::ReduceOp::kSum);
  const auto global_valid = static_cast<int64_t>(counts[0]);
  faces_missing_ += global - global_valid;

  const auto latent = data_->latent_shape();
  model::StepDraw draw = model_->draw(config_.train.seed, step_, global, first, b, latent);
  const double alpha = alpha_->at(step_);

  auto t0 = Clock::now();
  double norm1 = 0, norm2 = 0, optimizer_s = 0;
  auto optimizer_step = [&] {
    const auto t = Clock::now();
    engine_->finish_gradients();
    const double norm = config_.optim.clip > 0 ? optimizer_->clip_grad_norm(config_.optim.clip, world_.comm())
                                               : optimizer_->grad_norm(world_.comm());
    optimizer_->step();
    optimizer_->zero_grad();
    optimizer_s += seconds_since(t);
    return norm;
  };
  // Branch 1: diffusion.
  at::Tensor l1 = model_->diffusion_loss(batch, draw);
  l1.backward();
  if (config_.loss.mode == "alternate") norm1 = optimizer_step();
  // Branch 2: lookahead; branch 1's reduce-scatters are in flight meanwhile (sum mode).
  model::LookaheadLoss l2 = model_->lookahead_loss(batch, draw, alpha);
  // Rescale the local mean so that averaging over ranks gives the mean over the global batch's
  // usable samples.
  const double local_valid = static_cast<double>(std::max<int64_t>(l2.valid_count, 1));
  at::Tensor l2_global = l2.loss * (global_valid > 0 ? local_valid * world_.size() / static_cast<double>(global_valid) : 0.0);
  l2_global.backward();
  norm2 = optimizer_step();
  engine_->end_step();
  const double compute_s = seconds_since(t0);

  // Logged values are the global batch's, whatever the rank count: loss means over ranks (each a
  // mean over its equal share) and timestep means over every sample. The losses live on the
  // model's device (CUDA on GPUs); their values cross to the host here.
  const std::vector<double> sums = dist::all_reduce_values(
      *world_.comm(),
      {l1.detach().item<double>(), l2_global.detach().item<double>(), draw.timesteps.to(at::kDouble).sum().item<double>(),
       draw.lcm_timesteps.to(at::kDouble).sum().item<double>()},
      dist::ReduceOp::kSum);
  const double ranks = static_cast<double>(world_.size()), samples = static_cast<double>(global);

  StepRecord r;
  r.step = step_;
  const auto& times = engine_->times();
  const auto mem = engine_->memory();
  r.values = {{"loss_diffusion", sums[0] / ranks},
              {"loss_lookahead", sums[1] / ranks},
              {"alpha", alpha},
              {"t_diffusion_mean", sums[2] / samples},
              {"t_lookahead_mean", sums[3] / samples},
              {"grad_norm", norm2},
              {"lr_adapter", config_.optim.lr_adapter},
              {"lr_lora", config_.optim.lr_lora},
              {"faces_valid", static_cast<double>(global_valid)},
              {"records_skipped", counts[1]},
              {"time_step_s", seconds_since(t_step)},
              {"time_data_s", data_s},
              {"time_compute_s", compute_s - optimizer_s},
              {"time_gather_wait_s", times.gather_wait_s},
              {"time_reduce_wait_s", times.reduce_wait_s},
              {"time_optimizer_s", optimizer_s},
              {"mem_frozen_shard_bytes", static_cast<double>(mem.frozen_shard_bytes)},
              {"mem_trainable_shard_bytes", static_cast<double>(mem.trainable_shard_bytes)},
              {"mem_optimizer_bytes", static_cast<double>(optimizer_->state_bytes())},
              {"mem_peak_gathered_bytes", static_cast<double>(mem.peak_gathered_bytes)}};
  if (config_.loss.mode == "alternate") r.values["grad_norm_diffusion"] = norm1;
  ++step_;
  return r;
}

int64_t Trainer::run() {
  TORCH_CHECK(data_, "Trainer: no data source (built for export only)");
  const int64_t start = step_;
  while (step_ < config_.train.steps) {
    if (stop_requested()) {
      log_->message("stop requested (signal): writing a checkpoint at step " + std::to_string(step_));
      save_checkpoint();
      return step_ - start;
    }
    StepRecord r = train_step();
    const bool evaluate_now = config_.eval.every > 0 && step_ % config_.eval.every == 0;
    if (evaluate_now) {
      std::ostringstream dir;
      dir << (config_.eval.out.empty() ? config_.train.out + "/eval" : config_.eval.out) << "/step-" << std::setw(6)
          << std::setfill('0') << step_;
      const auto t = Clock::now();
      nlohmann::json metrics = evaluate(dir.str(), EvalRunInfo{"step-" + std::to_string(step_), "", step_},
                                        EvalGuidance::from_config(config_.eval));
      if (world_.is_root()) {
        for (const auto& [k, v] : eval_log_values(metrics)) r.values[k] = v;
        r.values["time_eval_s"] = seconds_since(t);
        log_->message("evaluation at step " + std::to_string(step_) + ": " + dir.str() + "/report.html");
      }
    }
    if (evaluate_now || step_ % config_.train.log_every == 0 || step_ == config_.train.steps) log_->write(r);
    if (step_ % config_.train.checkpoint_every == 0 || step_ == config_.train.steps) save_checkpoint();
  }
  log_->message("samples without usable landmarks (masked out of the identity loss): " +
                std::to_string(faces_missing_) + "; landmarks found by MTCNN on this rank: " +
                std::to_string(faces_detected_) + "; corrupt records skipped: " + std::to_string(skipped_records_));
  return step_ - start;
}

namespace {

std::string generator_state() {
  at::Tensor state = at::detail::getDefaultCPUGenerator().get_state();  // uint8 bytes
  return std::string(reinterpret_cast<const char*>(state.data_ptr<uint8_t>()), static_cast<size_t>(state.numel()));
}

void set_generator_state(const std::string& bytes) {
  at::Tensor state = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::memcpy(state.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the default generator
  generator.set_state(state);
}

}  // namespace

void Trainer::save_checkpoint() {
  ckpt::SaveRequest req;
  req.dir = checkpoint_dir();
  req.step = step_;
  req.comm = world_.comm();
  for (auto& [g, lr] : engine_->trainable_groups()) req.trainable.push_back(g);
  req.optimizer = optimizer_.get();
  const std::vector<std::string> sources{config_.model.unet_weights, config_.model.lcm_lora, config_.model.taesd,
                                         config_.model.arcface};
  for (auto& g : engine_->groups())
    if (!g->trainable()) req.frozen.push_back(ckpt::FrozenGroupRef{g, sources});
  req.config_text = config_.resolved_ini;
  req.rng_state = generator_state();
  const DataCursor cursor = data_ ? data_->cursor() : DataCursor{};
  req.cursor = ckpt::DataCursor{cursor.epoch, cursor.index};
  req.alpha = ckpt::AlphaState{alpha_->state().alpha, alpha_->state().drawn_at};
  req.keep_last = static_cast<int>(config_.train.keep_checkpoints);
  const ckpt::SaveResult r = ckpt::save_checkpoint(req);
  std::ostringstream msg;
  msg << "checkpoint " << r.path.string() << " (step " << step_ << ", " << r.bytes / 1024 << " KiB, " << std::fixed
      << std::setprecision(2) << r.seconds << " s)";
  log_->message(msg.str());
}

std::string Trainer::load_checkpoint(const std::string& what) { return resume(what); }

nlohmann::json Trainer::evaluate(const std::string& out_dir, const EvalRunInfo& info, const EvalGuidance& guidance) {
  if (!evaluator_) evaluator_ = std::make_unique<Evaluator>(world_, config_, *model_, engine_.get());
  return evaluator_->run(out_dir, info, guidance);
}

std::string Trainer::resume(const std::string& what) {
  const std::filesystem::path source = what == "latest" ? std::filesystem::path(checkpoint_dir()) : std::filesystem::path(what);
  if (what == "latest" && ckpt::list_checkpoints(source).empty()) {
    log_->message("resume = latest: no checkpoint in " + source.string() + ", starting at step 0");
    if (data_) log_->truncate_from(0);  // what a run that died before its first checkpoint logged
    return {};
  }
  ckpt::LoadRequest req;
  req.source = source;
  req.comm = world_.comm();
  for (auto& [g, lr] : engine_->trainable_groups()) req.trainable.push_back(g);
  req.optimizer = optimizer_.get();
  for (auto& g : engine_->groups())
    if (!g->trainable()) req.frozen.push_back(g);
  req.verify_frozen = true;
  req.fallback_to_previous = config_.train.fallback_to_previous;
  const ckpt::LoadResult r = ckpt::load_checkpoint(req);
  for (const auto& s : r.skipped) log_->message("skipped damaged checkpoint " + s);
  step_ = r.step;
  if (data_) {
    data_->seek(DataCursor{r.cursor.epoch, r.cursor.global_index});
    // Steps logged after this checkpoint by the run that stopped are redone now.
    log_->truncate_from(step_);
  }
  alpha_->restore(model::AlphaSchedule::State{r.alpha.value, r.alpha.step_drawn});
  if (r.rng_state) set_generator_state(*r.rng_state);
  if (r.rng_rederived) log_->message(r.rng_note);
  // Export and evaluation load checkpoints without training on: they do not resume anything.
  log_->message((data_ ? "resumed from " : "loaded checkpoint ") + r.path.string() + " at step " +
                std::to_string(step_) + " (saved on " + std::to_string(r.saved_world_size) + " rank(s), now " +
                std::to_string(world_.size()) + ")");
  return r.path.string();
}

std::map<std::string, at::Tensor> Trainer::trainable_tensors() {
  std::map<std::string, at::Tensor> out;
  for (auto& [g, lr] : engine_->trainable_groups())
    for (const auto& e : g->layout().entries) out[e.name] = g->full_tensor(e.name).to(at::kCPU, at::kFloat);
  return out;
}

}  // namespace lookahead::trainer
