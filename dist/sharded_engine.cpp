// Sharded engine: unit groups, the checkpointed unit function, prefetch and gradient reduction.
#include "dist/sharded_engine.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <thread>

#include "common/clock.h"

namespace lookahead::dist {

namespace {

using common::Clock;
using common::seconds_since;

}  // namespace

struct ShardedEngine::Unit {
  std::string name;
  std::vector<std::shared_ptr<FlatParamGroup>> frozen;
  std::vector<std::pair<std::shared_ptr<FlatParamGroup>, std::string>> trainable;
  enum class State { kReleased, kPending, kBound } state = State::kReleased;
  int64_t pending_backward = 0;  // forward calls of this step whose backward has not run
  bool running = false;
  bool keep_activations = false;  // forward saves its graph, backward does not recompute
  // Every group lives whole on this rank in its compute dtype (one rank, or a replicated frozen
  // group): binding is free and holds no extra memory, so the unit stays bound for good and is
  // never gathered, bound or released again.
  bool resident = false;
  bool has_trainables() const { return !trainable.empty(); }
  /// A forward call's saved graph points into the bound weights: they stay until its backward.
  bool holds_activations() const { return keep_activations && pending_backward > 0; }
  template <typename F>
  void for_each_group(F f) {
    for (auto& g : frozen) f(*g);
    for (auto& [g, lr] : trainable) f(*g);
  }
};

struct ShardedEngine::Call {
  int64_t id = 0;
  uint64_t generation = 0;
  Unit* unit = nullptr;
  UnitFn fn;
  std::vector<bool> input_defined;   // per full input
  std::vector<bool> input_grad;      // per full input: required a gradient in forward
  std::vector<bool> output_defined;  // per full output
  bool anchored = false;
  bool with_grad = false;  // an autograd node will run this call's backward
  bool backward_done = false;
  // keep_activations: the forward's graph, from detached inputs (gradient leaves where
  // input_grad) to its outputs; released by the backward.
  bool kept = false;
  std::vector<at::Tensor> kept_inputs;   // per full input (undefined where the input is)
  std::vector<at::Tensor> kept_outputs;  // per full output
};

namespace {

/// The checkpointed unit as an autograd node: forward without saved activations, backward
/// recomputes (or, for a unit that keeps its activations, runs the graph its forward kept). Tensor arguments are the defined inputs (plus an anchor for units with trainable
/// parameters, so that the node exists even when no input needs a gradient).
struct UnitFunction : public torch::autograd::Function<UnitFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, int64_t engine_address,
                                                int64_t call_id, at::TensorList args) {
    auto* engine = reinterpret_cast<ShardedEngine*>(engine_address);  // NOLINT: see saved_data below
    ShardedEngine::Call& call = engine->call(call_id);
    std::vector<at::Tensor> full;
    size_t k = 0;
    for (bool defined : call.input_defined) full.push_back(defined ? args[k++] : at::Tensor());
    ctx->save_for_backward(args.vec());
    // IValues cannot hold a raw pointer; the engine outlives every graph of its steps, and the
    // call's generation catches a graph kept past its step.
    ctx->saved_data["engine"] = engine_address;
    ctx->saved_data["call"] = call_id;
    ctx->saved_data["generation"] = static_cast<int64_t>(call.generation);
    std::vector<at::Tensor> outs = engine->forward_call(call, full);
    torch::autograd::variable_list defined;
    for (auto& o : outs)
      if (o.defined()) defined.push_back(o);
    return defined;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto* engine = reinterpret_cast<ShardedEngine*>(ctx->saved_data["engine"].toInt());  // NOLINT
    ShardedEngine::Call& call = engine->call(ctx->saved_data["call"].toInt());
    TORCH_CHECK(static_cast<int64_t>(call.generation) == ctx->saved_data["generation"].toInt(),
                "sharded engine: backward of a graph from a step that already ended (call end_step() only after "
                "backward)");
    auto saved = ctx->get_saved_variables();
    std::vector<at::Tensor> full;
    size_t k = 0;
    for (bool defined : call.input_defined) full.push_back(defined ? saved[k++] : at::Tensor());
    std::vector<at::Tensor> grads = engine->backward_call(call, full, grad_outputs);
    torch::autograd::variable_list out{at::Tensor(), at::Tensor()};  // engine address, call id
    for (size_t i = 0; i < call.input_defined.size(); ++i)
      if (call.input_defined[i]) out.push_back(grads[i]);
    if (call.anchored) out.push_back(at::Tensor());
    return out;
  }
};

}  // namespace

