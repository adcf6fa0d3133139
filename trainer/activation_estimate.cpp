// The step traced on the meta device, and the peak walk over its backward.
#include "trainer/activation_estimate.h"

#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <ATen/OpMathType.h>
#include <ATen/WrapDimUtils.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/saved_variable_hooks.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "dist/memory_estimate.h"
#include "dist/placement.h"
#include "dist/unit_runner.h"
#include "model/face/align.h"
#include "trainer/train_state.h"

namespace lookahead::trainer {
namespace {

using StorageId = const c10::StorageImpl*;

/// Tensors saved for backward while a scope is open, by storage (views of one storage count once).
struct SavedSet {
  std::unordered_map<StorageId, int64_t> bytes;
  std::vector<at::Tensor> keep;  // keeps the storages alive, so that no address is reused meanwhile
  void add(const at::Tensor& t) {
    if (!t.defined() || !t.has_storage()) return;
    if (bytes.emplace(t.storage().unsafeGetStorageImpl(), static_cast<int64_t>(t.storage().nbytes())).second)
      keep.push_back(t.detach());
  }
};

// The open scopes of this thread: the innermost receives what operations save.
thread_local std::vector<SavedSet*> t_scopes;

class RecordingHooks final : public torch::autograd::SavedVariableHooks {
 public:
  void call_pack_hook(const at::Tensor& t) override {
    saved_ = t.detach();  // detached: an output saved by its own node would otherwise form a cycle
    if (!t_scopes.empty()) t_scopes.back()->add(saved_);
  }
  at::Tensor call_unpack_hook() override { return saved_; }

 private:
  at::Tensor saved_;
};

/// The default autograd engine, except that while a scope is open on the calling thread every
/// saved tensor goes through RecordingHooks (the hook point PyTorch's Python engine uses for
/// torch.autograd.graph.saved_tensors_hooks).
class RecordingEngine final : public torch::autograd::Engine {
 public:
  std::unique_ptr<torch::autograd::SavedVariableHooks> get_default_saved_variable_hooks() override {
    if (t_scopes.empty()) return nullptr;
    return std::make_unique<RecordingHooks>();
  }
};

torch::autograd::Engine& recording_engine() {
  static auto* engine = new RecordingEngine();  // leaked: the engine's threads outlive static destruction
  return *engine;
}

void install_recording_engine() {
  static std::once_flag once;
  std::call_once(once, [] { torch::autograd::set_default_engine_stub(&recording_engine); });
}

// Shape functions for the few operators whose meta kernels PyTorch provides only in Python
// (torch._meta_registrations), so that the face networks trace from C++ too.
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_meta(const at::Tensor& input,
                                                               const std::optional<at::Tensor>& /*weight*/,
                                                               const std::optional<at::Tensor>& /*bias*/,
                                                               const std::optional<at::Tensor>& /*running_mean*/,
                                                               const std::optional<at::Tensor>& /*running_var*/,
                                                               bool training, double /*momentum*/, double /*eps*/) {
  // As the CPU kernel: per-channel statistics when training, empty ones in evaluation mode.
  const int64_t channels = training ? input.size(1) : 0;
  const auto stats = input.options().dtype(at::toOpMathType(input.scalar_type()));
  return {at::empty_like(input), at::empty({channels}, stats), at::empty({channels}, stats)};
}

at::Tensor where_meta(const at::Tensor& condition, const at::Tensor& self, const at::Tensor& other) {
  const auto shape = at::infer_size(at::infer_size(condition.sizes(), self.sizes()), other.sizes());
  return at::empty(shape, self.options().dtype(at::result_type(self, other)).device(at::kMeta));
}

at::Tensor index_select_meta(const at::Tensor& self, int64_t dim, const at::Tensor& index) {
  std::vector<int64_t> shape = self.sizes().vec();
  if (!shape.empty()) shape[static_cast<size_t>(at::maybe_wrap_dim(dim, self.dim()))] = index.numel();
  return at::empty(shape, self.options());
}

at::Tensor grid_sampler_2d_meta(const at::Tensor& input, const at::Tensor& grid, int64_t /*interpolation*/,
                                int64_t /*padding*/, bool /*align_corners*/) {
  return at::empty({input.size(0), input.size(1), grid.size(1), grid.size(2)}, input.options());
}

// Attention: meta tensors would take PyTorch's math path, which saves the [B, H, N, M] attention
// probabilities; the runs this estimate stands for take the fused path (the CPU's flash kernel,
// flash / memory-efficient attention on GPUs), which saves q, k, v, the output and the [B, H, N]
// log-sum-exp only. So on meta, scaled_dot_product_attention is routed, above autograd, to the
// CPU flash operator (whose autograd formula saves exactly those), and that gets a shape function.
at::Tensor sdpa_autograd_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const std::optional<at::Tensor>& mask, double dropout, bool causal,
                              std::optional<double> scale, bool /*enable_gqa*/) {
  return std::get<0>(at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout, causal, mask, scale));
}

