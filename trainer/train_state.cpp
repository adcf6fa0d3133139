// The sharded Lookahead: construction from the configuration, the training step, checkpoints.
#include "trainer/train_state.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

#include "checkpoints/checkpoint.h"
#include "common/clock.h"
#include "trainer/phase_clock.h"
#include "trainer/run_variant.h"
#include "trainer/tensor_memory.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace lookahead::trainer {

namespace {

using common::Clock;
using common::seconds_since;

std::string cpu_generator_state() {
  at::Tensor state = at::detail::getDefaultCPUGenerator().get_state();  // uint8 bytes
  return std::string(reinterpret_cast<const char*>(state.data_ptr<uint8_t>()), static_cast<size_t>(state.numel()));
}

void set_cpu_generator_state(const std::string& bytes) {
  at::Tensor state = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::memcpy(state.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the default generator
  generator.set_state(state);
}

/// The values of `loaded` (trainable tensors as the weight files hold them) that the trainables
/// of `units` hold only rounded: a model in bf16 loading an fp16 or fp32 file. Their fp32 masters
/// start from these instead of from the rounding.
std::map<std::string, at::Tensor> rounded_trainables(const std::vector<dist::ShardingUnit>& units,
                                                     const std::map<std::string, at::Tensor>& loaded) {
  std::map<std::string, at::Tensor> out;
  for (const auto& u : units)
    for (const auto* role : {&u.adapter, &u.lora})
      for (const auto& [key, t] : *role) {
        const auto it = loaded.find(key);
        if (it == loaded.end()) continue;
        const at::Tensor file = it->second.to(t.device());
        // Held exactly (an fp32 model, or a file in the model's dtype): nothing to restore. Not the
        // file's rounding (changed by before_sharding): the change stands.
        if (at::equal(t.to(at::kFloat), file.to(at::kFloat)) || !at::equal(t, file.to(t.scalar_type()))) continue;
        out.emplace(key, it->second);
      }
  return out;
}

}  // namespace

model::LookaheadModelConfig model_config(const TrainConfig& c, const c10::Device& device) {
  const bool tiny = c.model.preset == Preset::kTiny;
  model::LookaheadModelConfig m = tiny ? model::LookaheadModelConfig::tiny() : model::LookaheadModelConfig::sdxl();
  if (!c.model.unet_config.empty()) m.unet = model::unet::UNetConfig::from_file(c.model.unet_config);
  if (!tiny) m.arcface = c.model.arcface_network;
  // A named LCM-LoRA file replaces the tiny preset's random one (two would be refused at load).
  if (!c.model.lcm_lora.empty()) m.lcm_lora_rank = 0;
  m.kv_encoder.lora_rank(c.model.encoder_lora_rank).kv_lora_rank(c.model.kv_lora_rank);
  m.adapter_drop_p = c.loss.adapter_drop;
  m.kv_drop_p = c.loss.kv_drop;
  m.lambda_id = c.loss.lambda_id;
  m.use_kv_encoder = c.model.kv_encoder == model::KvEncoderMode::kOn;
  m.preview = c.loss.preview;
  m.lambda_dreamsim = c.loss.lambda_dreamsim;
  m.dreamsim = tiny ? model::vision::DreamSimOptions::tiny() : model::vision::DreamSimOptions::ensemble();
  m.diffusion_timestep_a = c.loss.timestep_a_diffusion;
  m.lcm_timestep_a = c.loss.timestep_a_lookahead;
  m.ip_scale = c.model.ip_scale;
  m.dtype = frozen_in_bf16(c.model.dtype, device.is_cuda()) ? at::kBFloat16 : at::kFloat;
  return m;
}

dist::EngineOptions engine_options(const DistConfig& c, at::ScalarType model_dtype) {
  dist::EngineOptions eo;
  eo.placement = c.placement;
  eo.prefetch = c.prefetch;
  eo.max_gathered_units = c.max_gathered_units;
  eo.keep_gathered = c.keep_gathered;
  eo.replicate_units = replicate_unit_names(c);
  eo.frozen_dtype = model_dtype;
  eo.trainable_compute_dtype = model_dtype;
  return eo;
}

std::set<std::string> replicate_unit_names(const DistConfig& c) {
  std::set<std::string> out;
  std::stringstream in(c.replicate_units);
  for (std::string name; std::getline(in, name, ',');)
    if (!name.empty()) out.insert(name);
  return out;
}

std::set<std::string> kept_activation_units(Recompute policy, const std::vector<std::string>& unit_names) {
  std::set<std::string> out;
  for (const auto& name : unit_names) {
    // diffusers' enable_gradient_checkpointing checkpoints each ResnetBlock2D and transformer
    // block; conv_in, the embeddings, the samplers and conv_out run plainly.
    const bool block = name.find(".resnets.") != std::string::npos || name.find(".attentions.") != std::string::npos;
    if (policy == Recompute::kNone || (policy == Recompute::kBlocks && !block)) out.insert(name);
  }
  return out;
}

TrainState::TrainState(dist::World& world, const TrainConfig& config, TrainStateOptions options)
    : world_(world), config_(config) {
  const auto t_setup = Clock::now();
  const c10::Device device = world.device();
  // Ranks of a node share its cores; more threads than cores only add contention.
  const int64_t cores = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  at::set_num_threads(static_cast<int>(config.train.threads > 0 ? config.train.threads
                                                                 : std::max<int64_t>(1, cores / world.local_size())));
  // Random initial values (tiny preset, LoRAs) must be identical on every rank.
  at::manual_seed(config.train.seed);
  // The files the configuration names (none for the tiny preset unless set), unless the caller
  // brought its own model.
  model::LookaheadWeightFiles files;
  if (!options.model)
    files = {config.model.unet_weights, config.model.ip_adapter, config.model.lcm_lora,
             config.model.taesd,        config.model.arcface,    config.model.dreamsim};
  model_ = std::make_unique<model::LookaheadModel>(options.model ? *options.model : model_config(config, device), device,
                                                   files);
  std::map<std::string, at::Tensor> loaded = model_->take_file_trainables();
  if (options.before_sharding) options.before_sharding(*model_);

  std::vector<dist::ShardingUnit> units = model_->units();
  const std::map<std::string, at::Tensor> exact = rounded_trainables(units, loaded);
  loaded.clear();
  dist::EngineOptions eo = engine_options(config.dist, model_->tensor_options().dtype().toScalarType());
  std::vector<std::string> unit_names;
  for (const auto& u : units) unit_names.push_back(u.name);
  eo.keep_activations = kept_activation_units(config.dist.recompute, unit_names);
  engine_ = std::make_unique<dist::ShardedEngine>(world, std::move(units), eo);
  model_->set_unit_runner(engine_.get());
  // The shards of trainable groups are fp32 (the optimizer's masters, added below): they take the
  // files' values, not the rounding the bf16 modules handed over.
  for (auto& [g, lr] : engine_->trainable_groups())
    for (const auto& e : g->layout().entries)
      if (const auto it = exact.find(e.name); it != exact.end()) g->assign(e.name, it->second);

  if (options.with_optimizer) {
    dist::AdamWOptions ao;
    ao.beta1 = config.optim.beta1;
    ao.beta2 = config.optim.beta2;
    ao.eps = config.optim.eps;
    optimizer_ = std::make_unique<dist::ShardedAdamW>(
        std::vector<dist::AdamWGroupOptions>{{"adapter", config.optim.lr_adapter, config.optim.weight_decay},
                                             {"lora", config.optim.lr_lora, config.optim.weight_decay}},
        ao);
    for (auto& [g, lr] : engine_->trainable_groups()) optimizer_->add(g, lr);
  }

  model::AlphaScheduleOptions alpha;
  alpha.full_prob = config.loss.alpha_p_one;
  alpha.min_scale = config.loss.alpha_min;
  alpha.every = config.loss.alpha_every;
  alpha_ = std::make_unique<model::AlphaSchedule>(config.train.seed, alpha);
#if defined(__GLIBC__)
  // Loading freed gigabytes of file-dtype staging tensors; glibc keeps such pages resident in its
  // arenas unless asked, and at full size that is several GiB no step ever uses again.
  malloc_trim(0);
#endif
  setup_s_ = seconds_since(t_setup);
}

TrainState::~TrainState() {
  if (model_) model_->set_unit_runner(nullptr);
}

model::StepDraw TrainState::draw(int64_t per_rank, const std::vector<int64_t>& latent_shape) const {
  return model_->draw(config_.train.seed, step_, per_rank * world_.size(), world_.rank() * per_rank, per_rank,
                      latent_shape);
}

double TrainState::alpha() { return alpha_->at(step_); }

StepStats TrainState::step(const model::Batch& batch, const model::StepDraw& draw, double alpha) {
  const model::LookaheadModelConfig& mc = model_->config();
  const bool branch2 = mc.lookahead_branch();
  const bool x0 = branch2 && mc.preview == model::PreviewKind::kX0;
  TORCH_CHECK(mc.lambda_id == 0 || batch.ref_id.defined(),
              "TrainState::step: batch.ref_id is not set (LookaheadModel::set_reference first)");
  TORCH_CHECK(optimizer_, "TrainState::step: built without an optimizer (TrainStateOptions::with_optimizer)");
  const double ranks = static_cast<double>(world_.size());
  StepStats st;
  st.alpha = mc.uses_lcm() ? alpha : 0.0;
  // The identity loss is a mean over the usable samples of the whole global batch. Host values
  // go over the World's MPI communicator, whatever device the model runs on.
  const double local_valid = at::isfinite(batch.ref_landmarks).flatten(1).all(1).sum().item<double>();
  st.faces_valid = static_cast<int64_t>(dist::all_reduce_values(*world_.comm(), {local_valid}, dist::ReduceOp::kSum)[0]);

  // Phase boundaries, read after the step (on a GPU: events on the compute stream).
  PhaseClock clock(world_.device());
  const size_t t0 = clock.mark();
  std::vector<std::pair<size_t, size_t>> optimizer_spans;
  size_t diffusion_end = 0, lookahead_begin = 0, lookahead_end = 0;
  auto optimizer_step = [&] {
    const size_t t = clock.mark();
    engine_->finish_gradients();
    st.memory = engine_->memory();  // gradient shards exist until zero_grad
    const double norm = config_.optim.clip > 0 ? optimizer_->clip_grad_norm(config_.optim.clip, world_.comm())
                                               : optimizer_->grad_norm(world_.comm());
    optimizer_->step();
    st.optimizer_state_bytes = optimizer_->state_bytes();
    optimizer_->zero_grad();
    optimizer_spans.emplace_back(t, clock.mark());
    return norm;
  };
  // Alternate mode steps between the branches; with no second branch there is one step.
  const bool alternate = config_.loss.mode == LossMode::kAlternate && branch2;
  const bool count_tensors = counting_cpu_tensor_bytes() && !world_.device().is_cuda();
  auto phase_peak = [&](int64_t& out) {
    if (!count_tensors) return;
    out = cpu_tensor_bytes().peak;
    reset_cpu_tensor_peak();
  };
  // Rescale the local identity mean so that averaging over ranks gives the mean over the global
  // batch's usable samples.
  at::Tensor id_global, dreamsim_global;  // the branch's terms, each averaging to its global mean over ranks
  auto global_loss = [&](const model::LookaheadLoss& l) {
    const double valid = static_cast<double>(std::max<int64_t>(l.valid_count, 1));
    id_global = l.id_loss * (st.faces_valid > 0 ? valid * ranks / static_cast<double>(st.faces_valid) : 0.0);
    // DreamSim is a mean over every sample: ranks hold equal shares, so their average is global.
    dreamsim_global = l.dreamsim_loss.defined() ? l.dreamsim_loss : at::zeros_like(id_global);
    return id_global + dreamsim_global;
  };
  if (count_tensors) reset_cpu_tensor_peak();
  at::Tensor l1, l2_global;
  if (x0) {
    // The x̂0 ablation: the preview is decoded from branch 1's forward, so one backward takes both.
    model::DiffusionBranch b1 = model_->diffusion_branch(batch, draw, /*with_x0=*/true);
    l1 = b1.loss;
    lookahead_begin = clock.mark();
    l2_global = global_loss(model_->x0_lookahead_loss(batch, b1));
    lookahead_end = clock.mark();  // the preview's forward; its backward is in branch 1's
    (l1 + l2_global).backward();
    phase_peak(st.tensor_peak_diffusion);
    st.tensor_peak_lookahead = st.tensor_peak_diffusion < 0 ? -1 : 0;
    diffusion_end = clock.mark();
  } else {
    // Branch 1: diffusion.
    l1 = model_->diffusion_loss(batch, draw);
    l1.backward();
    phase_peak(st.tensor_peak_diffusion);
    diffusion_end = clock.mark();
    if (alternate) st.grad_norm_diffusion = optimizer_step();
    if (branch2) {
      // Branch 2: lookahead; in sum mode branch 1's reduce-scatters are in flight meanwhile.
      lookahead_begin = clock.mark();
      model::LookaheadLoss l2 = model_->lookahead_loss(batch, draw, alpha);
      // Branch 1's reductions had this forward to finish in; taking them now frees their full
      // gradient buffers before branch 2's backward adds its own.
      if (!alternate) engine_->finish_reductions();
      l2_global = global_loss(l2);
      l2_global.backward();
      phase_peak(st.tensor_peak_lookahead);
      lookahead_end = clock.mark();
    } else {
      st.tensor_peak_lookahead = st.tensor_peak_diffusion < 0 ? -1 : 0;
      l2_global = id_global = dreamsim_global = at::zeros({}, at::TensorOptions().dtype(at::kFloat));
    }
  }
  st.grad_norm = optimizer_step();
  phase_peak(st.tensor_peak_optimizer);
  engine_->end_step();
  const size_t t_end = clock.mark();
  for (const auto& [from, to] : optimizer_spans) st.optimizer_s += clock.seconds(from, to);
  st.lookahead_s = clock.seconds(lookahead_begin, lookahead_end);  // 0 without the branch (equal marks)
  st.diffusion_s = clock.seconds(t0, diffusion_end) - (x0 ? st.lookahead_s : 0.0);
  st.compute_s = clock.seconds(t0, t_end) - st.optimizer_s;
  engine_->times().optimizer_s = st.optimizer_s;
  st.times = engine_->times();
  // Counted from the end of the previous step, so that the work before this call (the reference
  // identity's ArcFace) belongs to the step it serves.
  engine_->reset_times();

  // Logged values are the global batch's, whatever the rank count: loss means over ranks (each a
  // mean over its equal share) and timestep means over every sample. The losses live on the
  // model's device (CUDA on GPUs); their values cross to the host here.
  const std::vector<double> sums = dist::all_reduce_values(
      *world_.comm(),
      {l1.detach().item<double>(), l2_global.detach().item<double>(),
       draw.timesteps.to(at::kDouble).sum().item<double>(), draw.lcm_timesteps.to(at::kDouble).sum().item<double>(),
       static_cast<double>(batch.size()), id_global.detach().item<double>(), dreamsim_global.detach().item<double>()},
      dist::ReduceOp::kSum);
  st.loss_diffusion = sums[0] / ranks;
  st.loss_lookahead = sums[1] / ranks;
  st.loss_id = sums[5] / ranks;
  st.loss_dreamsim = sums[6] / ranks;
  st.t_diffusion_mean = sums[2] / sums[4];
  st.t_lookahead_mean = sums[3] / sums[4];
  ++step_;
  return st;
}

std::filesystem::path TrainState::checkpoint_dir() const { return std::filesystem::path(config_.train.out) / "checkpoints"; }

SavedCheckpoint TrainState::save(const data::Cursor& cursor) {
  TORCH_CHECK(optimizer_, "TrainState::save: built without an optimizer (TrainStateOptions::with_optimizer)");
  ckpt::SaveRequest req;
  req.dir = checkpoint_dir();
  req.step = step_;
  req.comm = world_.comm();
  for (auto& [g, lr] : engine_->trainable_groups()) req.trainable.push_back(g);
  req.optimizer = optimizer_.get();
  const std::vector<std::string> sources{config_.model.unet_weights, config_.model.lcm_lora, config_.model.taesd,
                                         config_.model.arcface, config_.model.dreamsim};
  for (auto& g : engine_->groups())
    if (!g->trainable()) req.frozen.push_back(ckpt::FrozenGroupRef{g, sources});
  req.config_text = config_.resolved_ini;
  req.rng_state = cpu_generator_state();
  req.cursor = cursor;
  req.alpha = ckpt::AlphaState{alpha_->state().alpha, alpha_->state().drawn_at};
  req.keep_last = static_cast<int>(config_.train.keep_checkpoints);
  const ckpt::SaveResult r = ckpt::save_checkpoint(req);
  return SavedCheckpoint{r.path.string(), r.bytes, r.seconds};
}

LoadedState TrainState::load(const std::string& what) {
  const std::filesystem::path source = what == "latest" ? checkpoint_dir() : std::filesystem::path(what);
  if (what == "latest" && ckpt::list_checkpoints(source).empty()) return {};
  ckpt::LoadRequest req;
  req.source = source;
  req.comm = world_.comm();
  for (auto& [g, lr] : engine_->trainable_groups()) req.trainable.push_back(g);
  req.optimizer = optimizer_.get();
  for (auto& g : engine_->groups())
    if (!g->trainable()) req.frozen.push_back(g);
  req.verify_frozen = true;
  req.fallback_to_previous = config_.train.fallback_to_previous;
  req.check_config = [now = RunVariant::of(config_)](const std::string& text) {
    return variant_mismatch(RunVariant::from_ini(text), now);
  };
  const ckpt::LoadResult r = ckpt::load_checkpoint(req);
  step_ = r.step;
  alpha_->restore(model::AlphaSchedule::State{r.alpha.value, r.alpha.step_drawn});
  if (r.rng_state) set_cpu_generator_state(*r.rng_state);
  LoadedState out;
  out.path = r.path.string();
  out.cursor = r.cursor;
  out.skipped = r.skipped;
  if (r.rng_rederived) out.rng_note = r.rng_note;
  out.saved_world_size = r.saved_world_size;
  return out;
}

std::string describe_load(const std::string& verb, const LoadedState& loaded, int64_t step, int world_size) {
  return verb + " " + loaded.path + " at step " + std::to_string(step) + " (saved on " +
         std::to_string(loaded.saved_world_size) + " rank(s), now " + std::to_string(world_size) + ")";
}

std::map<std::string, at::Tensor> TrainState::trainable_tensors() {
  std::map<std::string, at::Tensor> out;
  for (auto& [g, lr] : engine_->trainable_groups())
    for (const auto& e : g->layout().entries) out[e.name] = g->full_tensor(e.name).to(at::kCPU, at::kFloat);
  return out;
}

}  // namespace lookahead::trainer