ShardedEngine::ShardedEngine(World& world, std::vector<ShardingUnit> units, const EngineOptions& options)
    : world_(world), options_(options) {
  TORCH_CHECK(options.max_gathered_units >= 1, "sharded engine: max_gathered_units must be >= 1, got ",
              options.max_gathered_units);
  for (const auto& name : options.keep_activations)
    TORCH_CHECK(std::any_of(units.begin(), units.end(), [&](const ShardingUnit& u) { return u.name == name; }),
                "sharded engine: keep_activations names '", name, "', which is no unit");
  for (const auto& name : options.replicate_units)
    TORCH_CHECK(std::any_of(units.begin(), units.end(), [&](const ShardingUnit& u) { return u.name == name; }),
                "sharded engine: replicate_units names '", name, "', which is no unit");
  const c10::Device device = world.device();
  CommunicatorPtr all = world.comm_for(device);
  CommunicatorPtr frozen_comm;
  switch (options.placement) {
    case Placement::kFull: frozen_comm = all; break;
    case Placement::kNode: frozen_comm = all->split(world.node_rank(), world.local_rank(), "node-shards"); break;
    case Placement::kReplicate: frozen_comm = nullptr; break;
  }
  for (auto& eu : units) {
    TORCH_CHECK(!by_name_.contains(eu.name), "sharded engine: unit '", eu.name, "' listed twice");
    auto u = std::make_unique<Unit>();
    u->name = eu.name;
    auto frozen_group = [&](const char* role, std::vector<std::pair<std::string, at::Tensor>>& params) {
      if (params.empty()) return;
      for (auto& [n, t] : params) t.set_requires_grad(false);
      auto g = std::make_shared<FlatParamGroup>(eu.name + ":" + role, std::move(params),
                                                options.replicate_units.contains(eu.name) ? nullptr : frozen_comm,
                                                options.frozen_dtype, device);
      g->set_debug_delay(options.debug_delay);
      u->frozen.push_back(std::move(g));
    };
    auto trainable_group = [&](const char* role, std::vector<std::pair<std::string, at::Tensor>>& params) {
      if (params.empty()) return;
      for (auto& [n, t] : params) t.set_requires_grad(true);
      auto g = std::make_shared<FlatParamGroup>(eu.name + ":" + role, std::move(params), all, at::kFloat, device,
                                                options.trainable_compute_dtype);
      g->set_debug_delay(options.debug_delay);
      u->trainable.emplace_back(std::move(g), role);
    };
    frozen_group("frozen", eu.frozen);
    frozen_group("lcm", eu.lcm);
    trainable_group("adapter", eu.adapter);
    trainable_group("lora", eu.lora);
    u->keep_activations = options.keep_activations.contains(eu.name);
    u->resident = true;
    u->for_each_group([&](FlatParamGroup& g) {
      const bool whole = !g.comm() || g.comm()->size() == 1;
      u->resident = u->resident && whole && g.compute_dtype() == g.storage_dtype();
    });
    by_name_[u->name] = u.get();
    units_.push_back(std::move(u));
  }
}

ShardedEngine::~ShardedEngine() {
  // The destructor also runs while a failed gather's DistError unwinds; waiting on that gather
  // here would rethrow from a noexcept destructor and end the process without its report.
  for (auto& u : units_)
    if (u->state != Unit::State::kReleased) {
      u->for_each_group([](FlatParamGroup& g) { g.abandon(); });
      u->state = Unit::State::kReleased;
    }
}

std::vector<at::Tensor> ShardedEngine::detached_inputs(const Call& call, const std::vector<at::Tensor>& inputs) {
  // Gradient leaves where the input needs a gradient, so the unit's graph ends at them.
  std::vector<at::Tensor> detached(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) continue;
    detached[i] = inputs[i].detach();
    if (call.input_grad[i]) detached[i].requires_grad_(true);
  }
  return detached;
}

