// FlatParamGroup: the storage half of the sharded engine. A set of named parameters of one role
// (the frozen base weights of one sharding unit, or its trainable adapters) lives as one flat,
// padded buffer split evenly across the ranks of a shard group. Between uses each parameter holds
// only an empty tensor; gather()+bind() make the full values visible through the very same
// tensor objects the modules hold, release() frees them again, and reduce_scatter_grads() turns
// the parameters' gradients into this rank's fp32 gradient shard. Knows nothing about model/.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dist/communicator.h"

namespace lookahead::dist {

/// Where each parameter lives in the flat buffer of a group, and how the buffer is split.
///
/// Parameters are packed back to back in the order given; the total is padded with zeros up to a
/// multiple of `kAlignment * shard_count` so that every shard has the same size and starts on a
/// 16-element boundary (aligned vector loads, NCCL's preferred chunking).
struct FlatLayout {
  /// Elements every shard size is a multiple of.
  static constexpr int64_t kAlignment = 16;

  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    int64_t offset = 0;  ///< first element in the flat buffer
    int64_t numel = 0;
  };

  FlatLayout() = default;
  /// Lays out `entries` (name, shape) for `shard_count` shards of dtype `dtype`. Names must be
  /// unique; shard_count >= 1.
  FlatLayout(const std::vector<std::pair<std::string, std::vector<int64_t>>>& entries, int64_t shard_count,
             at::ScalarType dtype);

  std::vector<Entry> entries;
  at::ScalarType dtype = at::kFloat;
  int64_t shard_count = 1;
  int64_t numel = 0;         ///< sum of the parameters' elements
  int64_t padded_numel = 0;  ///< numel rounded up to a multiple of kAlignment * shard_count
  int64_t shard_numel = 0;   ///< padded_numel / shard_count

  /// Index of the entry called `name`; throws if there is none.
  size_t index(const std::string& name) const;
  int64_t padding() const { return padded_numel - numel; }
};

/// One contiguous piece of a shard that belongs to one parameter (for checkpoints, which store
/// parameters with their global, unpadded shapes).
struct ShardRange {
  std::string name;           ///< parameter name
  int64_t param_offset = 0;   ///< first element within the flattened parameter
  int64_t shard_offset = 0;   ///< first element within the local shard
  int64_t numel = 0;
};

/// Memory a group holds on this rank, in bytes (elements for the padding).
struct FlatParamBytes {
  int64_t shard_param_bytes = 0;  ///< the local parameter shard (storage dtype)
  int64_t shard_grad_bytes = 0;   ///< the local fp32 gradient shard, 0 while there is none
  int64_t gathered_bytes = 0;     ///< full buffers currently held (gather in flight or bound)
  int64_t padding_elements = 0;   ///< padding of the whole flat buffer (all shards together)
};

/// A group of parameters of one role, stored as this rank's shard of one flat padded buffer.
///
/// Example (one unit's trainables, sharded over `comm`):
///   FlatParamGroup g("down0.lora", module->named_parameters().pairs(), comm, at::kFloat, device);
///   auto work = g.gather();   // asynchronous all_gather
///   g.bind();                 // waits, then module->weight etc. see the full values
///   ... forward / backward ...
///   g.release();              // parameters back to empty tensors
///   g.reduce_scatter_grads(ReduceOp::kAvg);  // asynchronous; g.finish() adds into grad_shard()
///
/// Not thread-safe: one thread drives a group. Every rank of the shard group must call the
/// collective methods (gather, reduce_scatter_grads, full_tensor) in the same order.
class FlatParamGroup {
 public:
  /// Takes over `params` (name, tensor): copies this rank's shard of their concatenated values
  /// (padded with zeros) into a local shard [shard_numel] of `storage_dtype` on `device`, then
  /// replaces each tensor's data by an empty tensor with `set_data`, so the full values no
  /// longer occupy memory while the tensor objects (shared with the modules that own them) stay
  /// the same. `comm` is the shard group; null means replicate: the whole buffer is kept locally
  /// and no collective is ever issued. `compute_dtype` (default: storage dtype) is the dtype the
  /// parameters have while bound, e.g. an fp32 shard gathered as bf16. All parameters must agree
  /// on requires_grad: true makes a trainable group.
  FlatParamGroup(std::string name, std::vector<std::pair<std::string, at::Tensor>> params, CommunicatorPtr comm,
                 at::ScalarType storage_dtype, c10::Device device,
                 std::optional<at::ScalarType> compute_dtype = std::nullopt);
  ~FlatParamGroup() = default;
  FlatParamGroup(const FlatParamGroup&) = delete;
  FlatParamGroup& operator=(const FlatParamGroup&) = delete;

  const std::string& name() const { return name_; }
  const FlatLayout& layout() const { return layout_; }
  const CommunicatorPtr& comm() const { return comm_; }
  /// Whole on every rank: a gather binds in place and a reduction adds into the shard, with no collective.
  bool replicated() const { return !comm_ || comm_->size() == 1; }
  /// This rank's index in the shard group (0 when replicated).
  int64_t shard_rank() const { return shard_rank_; }
  at::ScalarType storage_dtype() const { return layout_.dtype; }
  at::ScalarType compute_dtype() const { return compute_dtype_; }
  c10::Device device() const { return device_; }
  bool trainable() const { return trainable_; }
  /// The managed parameter tensors (same objects the caller passed), in layout order.
  const std::vector<at::Tensor>& params() const { return params_; }

