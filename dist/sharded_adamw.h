// ShardedAdamW: AdamW over the local shards of trainable FlatParamGroups. Each rank keeps fp32
// master weights and both moments only for the elements of its own shards, so optimizer memory
// divides by the shard count; the math is torch.optim.AdamW's (amsgrad off) element by element.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/flat_param.h"

namespace lookahead::dist {

/// Hyperparameters of one parameter group ("adapters", "encoder_lora", ...).
struct AdamWGroupOptions {
  std::string name;
  double lr = 1e-3;
  double weight_decay = 1e-2;
};

/// Hyperparameters shared by every group.
struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

/// Optimizer state of one FlatParamGroup on this rank, for checkpoints.
struct ShardedAdamWGroupState {
  std::string group;     ///< FlatParamGroup name
  std::string lr_group;  ///< AdamWGroupOptions name
  int64_t step = 0;      ///< steps this group took (groups without a gradient skip a step)
  at::Tensor master;     ///< [shard_numel] fp32 master weights
  at::Tensor exp_avg;    ///< [shard_numel] fp32
  at::Tensor exp_avg_sq; ///< [shard_numel] fp32
};

/// AdamW on the local shards of several trainable FlatParamGroups.
///
/// Example:
///   ShardedAdamW opt({{"adapters", 1e-5, 0.01}, {"encoder_lora", 5e-6, 0.01}});
///   opt.add(unet_group, "adapters");
///   ... backward, reduce_scatter_grads ...
///   double norm = opt.clip_grad_norm(1.0, world.comm());
///   opt.step();
///   opt.zero_grad();
///
/// Padding elements of the shards have zero gradient, zero master value and zero moments, and so
/// stay exactly zero. When a group's storage dtype is not fp32 (bf16 on GPU), the fp32 master
/// lives here and the cast shard is written back after each step; for fp32 storage the shard
/// itself is the master (no copy).
class ShardedAdamW {
 public:
  explicit ShardedAdamW(std::vector<AdamWGroupOptions> lr_groups, AdamWOptions options = {});

  /// Adds a trainable group to the lr group called `lr_group`. The optimizer keeps the group alive.
  void add(std::shared_ptr<FlatParamGroup> group, const std::string& lr_group);

  /// Finishes pending reductions, then scales every gradient shard by
  /// min(1, max_norm / (norm + 1e-6)) where norm is the global L2 norm over all groups' gradient
  /// shards, computed with one all_reduce over `world` (which must span every shard of every
  /// group; a group sharded over a subgroup is assumed replicated identically across the rest).
  /// Returns the norm before clipping. Collective over `world`.
  double clip_grad_norm(double max_norm, const CommunicatorPtr& world);
  /// Global gradient norm without clipping (collective over `world`, like clip_grad_norm).
  double grad_norm(const CommunicatorPtr& world);

  /// Finishes pending reductions and applies one AdamW update to every group that has a gradient
  /// shard (a group without one is skipped, as torch skips parameters whose grad is None).
  void step();
  /// Drops every group's gradient shard.
  void zero_grad();

  /// Bytes of fp32 master weights and moments held on this rank.
  int64_t state_bytes() const;
  /// Number of step() calls.
  int64_t step_count() const { return step_count_; }

  const std::vector<AdamWGroupOptions>& lr_groups() const { return lr_groups_; }
  /// Changes the learning rate of lr group `name` (schedules).
  void set_lr(const std::string& name, double lr);
  const AdamWOptions& options() const { return options_; }

  /// The state of every group, in the order added (tensors are the live state, not copies).
  std::vector<ShardedAdamWGroupState> state() const;
  /// Restores `groups` (matched by group name; shapes must equal this rank's shards) and the step
  /// count, and writes the master weights into the groups' parameter shards.
  void load_state(int64_t step_count, const std::vector<ShardedAdamWGroupState>& groups);

 private:
  struct Entry {
    std::shared_ptr<FlatParamGroup> group;
    size_t lr_group = 0;
    int64_t step = 0;
    at::Tensor master;      // [shard_numel] fp32; aliases the shard when it is fp32
    at::Tensor exp_avg;     // [shard_numel] fp32
    at::Tensor exp_avg_sq;  // [shard_numel] fp32
  };

  size_t lr_group_index(const std::string& name) const;
  at::Tensor local_sum_of_squares(const CommunicatorPtr& world);  // [] fp64, undefined if no grads

  std::vector<AdamWGroupOptions> lr_groups_;
  AdamWOptions options_;
  std::vector<Entry> entries_;
  int64_t step_count_ = 0;
};

}  // namespace lookahead::dist