std::tuple<at::Tensor, at::Tensor> flash_attention_meta(const at::Tensor& q, const at::Tensor& /*k*/,
                                                        const at::Tensor& v, double /*dropout*/, bool /*causal*/,
                                                        const std::optional<at::Tensor>& /*mask*/,
                                                        std::optional<double> /*scale*/) {
  // q [B, H, N, d], v [B, H, M, dv] -> output [B, H, N, dv], logsumexp [B, H, N] in float32.
  return {at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options()),
          at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat))};
}

std::vector<int64_t> ints(c10::SymIntArrayRef v) { return c10::asIntArrayRefSlow(v, __FILE__, __LINE__).vec(); }

at::Tensor convolution_meta(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& /*bias*/, c10::SymIntArrayRef stride_,
                            c10::SymIntArrayRef padding_, c10::SymIntArrayRef dilation_, bool transposed,
                            c10::SymIntArrayRef output_padding_, c10::SymInt groups_) {
  const auto stride = ints(stride_), padding = ints(padding_), dilation = ints(dilation_);
  const auto output_padding = ints(output_padding_);
  const int64_t groups = groups_.expect_int();
  const int64_t spatial = input.dim() - 2;
  auto at_or_last = [](const std::vector<int64_t>& v, int64_t i) {
    return v.empty() ? 0 : v[std::min<size_t>(i, v.size() - 1)];
  };
  std::vector<int64_t> shape{input.size(0), transposed ? weight.size(1) * groups : weight.size(0)};
  for (int64_t i = 0; i < spatial; ++i) {
    const int64_t in = input.size(i + 2), k = weight.size(i + 2);
    const int64_t s = std::max<int64_t>(1, at_or_last(stride, i)), p = at_or_last(padding, i);
    const int64_t d = std::max<int64_t>(1, at_or_last(dilation, i));
    shape.push_back(transposed ? (in - 1) * s - 2 * p + d * (k - 1) + at_or_last(output_padding, i) + 1
                               : (in + 2 * p - d * (k - 1) - 1) / s + 1);
  }
  return at::empty(shape, input.options());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_meta(const at::Tensor& input,
                                                               const std::optional<at::Tensor>& /*weight*/,
                                                               const std::optional<at::Tensor>& /*bias*/, c10::SymInt n,
                                                               c10::SymInt /*c*/, c10::SymInt /*hw*/, int64_t group,
                                                               double /*eps*/) {
  const auto stats = input.options();
  return {at::empty_like(input), at::empty({n.expect_int(), group}, stats), at::empty({n.expect_int(), group}, stats)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_meta(const at::Tensor& input, c10::SymIntArrayRef normalized,
                                                               const std::optional<at::Tensor>& /*weight*/,
                                                               const std::optional<at::Tensor>& /*bias*/,
                                                               double /*eps*/) {
  std::vector<int64_t> stat_shape = input.sizes().vec();
  for (size_t i = 0; i < normalized.size(); ++i) stat_shape[stat_shape.size() - 1 - i] = 1;
  const auto stats = input.options().dtype(at::toOpMathType(input.scalar_type()));
  return {at::empty_like(input), at::empty(stat_shape, stats), at::empty(stat_shape, stats)};
}

at::Tensor relu_meta(const at::Tensor& self) { return at::empty_like(self); }
at::Tensor& relu_inplace_meta(at::Tensor& self) { return self; }

at::Tensor prelu_meta(const at::Tensor& self, const at::Tensor& /*weight*/) { return at::empty_like(self); }

at::Tensor adaptive_avg_pool2d_meta(const at::Tensor& self, c10::SymIntArrayRef output_size) {
  std::vector<int64_t> shape = self.sizes().vec();
  const auto out = ints(output_size);
  shape[shape.size() - 2] = out[0];
  shape[shape.size() - 1] = out[1];
  return at::empty(shape, self.options());
}

at::Tensor mse_loss_meta(const at::Tensor& self, const at::Tensor& target, int64_t reduction) {
  if (reduction != 0) return at::empty({}, self.options());
  return at::empty(at::infer_size(self.sizes(), target.sizes()), self.options());
}

}  // namespace

void register_meta_kernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Replacing a registered kernel warns; here it is intended. Registering one PyTorch lacks
    // in C++ does not.
    struct Quiet final : c10::WarningHandler {
      void process(const c10::Warning&) override {}
    } quiet;
    c10::WarningUtils::WarningHandlerGuard guard(&quiet);
    static auto* lib = new torch::Library(torch::Library::IMPL, "aten", c10::DispatchKey::Meta, __FILE__, __LINE__);
    lib->impl("native_batch_norm", batch_norm_meta);
    lib->impl("where.self", where_meta);
    lib->impl("index_select", index_select_meta);
    lib->impl("grid_sampler_2d", grid_sampler_2d_meta);
    lib->impl("native_group_norm", group_norm_meta);
    lib->impl("native_layer_norm", layer_norm_meta);
    lib->impl("relu", relu_meta);
    lib->impl("relu_", relu_inplace_meta);
    lib->impl("_prelu_kernel", prelu_meta);
    lib->impl("_adaptive_avg_pool2d", adaptive_avg_pool2d_meta);
    lib->impl("mse_loss", mse_loss_meta);
    lib->impl("_scaled_dot_product_flash_attention_for_cpu", flash_attention_meta);
    // This replaces PyTorch's: its composite convolution reaches convolution_overrideable on meta.
    lib->impl("convolution", convolution_meta);
    static auto* autograd =
        new torch::Library(torch::Library::IMPL, "aten", c10::DispatchKey::AutogradMeta, __FILE__, __LINE__);
    autograd->impl("scaled_dot_product_attention", sdpa_autograd_meta);
  });
}

