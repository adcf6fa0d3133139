// Work state machine and host-side waiting.
#include "dist/work.h"

namespace lookahead::dist {

const char* to_string(OpType op) {
  switch (op) {
    case OpType::kAllGather: return "all_gather";
    case OpType::kReduceScatter: return "reduce_scatter";
    case OpType::kAllReduce: return "all_reduce";
    case OpType::kBroadcast: return "broadcast";
    case OpType::kBarrier: return "barrier";
  }
  return "?";
}

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

const char* to_string(WorkState state) {
  switch (state) {
    case WorkState::kQueued: return "queued";
    case WorkState::kRunning: return "running";
    case WorkState::kDone: return "done";
    case WorkState::kFailed: return "failed";
  }
  return "?";
}

const char* dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kByte: return "uint8";
    case at::kChar: return "int8";
    case at::kShort: return "int16";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kBool: return "bool";
    default: return c10::toString(dtype);
  }
}

Work::Work(WorkInfo info) : info_(std::move(info)), enqueue_time_(Clock::now()) {
  start_time_ = enqueue_time_;
  end_time_ = enqueue_time_;
}

void Work::wait() { wait_host(); }
void Work::synchronize() { wait_host(); }

bool Work::is_done() {
  WorkState s = state_.load();
  return s == WorkState::kDone || s == WorkState::kFailed;
}

std::string Work::error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

ErrorKind Work::error_kind() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_kind_;
}

Clock::time_point Work::start_time() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return start_time_;
}

Clock::time_point Work::end_time() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return end_time_;
}

double Work::seconds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::chrono::duration<double>(end_time_ - start_time_).count();
}

void Work::mark_running() {
  std::lock_guard<std::mutex> lock(mutex_);
  start_time_ = Clock::now();
  end_time_ = start_time_;
  WorkState expected = WorkState::kQueued;
  state_.compare_exchange_strong(expected, WorkState::kRunning);
}

void Work::mark_done() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    WorkState s = state_.load();
    if (s == WorkState::kDone || s == WorkState::kFailed) return;
    end_time_ = Clock::now();
    held_.clear();
    state_.store(WorkState::kDone);
  }
  cv_.notify_all();
}

void Work::mark_failed(ErrorKind kind, const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    WorkState s = state_.load();
    if (s == WorkState::kDone || s == WorkState::kFailed) return;
    end_time_ = Clock::now();
    error_ = message;
    error_kind_ = kind;
    // Tensors stay held: a backend that failed may still touch them (a stuck MPI call, an
    // un-aborted NCCL kernel), so their storage must not return to the allocator.
    state_.store(WorkState::kFailed);
  }
  cv_.notify_all();
}

void Work::hold(std::vector<at::Tensor> tensors) {
  std::lock_guard<std::mutex> lock(mutex_);
  held_ = std::move(tensors);
}

void Work::release_tensors() {
  std::lock_guard<std::mutex> lock(mutex_);
  held_.clear();
}

void Work::wait_host() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] {
    WorkState s = state_.load();
    return s == WorkState::kDone || s == WorkState::kFailed;
  });
  if (state_.load() == WorkState::kFailed) throw DistError(error_kind_, error_);
}

void wait_all(const std::vector<WorkHandle>& works) {
  for (const auto& w : works) w->wait();
}

}  // namespace lookahead::dist