ShardedEngine::Unit& ShardedEngine::unit(const std::string& name) {
  auto it = by_name_.find(name);
  TORCH_CHECK(it != by_name_.end(), "sharded engine: no unit called '", name, "'");
  return *it->second;
}

ShardedEngine::Call& ShardedEngine::call(int64_t id) {
  TORCH_CHECK(id >= 0 && id < static_cast<int64_t>(calls_.size()), "sharded engine: unknown unit call ", id,
              " (a graph used after end_step?)");
  return *calls_[static_cast<size_t>(id)];
}

int64_t ShardedEngine::gathered_units() const {
  // Resident units hold no gather buffer, and units held for their saved activations cannot give
  // way: neither takes a place in the ring.
  int64_t n = 0;
  for (const auto& u : units_) n += u->state != Unit::State::kReleased && !u->resident && !u->holds_activations();
  return n;
}

void ShardedEngine::gather(Unit& u) {
  TORCH_INTERNAL_ASSERT(u.state == Unit::State::kReleased);
  u.for_each_group([&](FlatParamGroup& g) {
    g.gather();
    ++times_.gathers;
    const int64_t bytes = g.layout().padded_numel * static_cast<int64_t>(c10::elementSize(g.compute_dtype()));
    times_.gathered_bytes += bytes;
    if (!g.replicated()) {
      ++times_.comm_gathers;
      times_.comm_gathered_bytes += bytes;
    }
  });
  u.state = Unit::State::kPending;
  int64_t held = 0;
  for (auto& other : units_)
    other->for_each_group([&](FlatParamGroup& g) { held += g.bytes().gathered_bytes; });
  peak_gathered_bytes_ = std::max(peak_gathered_bytes_, held);
}

void ShardedEngine::ensure_gathered(Unit& u) {
  if (u.state == Unit::State::kBound) return;
  if (u.state == Unit::State::kReleased) {
    // Make room: prefetched units that are not running and not kept for a backward give way.
    for (auto& other : units_) {
      if (gathered_units() < options_.max_gathered_units) break;
      if (other.get() == &u || other->running || other->state == Unit::State::kReleased || other->resident ||
          other->holds_activations())
        continue;
      if (options_.keep_gathered && other->pending_backward > 0) continue;
      release(*other);
    }
    gather(u);
  }
  auto t0 = Clock::now();
  u.for_each_group([](FlatParamGroup& g) { g.bind(); });
  times_.gather_wait_s += seconds_since(t0);
  u.state = Unit::State::kBound;
}

void ShardedEngine::release(Unit& u) {
  if (u.resident) return;  // bound for good: nothing to free
  u.for_each_group([](FlatParamGroup& g) { g.release(); });
  u.state = Unit::State::kReleased;
}

void ShardedEngine::prefetch(Unit* next) {
  if (!options_.prefetch || next == nullptr || next->state != Unit::State::kReleased) return;
  if (gathered_units() >= options_.max_gathered_units) return;
  gather(*next);
}

std::vector<at::Tensor> ShardedEngine::run(const std::string& name, const UnitFn& fn,
                                           const std::vector<at::Tensor>& inputs) {
  Unit& u = unit(name);
  ++times_.unit_calls[name];
  auto c = std::make_unique<Call>();
  c->id = static_cast<int64_t>(calls_.size());
  c->generation = generation_;
  c->unit = &u;
  c->fn = fn;
  for (const auto& t : inputs) {
    c->input_defined.push_back(t.defined());
    c->input_grad.push_back(t.defined() && t.requires_grad());
  }
  if (!order_recorded_) {
    order_.push_back(&u);
    order_names_.push_back(name);
  }
  Call& call = *c;
  calls_.push_back(std::move(c));
  // Without an input that needs a gradient and without trainable parameters no backward will
  // come (e.g. the stem of a branch): run in place, releasing right away.
  const bool any_grad = std::any_of(call.input_grad.begin(), call.input_grad.end(), [](bool g) { return g; });
  call.with_grad = at::GradMode::is_enabled() && (any_grad || u.has_trainables());
  if (!call.with_grad) return forward_call(call, inputs);

  std::vector<at::Tensor> args;
  for (const auto& t : inputs)
    if (t.defined()) args.push_back(t);
  if (u.has_trainables()) {
    call.anchored = true;
    args.push_back(at::empty({0}, at::TensorOptions().dtype(at::kFloat)).requires_grad_(true));
  }
  auto defined_outputs =
      UnitFunction::apply(reinterpret_cast<int64_t>(this), call.id, at::TensorList(args));  // NOLINT
  std::vector<at::Tensor> outs;
  size_t k = 0;
  for (bool d : call.output_defined) outs.push_back(d ? defined_outputs[k++] : at::Tensor());
  return outs;
}

