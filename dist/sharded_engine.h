// The sharded engine (ZeRO-3 / FSDP style) behind the UnitRunner interface: every sharding unit's
// parameters live as flat padded shards, one group per role; a unit runs as a checkpointed autograd
// function (forward: gather -> compute without saved activations -> release; backward: gather ->
// recompute -> gradients -> release -> asynchronous reduce-scatter of the trainable gradients;
// units named in keep_activations instead save their graph in forward and stay gathered until their
// backward runs it); the next unit's gather is prefetched in both directions, with a bounded number
// of units gathered at once. Units whose groups all live whole on this rank (one rank, replicated
// frozen weights) are bound once and never gathered or released again.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "dist/flat_param.h"
#include "dist/placement.h"
#include "dist/unit_runner.h"
#include "dist/world.h"

namespace lookahead::dist {

struct EngineOptions {
  Placement placement = Placement::kFull;
  /// Issue the next unit's gather while the current one computes (forward and backward).
  bool prefetch = true;
  /// Units gathered at once (the running one included): the ring that bounds gather memory. With
  /// prefetch, the gathers of the next max_gathered_units - 1 unit calls are issued ahead.
  int64_t max_gathered_units = 2;
  /// Units (by name) whose frozen weights stay whole on every rank whatever the placement: small
  /// units whose gather prefetch cannot hide (the reference identity's ArcFace opens the step)
  /// trade their shard's memory for no gathers at all.
  std::set<std::string> replicate_units;
  /// Keep each unit gathered from its forward until its last backward in the step (more memory,
  /// no second gather).
  bool keep_gathered = false;
  /// Units (by name) that keep their activations from forward to backward instead of recomputing
  /// them: their forward runs with gradient mode on and saves the autograd graph, their backward
  /// only runs that graph (no second forward, no second gather). Such a unit stays gathered from
  /// its forward to its last backward in the step (outside the ring's count), and its activations
  /// live as long. Gradients equal the recomputing path's (the same kernels on the same values).
  std::set<std::string> keep_activations;
  /// Storage / compute dtype of frozen weights (bf16 on GPU, fp32 on CPU by default).
  at::ScalarType frozen_dtype = at::kFloat;
  /// Dtype of trainable parameters while gathered (their shards are fp32 master weights).
  at::ScalarType trainable_compute_dtype = at::kFloat;
  /// Testing: sleep before every collective and before the optimizer step.
  std::chrono::milliseconds debug_delay{0};
};

/// Seconds spent per phase since the last reset, on this rank.
struct PhaseTimes {
  double compute_s = 0;        ///< unit forward and backward computation
  double gather_wait_s = 0;    ///< waiting for gathers that prefetch did not hide
  double reduce_wait_s = 0;    ///< waiting for gradient reduce-scatters at the end of the step
  double optimizer_s = 0;      ///< set by the caller around the optimizer
  int64_t gathers = 0;         ///< group gathers, a whole group bound in place included
  int64_t reduce_scatters = 0;  ///< trainable group reductions, one rank's included
  int64_t gathered_bytes = 0;   ///< full buffer bytes of those gathers
  /// The collectives that move data (groups sharded over more than one rank).
  int64_t comm_gathers = 0;
  int64_t comm_gathered_bytes = 0;
  int64_t comm_reduce_scatters = 0;
  int64_t comm_reduced_bytes = 0;
  /// Forward calls per unit name (a recomputing backward's second forward is not counted): what
  /// a step ran, e.g. that a switched-off branch ran nothing.
  std::map<std::string, int64_t> unit_calls;
};

/// Bytes this rank holds, from the groups' own accounting.
struct EngineMemory {
  int64_t frozen_shard_bytes = 0;
  int64_t trainable_shard_bytes = 0;
  int64_t grad_shard_bytes = 0;
  int64_t gathered_bytes = 0;   ///< full buffers held now
  int64_t peak_gathered_bytes = 0;
  int64_t padding_elements = 0;
};

/// Example:
///   ShardedEngine engine(world, units, options);
///   unet->set_unit_runner(&engine);
///   loss.backward();
///   engine.finish_gradients();          // waits for the last reduce-scatters
///   opt.clip_grad_norm(1.0, world.comm()); opt.step(); engine.end_step();
class ShardedEngine : public UnitRunner {
 public:
  ShardedEngine(World& world, std::vector<ShardingUnit> units, const EngineOptions& options);
  ~ShardedEngine() override;

  std::vector<at::Tensor> run(const std::string& unit, const UnitFn& fn, const std::vector<at::Tensor>& inputs) override;

  /// Call after backward: releases what is still gathered, waits for every outstanding
  /// reduce-scatter and adds it into the gradient shards.
  void finish_gradients();
  /// Waits for the reduce-scatters issued so far and adds them into the gradient shards, leaving
  /// gathered units alone: called between two backward passes, it frees the first pass's full
  /// gradient buffers before the second's begin (their reductions had the forward in between to
  /// finish in). Results are those of finish_gradients (the same additions in the same order).
  void finish_reductions();
  /// Ends a step: releases what is still gathered and forgets this step's calls (the recorded
  /// unit order is kept for prefetching in the next step).
  void end_step();

  /// Trainable groups with their lr group ("adapter" | "lora"), for the optimizer.
  std::vector<std::pair<std::shared_ptr<FlatParamGroup>, std::string>> trainable_groups() const;
  /// Every group, frozen ones included.
  std::vector<std::shared_ptr<FlatParamGroup>> groups() const;
  EngineMemory memory() const;
  PhaseTimes& times() { return times_; }
  void reset_times() { times_ = PhaseTimes(); }
  /// Elements ever reduce-scattered over all groups (frozen groups never are).
  int64_t reduced_elements() const;
  const EngineOptions& options() const { return options_; }
  const std::vector<std::string>& recorded_order() const { return order_names_; }

  // ---- used by the autograd function ----
  struct Call;
  std::vector<at::Tensor> forward_call(Call& call, const std::vector<at::Tensor>& inputs);
  std::vector<at::Tensor> backward_call(Call& call, const std::vector<at::Tensor>& inputs,
                                        const std::vector<at::Tensor>& grad_outputs);
  Call& call(int64_t id);

 private:
  struct Unit;
  Unit& unit(const std::string& name);
  void gather(Unit& u);
  void ensure_gathered(Unit& u);
  void release(Unit& u);
  void prefetch(Unit* next);
  static std::vector<at::Tensor> detached_inputs(const Call& call, const std::vector<at::Tensor>& inputs);
  int64_t gathered_units() const;

  World& world_;
  EngineOptions options_;
  std::vector<std::unique_ptr<Unit>> units_;
  std::unordered_map<std::string, Unit*> by_name_;
  std::vector<std::unique_ptr<Call>> calls_;   // this step's forward calls, by id
  std::vector<std::string> order_names_;       // unit order of the first recorded step
  std::vector<Unit*> order_;
  bool order_recorded_ = false;
  uint64_t generation_ = 1;  // bumped by end_step: calls of ended steps are refused
  PhaseTimes times_;
  int64_t peak_gathered_bytes_ = 0;
};

}  // namespace lookahead::dist