namespace {

class Scope {
 public:
  explicit Scope(SavedSet& s) { t_scopes.push_back(&s); }
  ~Scope() { t_scopes.pop_back(); }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
};

/// One unit call of the traced step.
struct TracedCall {
  std::string unit;
  int branch = 0;
  bool with_grad = false;
  SavedSet inputs;     // every defined input (the checkpointed function keeps them all)
  SavedSet saved;      // what the unit's operations save when run with gradients
  double grad_io = 0;  // bytes of the gradients of its outputs and of its inputs that need one
  Flops flops;
};

/// Runs each unit in place on meta tensors, with the engine's rule for which calls get a backward.
class TraceRunner final : public dist::UnitRunner {
 public:
  explicit TraceRunner(std::set<std::string> trainable_units) : trainable_(std::move(trainable_units)) {}

  std::vector<at::Tensor> run(const std::string& unit, const dist::UnitFn& fn,
                              const std::vector<at::Tensor>& inputs) override {
    TracedCall c;
    c.unit = unit;
    c.branch = branch;
    bool any_grad = false;
    for (const auto& t : inputs) {
      if (!t.defined()) continue;
      any_grad |= t.requires_grad();
      c.inputs.add(t);
      if (t.requires_grad()) c.grad_io += static_cast<double>(t.nbytes());
    }
    c.with_grad = at::GradMode::is_enabled() && (any_grad || trainable_.contains(unit));
    std::vector<at::Tensor> out;
    FlopCounter counter;
    if (c.with_grad) {
      Scope scope(c.saved);
      out = fn(inputs);
    } else {
      at::NoGradGuard no_grad;
      out = fn(inputs);
    }
    c.flops = counter.flops();
    for (const auto& t : out)
      if (t.defined() && t.requires_grad()) c.grad_io += static_cast<double>(t.nbytes());
    calls.push_back(std::move(c));
    return out;
  }

  int branch = 1;
  std::vector<TracedCall> calls;