std::vector<at::Tensor> ShardedEngine::forward_call(Call& call, const std::vector<at::Tensor>& inputs) {
  Unit& u = *call.unit;
  ensure_gathered(u);
  // The next calls' gathers, as many as the ring leaves room for.
  if (order_recorded_)
    for (int64_t next = call.id + 1;
         next < static_cast<int64_t>(order_.size()) && next < call.id + options_.max_gathered_units; ++next)
      prefetch(order_[static_cast<size_t>(next)]);
  u.running = true;
  auto t0 = Clock::now();
  std::vector<at::Tensor> outs;
  call.kept = call.with_grad && u.keep_activations;
  if (call.kept) {
    // The backward's recompute, done now and kept: the same detached inputs and gradient mode,
    // so the graph is the one the backward would have built.
    at::AutoGradMode grad_mode(true);
    call.kept_inputs = detached_inputs(call, inputs);
    call.kept_outputs = call.fn(call.kept_inputs);
    // The autograd function must not re-point the graph's outputs at itself: it gets aliases.
    for (const auto& o : call.kept_outputs) outs.push_back(o.defined() ? o.detach() : o);
  } else {
    at::NoGradGuard no_grad;
    outs = call.fn(inputs);
  }
  times_.compute_s += seconds_since(t0);
  u.running = false;
  call.output_defined.clear();
  for (const auto& o : outs) call.output_defined.push_back(o.defined());
  if (call.with_grad) ++u.pending_backward;
  if (!((options_.keep_gathered || call.kept) && call.with_grad)) release(u);
  return outs;
}

std::vector<at::Tensor> ShardedEngine::backward_call(Call& call, const std::vector<at::Tensor>& inputs,
                                                     const std::vector<at::Tensor>& grad_outputs) {
  Unit& u = *call.unit;
  TORCH_CHECK(!call.backward_done, "sharded engine: unit '", u.name, "' ran backward twice for one forward");
  ensure_gathered(u);
  // The next backwards are most likely the previous forward calls'; as many as the ring leaves room for.
  int64_t ahead = 0;
  for (int64_t id = call.id - 1; id >= 0 && ahead + 1 < options_.max_gathered_units; --id) {
    Call& prev = *calls_[static_cast<size_t>(id)];
    if (prev.with_grad && !prev.backward_done && prev.unit != &u) {
      prefetch(prev.unit);
      ++ahead;
    }
  }
  u.running = true;
  auto t0 = Clock::now();
  // The autograd engine runs backward functions with gradient mode off; the recompute and the
  // inner gradient need it on.
  at::AutoGradMode grad_mode(true);
  std::vector<at::Tensor> detached, outs;
  if (call.kept) {
    detached = std::move(call.kept_inputs);
    outs = std::move(call.kept_outputs);
    call.kept_inputs.clear();
    call.kept_outputs.clear();
  } else {
    detached = detached_inputs(call, inputs);
    outs = call.fn(detached);
  }
  std::vector<at::Tensor> wrt;
  std::vector<size_t> wrt_input;  // input index of each wrt entry (inputs first)
  for (size_t i = 0; i < detached.size(); ++i)
    if (call.input_grad[i]) {
      wrt.push_back(detached[i]);
      wrt_input.push_back(i);
    }
  std::vector<at::Tensor> params;
  for (auto& [g, lr] : u.trainable)
    for (const auto& p : g->params()) params.push_back(p);
  wrt.insert(wrt.end(), params.begin(), params.end());

  std::vector<at::Tensor> targets, target_grads;
  size_t k = 0;
  for (size_t j = 0; j < outs.size(); ++j) {
    if (!call.output_defined[j]) continue;
    const at::Tensor& g = grad_outputs[k++];
    if (g.defined() && outs[j].requires_grad()) {
      targets.push_back(outs[j]);
      target_grads.push_back(g);
    }
  }
  std::vector<at::Tensor> grads(inputs.size());
  if (!targets.empty() && !wrt.empty()) {
    auto g = torch::autograd::grad(targets, wrt, target_grads, /*retain_graph=*/false, /*create_graph=*/false,
                                   /*allow_unused=*/true);
    for (size_t w = 0; w < wrt_input.size(); ++w) grads[wrt_input[w]] = g[w];
    for (size_t p = 0; p < params.size(); ++p) {
      const at::Tensor& gp = g[wrt_input.size() + p];
      if (!gp.defined()) continue;
      at::Tensor& acc = params[p].mutable_grad();
      acc = acc.defined() ? acc + gp : gp;
    }
  }
  times_.compute_s += seconds_since(t0);
  u.running = false;
  call.backward_done = true;
  // A call runs backward once: what its function captured (embeddings, reference K/V) can go now
  // rather than at end_step.
  call.fn = UnitFn();
  --u.pending_backward;
  for (auto& [g, lr] : u.trainable) {
    g->reduce_scatter_grads(ReduceOp::kAvg);
    ++times_.reduce_scatters;
    if (!g->replicated()) {
      ++times_.comm_reduce_scatters;
      times_.comm_reduced_bytes += g->layout().padded_numel * 4;  // reduced in fp32
    }
  }
  if (!((options_.keep_gathered || u.keep_activations) && u.pending_backward > 0)) release(u);
  return grads;
}