  // --- gather / bind / release ---------------------------------------------------------------

  /// Starts gathering the full buffer [padded_numel] in the compute dtype. `buffer` (optional) is
  /// a contiguous tensor of the compute dtype on device() with at least padded_numel elements that
  /// the group uses instead of allocating (a ring of gather buffers shared by several units); it
  /// must stay untouched until release(). The local shard is read until the gather completes:
  /// no optimizer step in between. Returns the collective's handle (an already completed one when
  /// nothing needs communicating).
  WorkHandle gather(const at::Tensor& buffer = at::Tensor());
  /// Waits for the gather started by gather() and points every parameter at its view (original
  /// shape, compute dtype) of the gathered buffer.
  void bind();
  /// Points the parameters back at empty tensors and drops the gathered buffer (waiting first for
  /// a gather still in flight, whose buffer must not be freed under it).
  void release();
  /// Teardown (destructors, possibly while unwinding from a failed collective): like release(),
  /// but waits for nothing and throws nothing. A gather still in flight keeps its buffer alive
  /// through its Work until it ends, so the storage is never freed under the collective.
  void abandon() noexcept;
  bool is_bound() const { return bound_; }
  /// A gather started and not yet bound or released.
  bool gather_pending() const { return gather_work_ != nullptr; }

  // --- gradients (trainable groups) ----------------------------------------------------------

  /// Flattens the parameters' gradients (a missing gradient counts as zeros) into a padded fp32
  /// buffer and starts an asynchronous reduce-scatter (kSum or kAvg over the shard group) of it,
  /// then clears the parameters' gradients. The result is added into grad_shard() by finish()
  /// (gradients of several backward passes add up); a group whole on one rank adds it at once
  /// and leaves nothing pending. Throws for frozen groups.
  WorkHandle reduce_scatter_grads(ReduceOp op = ReduceOp::kAvg);
  /// Waits for every pending reduce-scatter and adds its result into the gradient shard.
  void finish();
  /// Reduce-scatters started and not yet finished.
  size_t pending_reductions() const { return pending_.size(); }
  /// This rank's fp32 gradient shard [shard_numel]; undefined until a reduction finished.
  /// Mutable so that the optimizer can scale it (clipping).
  at::Tensor& grad_shard() { return grad_shard_; }
  const at::Tensor& grad_shard() const { return grad_shard_; }
  /// Drops the gradient shard (and any parameter gradients not yet reduced).
  void zero_grad();
  /// Elements (unpadded) ever passed to reduce_scatter_grads, and the number of calls.
  int64_t reduced_elements() const { return reduced_elements_; }
  int64_t reduce_calls() const { return reduce_calls_; }

  // --- shards, memory, export ----------------------------------------------------------------

  /// This rank's parameter shard [shard_numel] in the storage dtype (the optimizer writes it).
  const at::Tensor& local_shard() const { return shard_; }
  /// Overwrites parameter `name` with `value` (its full shape, any floating dtype and device, cast
  /// to the storage dtype): this rank copies its part into its shard. Local, no collective: every
  /// rank passes the same value. For values held at a higher precision than the modules that
  /// handed the parameters over (an fp16 or fp32 file loaded into a bf16 model: the fp32 shard of
  /// a trainable group takes the file's value, not its bf16 rounding). Not while gathered: the
  /// gathered copy would go stale.
  void assign(const std::string& name, const at::Tensor& value);
  /// The pieces of rank `rank`'s shard (default: this rank) that hold parameter elements, in order.
  std::vector<ShardRange> shard_ranges(std::optional<int64_t> rank = std::nullopt) const;
  FlatParamBytes bytes() const;
  /// Collective over the shard group: a copy of the full parameter `name` (original shape,
  /// storage dtype, on device()). Leaves any bound state alone.
  at::Tensor full_tensor(const std::string& name);

  /// Testing hook: sleep `delay` on the calling thread before each collective is started, so that
  /// tests can make ranks arrive late and show the results do not depend on timing.
  void set_debug_delay(std::chrono::milliseconds delay) { debug_delay_ = delay; }

 private:
  /// An in-flight reduce-scatter: its handle and the buffers it reads and writes.
  struct PendingReduce {
    WorkHandle work;
    at::Tensor input;   // [padded_numel] fp32
    at::Tensor output;  // [shard_numel] fp32
  };

  at::TensorOptions compute_options() const;
  void point_at_empty();
  void delay() const;

  std::string name_;
  FlatLayout layout_;
  CommunicatorPtr comm_;
  int64_t shard_rank_ = 0;
  at::ScalarType compute_dtype_;
  c10::Device device_;
  bool trainable_ = false;
  std::vector<at::Tensor> params_;
  at::Tensor empty_;  // [0] compute dtype: what unbound parameters hold

  at::Tensor shard_;       // [shard_numel] storage dtype
  at::Tensor grad_shard_;  // [shard_numel] fp32, undefined until the first finished reduction
  at::Tensor gathered_;    // [padded_numel] compute dtype while a gather is in flight or bound
  WorkHandle gather_work_;
  bool bound_ = false;

  std::vector<PendingReduce> pending_;
  int64_t reduced_elements_ = 0;
  int64_t reduce_calls_ = 0;
  std::chrono::milliseconds debug_delay_{0};
};

}  // namespace lookahead::dist