 private:
  std::set<std::string> trainable_;
};

double bytes_of(const std::unordered_map<StorageId, int64_t>& m) {
  double b = 0;
  for (const auto& [id, n] : m) b += static_cast<double>(n);
  return b;
}

/// The branch's backward, walked in reverse call order.
BranchPeak walk_branch(const std::vector<TracedCall>& calls, int branch, const SavedSet& glue,
                       const std::unordered_set<StorageId>& weights, const std::set<std::string>& kept_units,
                       const std::map<std::string, dist::UnitElements>& elements, double compute_bytes,
                       int64_t world_size, std::set<std::string>& has_grad_shard, double forward_in_flight,
                       double in_flight_before, double& in_flight_after) {
  std::vector<size_t> idx;
  for (size_t i = 0; i < calls.size(); ++i)
    if (calls[i].branch == branch && calls[i].with_grad) idx.push_back(i);
  auto trainable = [&](const std::string& unit) -> int64_t {
    const auto it = elements.find(unit);
    return it == elements.end() ? 0 : it->second.trainable();
  };
  auto flat_bytes = [&](const std::string& unit) {
    const int64_t n = trainable(unit);
    const int64_t shard = dist::shard_elements(n, world_size);
    return 4.0 * static_cast<double>(shard * world_size + (world_size > 1 ? shard : 0));
  };

  // Live set held from forward to backward, as it grows over the forward calls.
  std::unordered_map<StorageId, int64_t> held;
  auto absorb = [&](const SavedSet& s) {
    for (const auto& [id, n] : s.bytes)
      if (!weights.contains(id)) held.emplace(id, n);
  };
  absorb(glue);
  std::vector<double> held_at(idx.size());
  for (size_t k = 0; k < idx.size(); ++k) {
    const TracedCall& c = calls[idx[k]];
    absorb(c.inputs);
    if (kept_units.contains(c.unit)) absorb(c.saved);
    held_at[k] = bytes_of(held);
  }

  BranchPeak peak;
  double in_flight = in_flight_before;
  if (!idx.empty()) {
    // The end of forward, with what was in flight during it.
    peak.total = held_at.back() + forward_in_flight;
    peak.kept = held_at.back();
    peak.in_flight = forward_in_flight;
  }
  for (size_t k = idx.size(); k-- > 0;) {
    const TracedCall& c = calls[idx[k]];
    const bool kept = kept_units.contains(c.unit);
    double recompute = 0;
    if (!kept) {
      // A recomputed unit's saved set while its backward runs, beyond what is held already.
      for (const auto& [id, n] : c.saved.bytes)
        if (!weights.contains(id) && !c.inputs.bytes.contains(id)) recompute += static_cast<double>(n);
    }
    // The unit's trainables get their compute-dtype gradients in this backward; the engine then
    // flattens them into a full fp32 buffer and reduce-scatters it (after every backward call).
    double grads = c.grad_io;
    if (trainable(c.unit) > 0) {
      grads += compute_bytes * static_cast<double>(trainable(c.unit));
      // On one rank the buffer goes straight into the gradient shard: it stays only the first
      // time in the step (as the shard); later ones are added and freed.
      if (world_size == 1 && !has_grad_shard.insert(c.unit).second)
        grads += flat_bytes(c.unit);
      else
        in_flight += flat_bytes(c.unit);
    }
    const double total = held_at[k] + recompute + grads + in_flight;
    if (total > peak.total) peak = BranchPeak{total, c.unit, held_at[k], recompute, grads, in_flight};
  }
  in_flight_after = in_flight;
  return peak;
}

}  // namespace

model::SyntheticShape activation_inputs(const TrainConfig& config, int64_t resolution) {
  model::SyntheticShape s;
  s.latent = resolution / 8;
  s.ref_pixels = resolution;
  s.prompt_tokens = 77;  // both CLIP text encoders pad to 77
  // CLIP image tokens: ViT-H/14 at 224 (16² patches + class); the tiny encoder: 32 px, patch 8.
  s.clip_tokens = config.model.preset == Preset::kTiny ? 17 : 257;
  return s;
}