void ShardedEngine::finish_gradients() {
  // Backward is over: units prefetched for a backward that never came (a call whose outputs the
  // loss did not use) give their buffers back now.
  for (auto& u : units_)
    if (u->state != Unit::State::kReleased &&
        !((options_.keep_gathered || u->keep_activations) && u->pending_backward > 0))
      release(*u);
  finish_reductions();
}

void ShardedEngine::finish_reductions() {
  auto t0 = Clock::now();
  for (auto& u : units_)
    for (auto& [g, lr] : u->trainable) g->finish();
  times_.reduce_wait_s += seconds_since(t0);
}

void ShardedEngine::end_step() {
  for (auto& u : units_) {
    if (u->state != Unit::State::kReleased) release(*u);
    u->pending_backward = 0;
  }
  if (!calls_.empty()) order_recorded_ = true;
  calls_.clear();
  ++generation_;
  if (options_.debug_delay.count() > 0) std::this_thread::sleep_for(options_.debug_delay);
}

std::vector<std::pair<std::shared_ptr<FlatParamGroup>, std::string>> ShardedEngine::trainable_groups() const {
  std::vector<std::pair<std::shared_ptr<FlatParamGroup>, std::string>> out;
  for (const auto& u : units_) out.insert(out.end(), u->trainable.begin(), u->trainable.end());
  return out;
}

std::vector<std::shared_ptr<FlatParamGroup>> ShardedEngine::groups() const {
  std::vector<std::shared_ptr<FlatParamGroup>> out;
  for (const auto& u : units_) {
    out.insert(out.end(), u->frozen.begin(), u->frozen.end());
    for (const auto& [g, lr] : u->trainable) out.push_back(g);
  }
  return out;
}

EngineMemory ShardedEngine::memory() const {
  EngineMemory m;
  for (const auto& u : units_) {
    for (const auto& g : u->frozen) {
      auto b = g->bytes();
      m.frozen_shard_bytes += b.shard_param_bytes;
      m.gathered_bytes += b.gathered_bytes;
      m.padding_elements += b.padding_elements;
    }
    for (const auto& [g, lr] : u->trainable) {
      auto b = g->bytes();
      m.trainable_shard_bytes += b.shard_param_bytes;
      m.grad_shard_bytes += b.shard_grad_bytes;
      m.gathered_bytes += b.gathered_bytes;
      m.padding_elements += b.padding_elements;
    }
  }
  m.peak_gathered_bytes = peak_gathered_bytes_;
  return m;
}

int64_t ShardedEngine::reduced_elements() const {
  int64_t n = 0;
  for (const auto& g : groups()) n += g->reduced_elements();
  return n;
}

}  // namespace lookahead::dist
