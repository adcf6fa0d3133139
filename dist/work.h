// Work: the handle every asynchronous collective returns. It tracks the state of one operation
// (queued, running, done, failed), its timing and size, and is what the flight recorder and the
// watchdog look at.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dist/error.h"

namespace lookahead::dist {

using Clock = std::chrono::steady_clock;

/// Collective kinds, as recorded in the flight recorder.
enum class OpType { kAllGather, kReduceScatter, kAllReduce, kBroadcast, kBarrier };
const char* to_string(OpType op);

/// Reductions. kAvg divides the sum by the communicator size (floating-point tensors only).
enum class ReduceOp { kSum, kAvg, kMax, kMin };
const char* to_string(ReduceOp op);

/// Lifecycle of a collective.
enum class WorkState { kQueued, kRunning, kDone, kFailed };
const char* to_string(WorkState state);

/// torch-style dtype name ("float32", "bfloat16", "int64", ...).
const char* dtype_name(at::ScalarType dtype);

/// Static description of a collective, fixed when it is issued.
struct WorkInfo {
  uint64_t seq = 0;            ///< per-communicator sequence number (0, 1, 2, ...)
  OpType op = OpType::kBarrier;
  std::string comm_name;       ///< communicator it ran on
  std::string backend;         ///< "mpi" or "nccl"
  at::ScalarType dtype = at::kByte;
  int64_t numel = 0;           ///< elements of the larger buffer (see bytes)
  int64_t bytes = 0;           ///< bytes of the larger buffer: AG output, RS input, AR/bcast tensor
};

/// Handle of one asynchronous collective. Thread-safe.
///
/// The contract: the tensors given to the collective must not be modified (and, for outputs, not
/// read) until `wait()` returned. `wait()` rethrows the collective's error, if any.
class Work {
 public:
  explicit Work(WorkInfo info);
  virtual ~Work() = default;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;

  /// Blocks until the collective completed (MPI) or orders the caller's CUDA stream after it
  /// (NCCL). Throws DistError if it failed or timed out.
  virtual void wait();
  /// Blocks the host until the collective completed, on every backend. Throws on failure.
  virtual void synchronize();
  /// Non-blocking completion test (polls the backend). Throws nothing; see `state()`.
  virtual bool is_done();

  const WorkInfo& info() const { return info_; }
  WorkState state() const { return state_.load(); }
  /// Error report when state() == kFailed, empty otherwise.
  std::string error() const;
  ErrorKind error_kind() const;
  int64_t bytes() const { return info_.bytes; }
  Clock::time_point enqueue_time() const { return enqueue_time_; }
  /// When the backend began executing it (MPI: the communication thread picked it up; NCCL: enqueue).
  Clock::time_point start_time() const;
  /// When it was observed complete; equal to start_time() while not complete.
  Clock::time_point end_time() const;
  /// end - start in seconds (0 while not complete).
  double seconds() const;

  // --- backend side -------------------------------------------------------------------------
  void mark_running();
  void mark_done();
  void mark_failed(ErrorKind kind, const std::string& message);
  /// Tensors the collective reads or writes, held until it completes.
  void hold(std::vector<at::Tensor> tensors);

 protected:
  void wait_host();  // condition-variable wait for kDone / kFailed; throws on kFailed
  void release_tensors();

  WorkInfo info_;
  std::atomic<WorkState> state_{WorkState::kQueued};
  Clock::time_point enqueue_time_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  Clock::time_point start_time_;
  Clock::time_point end_time_;
  std::string error_;
  ErrorKind error_kind_ = ErrorKind::kBackend;
  std::vector<at::Tensor> held_;
};

using WorkHandle = std::shared_ptr<Work>;

/// Waits for every handle in order (convenience for tests and simple call sites).
void wait_all(const std::vector<WorkHandle>& works);

}  // namespace lookahead::dist