ActivationEstimate estimate_activations(model::LookaheadModelConfig config, const ActivationShape& shape) {
  install_recording_engine();
  register_meta_kernels();
  if (config.lcm_lora_rank <= 0) {
    // The file's LCM-LoRA, by structure: rank 64 on PEFT's target modules.
    config.lcm_lora_rank = 64;
    config.lcm_lora_select = model::LookaheadModelConfig::lcm_lora_sdxl_target;
  }
  model::LookaheadModel m(config, at::kMeta);
  const double compute_bytes = m.tensor_options().dtype() == at::kBFloat16 ? 2.0 : 4.0;

  std::unordered_set<StorageId> weights;
  std::set<std::string> trainable_units;
  std::map<std::string, dist::UnitElements> elements;
  const std::vector<dist::ShardingUnit> units = m.units();
  for (const auto& e : dist::count_elements(units)) {
    if (e.trainable() > 0) trainable_units.insert(e.name);
    elements[e.name] = e;
  }
  for (const auto& u : units)
    for (const auto* role : {&u.frozen, &u.lcm, &u.adapter, &u.lora})
      for (const auto& [k, t] : *role)
        if (t.has_storage()) weights.insert(t.storage().unsafeGetStorageImpl());

  TraceRunner runner(trainable_units);
  m.set_unit_runner(&runner);
  FlopCounter step_flops;  // what runs between the units; each unit call counts in its own

  // Inputs of the real shapes: host values drawn as a run draws them, moved to meta (the
  // landmarks stay on the host, as the face alignment reads them there).
  model::SyntheticBatch sb = model::synthetic_batch(config, shape.inputs, 0, 0, shape.batch);
  model::Batch b = sb.batch;
  for (at::Tensor* t : {&b.z_tgt, &b.z_ref, &b.clip_ref, &b.clip_uncond, &b.tgt_prompt, &b.tgt_pooled, &b.ref_prompt,
                        &b.ref_pooled, &b.time_ids, &b.ref_id})
    if (t->defined()) *t = t->to(at::kMeta);
  const model::StepDraw draw = m.draw(0, 0, shape.batch, 0, shape.batch, {4, shape.inputs.latent, shape.inputs.latent});

  // The reference identity a step starts with: ArcFace of the aligned reference photo, no gradient.
  {
    runner.branch = 0;
    const int64_t pixels = 8 * shape.inputs.latent;
    const at::Tensor photo = at::empty({shape.batch, 3, pixels, pixels}, at::TensorOptions().device(at::kMeta));
    const at::Tensor landmarks =
        model::face::arcface_template(static_cast<double>(pixels)).unsqueeze(0).repeat({shape.batch, 1, 1});
    const at::Tensor landmarks_kept = b.ref_landmarks;
    m.set_reference(b, photo, landmarks);
    b.ref_landmarks = landmarks_kept;
  }
  // The variant's step (docs/ablations.md): an x0 preview decodes branch 1's own x̂0, and without
  // a lookahead loss branch 2 does not run.
  const bool x0 = config.lookahead_branch() && config.preview == model::PreviewKind::kX0;
  SavedSet glue1, glue2;
  model::DiffusionBranch branch1;
  {
    Scope scope(glue1);
    runner.branch = 1;
    branch1 = m.diffusion_branch(b, draw, x0);
  }
  if (config.lookahead_branch()) {
    Scope scope(glue2);
    runner.branch = 2;
    if (x0)
      (void)m.x0_lookahead_loss(b, branch1);
    else
      (void)m.lookahead_loss(b, draw, 0.5);
  }
  m.set_unit_runner(nullptr);

  ActivationEstimate est;
  est.flops = step_flops.flops();
  for (const auto& c : runner.calls) {
    est.calls.push_back({c.unit, c.branch, c.with_grad, c.flops});
    est.flops += c.flops;
  }
  est.unit_calls = static_cast<int64_t>(runner.calls.size());
  for (const auto& c : runner.calls) {
    if (!c.with_grad) continue;
    ++est.backward_calls;
    if (shape.kept_units.contains(c.unit)) continue;
    double s = 0;
    for (const auto& [id, n] : c.saved.bytes)
      if (!weights.contains(id) && !c.inputs.bytes.contains(id)) s += static_cast<double>(n);
    if (s > est.largest_recompute) {
      est.largest_recompute = s;
      est.largest_recompute_unit = c.unit;
    }
  }
  double after1 = 0, after2 = 0;
  std::set<std::string> has_grad_shard;  // one rank: units whose gradient shard exists
  est.diffusion = walk_branch(runner.calls, 1, glue1, weights, shape.kept_units, elements, compute_bytes,
                              shape.world_size, has_grad_shard, 0.0, 0.0, after1);
  // Sum mode: branch 1's reductions are taken between branch 2's forward and its backward, which
  // leaves their gradient shards; alternate mode steps the optimizer (and zeroes them) in between.
  double shards1 = 0;
  if (shape.mode == LossMode::kAlternate) {
    has_grad_shard.clear();
  } else {
    std::set<std::string> reduced;
    for (const auto& c : runner.calls)
      if (c.branch == 1 && c.with_grad && elements.contains(c.unit) && elements.at(c.unit).trainable() > 0 &&
          reduced.insert(c.unit).second)
        shards1 += 4.0 * static_cast<double>(dist::shard_elements(elements.at(c.unit).trainable(), shape.world_size));
  }
  est.lookahead =
      walk_branch(runner.calls, 2, glue2, weights, shape.kept_units, elements, compute_bytes, shape.world_size,
                  has_grad_shard, shape.mode == LossMode::kSum ? after1 : 0.0, shards1, after2);
  est.in_flight_end = after2;
  for (const auto& c : runner.calls) {
    if (c.branch > 0) (c.branch == 1 ? est.diffusion_units : est.lookahead_units).insert(c.unit);
    ++est.uses[c.unit].forward_calls;
    est.uses[c.unit].backward_calls += c.with_grad;
  }
  // The AdamW update of one group makes two temporaries of its shard (sqrt, then the division).
  double largest_shard = 0;
  for (const auto& [name, e] : elements)
    largest_shard = std::max({largest_shard, static_cast<double>(dist::shard_elements(e.adapter, shape.world_size)),
                              static_cast<double>(dist::shard_elements(e.lora, shape.world_size))});
  est.optimizer = 2 * 4.0 * largest_shard;
  return est;
}

