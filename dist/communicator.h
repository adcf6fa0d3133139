// Communicator: one asynchronous collective interface over torch tensors, with two backends
// (MPI for CPU tensors, NCCL for CUDA tensors). The base class validates arguments, numbers and
// records every collective and hands it to the watchdog; backends only move bytes.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "dist/abortable.h"
#include "dist/flight_recorder.h"
#include "dist/watchdog.h"
#include "dist/work.h"

namespace lookahead::dist {

/// Reliability settings shared by every communicator of a World.
struct CommConfig {
  /// Seconds a running collective may take before it is a timeout error; <= 0 disables.
  double timeout_s = 600.0;
  /// Before each collective, compare (op, dtype, sizes, root, sequence number) across ranks and
  /// fail with a report naming the disagreeing ranks instead of computing garbage or hanging.
  /// Costs one small extra all-reduce per collective (on the communication thread).
  bool verify_signatures = true;
  /// Collectives kept in the per-rank flight recorder.
  size_t flight_recorder_size = 64;
  /// Seconds between watchdog polls.
  double watchdog_poll_s = 0.05;
};

/// Services a World shares with all of its communicators.
struct CommServices {
  CommConfig config;
  Clock::time_point origin;
  std::shared_ptr<FlightRecorder> recorder;
  std::shared_ptr<Watchdog> watchdog;
};

/// What every rank must agree on for one collective (compared when verify_signatures is on).
struct OpSignature {
  int64_t seq, op, dtype, in_numel, out_numel, root;
  std::array<int64_t, 6> values() const { return {seq, op, dtype, in_numel, out_numel, root}; }
  std::string to_string() const;
};

/// Asynchronous collectives on one group of ranks.
///
/// Example:
///   auto work = comm->all_gather(full /*[size * n]*/, shard /*[n]*/);
///   ... compute ...
///   work->wait();
///
/// Every rank of the group must issue the same collectives in the same order with matching
/// dtypes and sizes. Tensors must be contiguous, on the backend's device, and untouched until the
/// returned Work is waited.
class Communicator : public Abortable, public std::enable_shared_from_this<Communicator> {
 public:
  ~Communicator() override = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const final { return rank_; }
  int size() const final { return size_; }
  const std::string& name() const { return name_; }
  virtual const char* backend() const = 0;

  /// output[r*n : (r+1)*n] = input of rank r, for input [n] and output [size*n] (any shape with
  /// those element counts). In place when `input` is exactly this rank's chunk of `output`.
  WorkHandle all_gather(const at::Tensor& output, const at::Tensor& input);
  /// output = op over ranks of input[rank*n : (rank+1)*n], for input [size*n] and output [n].
  WorkHandle reduce_scatter(const at::Tensor& output, const at::Tensor& input, ReduceOp op = ReduceOp::kSum);
  /// tensor = op over ranks of tensor, in place.
  WorkHandle all_reduce(const at::Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  /// tensor = tensor of rank `root`, in place.
  WorkHandle broadcast(const at::Tensor& tensor, int root);
  /// Completes once every rank has issued it.
  WorkHandle barrier();

  /// Splits into sub-communicators: ranks with equal `color` form one group, ordered by `key`
  /// then by rank. Collective over this communicator. The name appears in reports.
  virtual std::shared_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  /// Fails every pending and future collective with `reason` (kAborted) and releases what the
  /// backend can release (NCCL: ncclCommAbort). Idempotent; called by the watchdog on timeout.
  void abort(const std::string& reason) override = 0;
  bool aborted() const { return aborted_.load(); }

  /// Number of collectives issued so far (the next one's sequence number).
  uint64_t issued() const { return next_seq_.load(); }
  const CommServices& services() const { return *services_; }

 protected:
  Communicator(std::string name, int rank, int size, std::shared_ptr<CommServices> services);

  /// One validated collective, ready for the backend.
  struct Op {
    OpType type = OpType::kBarrier;
    at::Tensor output;  // AG output, RS output, AR/bcast tensor
    at::Tensor input;   // AG input, RS input; undefined otherwise
    ReduceOp reduce = ReduceOp::kSum;
    int root = 0;
    bool in_place = false;
    OpSignature signature{};
  };
  /// Backend hook: start `op` asynchronously and return its Work (already counted and recorded by
  /// the caller). Must not block on peers.
  virtual WorkHandle start(Op op, WorkInfo info) = 0;
  /// Backend hook: throws DistError(kInvalidArgument) if `t` is not on this backend's device.
  virtual void check_device(const at::Tensor& t, const char* what) const = 0;

  /// "ranks disagree" report from every rank's signature (index = rank in this communicator).
  std::string mismatch_report(const Op& op, const std::vector<OpSignature>& all) const;
  std::string aborted_reason() const;
  void set_aborted(const std::string& reason);

  std::shared_ptr<CommServices> services_;

 private:
  WorkHandle issue(Op op);
  void check_tensor(const at::Tensor& t, const char* what) const;
  [[noreturn]] void fail_argument(const std::string& message) const;

  std::string name_;
  int rank_;
  int size_;
  std::atomic<uint64_t> next_seq_{0};
  std::atomic<bool> aborted_{false};
  mutable std::mutex abort_mutex_;
  std::string abort_reason_;
};

using CommunicatorPtr = std::shared_ptr<Communicator>;

/// Host bookkeeping (losses, counts, flags) reduced over `comm`, a communicator of CPU tensors
/// (the World's comm()). Taking plain numbers, not tensors, is the point: a value read from a GPU
/// tensor arrives here already on the host, so the MPI communicator is never handed device memory
/// whatever device the model runs on. Integers up to 2^53 are exact. Collective; returns the
/// reduced values on every rank.
std::vector<double> all_reduce_values(Communicator& comm, const std::vector<double>& values, ReduceOp op);

/// Every rank's `mine` (any bytes, NULs included, any length), indexed by rank, on every rank of
/// `comm` (CPU tensors: the World's comm() or node()). Collective: two all_gathers (lengths, then
/// bytes padded to the longest).
std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& mine);

/// Replaces `text` on every rank of `comm` by root's. Collective: two broadcasts (length, bytes).
void broadcast_string(Communicator& comm, int root, std::string& text);

}  // namespace lookahead::dist