StepMemoryPrediction predict_step_memory(const TrainConfig& c, const model::LookaheadModelConfig& model,
                                         int64_t world_size, int64_t ranks_per_node, int64_t resolution,
                                         const std::optional<model::SyntheticShape>& inputs) {
  StepMemoryPrediction p;
  // Shapes only; an LCM-LoRA that a file would bring at load is counted by its structure.
  model::LookaheadModelConfig counted = model;
  if (counted.lcm_lora_rank <= 0) {
    counted.lcm_lora_rank = 64;
    counted.lcm_lora_select = model::LookaheadModelConfig::lcm_lora_sdxl_target;
  }
  std::vector<dist::UnitElements> units;
  {
    model::LookaheadModel m(counted, at::kMeta);
    units = dist::count_elements(m.units());
  }
  p.units = static_cast<int64_t>(units.size());
  for (const auto& u : units) {
    p.frozen += u.frozen;
    p.lcm += u.lcm;
    p.adapter += u.adapter;
    p.lora += u.lora;
  }
  dist::ShardingLayout& layout = p.layout;
  layout.world_size = world_size;
  layout.frozen_shards =
      dist::frozen_shard_ranks(c.dist.placement, static_cast<int>(world_size), static_cast<int>(ranks_per_node));
  layout.frozen_bytes = model.dtype == at::kBFloat16 ? 2.0 : 4.0;
  layout.compute_bytes = layout.frozen_bytes;
  layout.ring_units = c.dist.max_gathered_units;
  std::vector<std::string> names;
  for (const auto& u : units) names.push_back(u.name);
  layout.kept_units = kept_activation_units(c.dist.recompute, names);
  layout.replicated_units = replicate_unit_names(c.dist);
  for (const auto& name : layout.replicated_units) {
    if (std::find(names.begin(), names.end(), name) != names.end()) continue;
    std::string all;
    for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
    TORCH_CHECK(false, "dist.replicate_units names '", name, "', which is no unit of this model; its units: ", all);
  }
  p.held = dist::held_bytes(units, layout);
  p.base = p.held.frozen + p.held.lcm + p.held.master + p.held.adam;

  ActivationShape shape;
  shape.batch = c.train.batch_per_rank;
  shape.inputs = inputs.value_or(activation_inputs(c, resolution));
  shape.world_size = world_size;
  shape.mode = c.loss.mode;
  shape.kept_units = layout.kept_units;
  p.activations = estimate_activations(model, shape);
  // Gathered weights while a branch runs: its kept units from their forward to their backward,
  // and the ring's `ring_units` largest of its recomputed units.
  auto gathered = [&](const std::set<std::string>& called) {
    double kept = 0;
    std::vector<double> ring;
    for (const auto& u : units) {
      if (!called.contains(u.name)) continue;
      const double b = dist::gathered_bytes(u, layout);
      if (layout.kept_units.contains(u.name))
        kept += b;
      else
        ring.push_back(b);
    }
    std::sort(ring.begin(), ring.end(), std::greater<>());
    for (size_t i = 0; i < ring.size() && static_cast<int64_t>(i) < layout.ring_units; ++i) kept += ring[i];
    return kept;
  };
  p.diffusion_weights = gathered(p.activations.diffusion_units);
  dist::TrafficLayout traffic;
  traffic.sharding = layout;
  traffic.ranks_per_node = ranks_per_node;
  traffic.keep_gathered = c.dist.keep_gathered;
  p.traffic = dist::step_traffic(units, p.activations.uses, traffic);
  p.unit_elements = units;
  p.lookahead_weights = gathered(p.activations.lookahead_units);
  return p;
}

}  // namespace lookahead::trainer
