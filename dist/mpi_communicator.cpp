// MPI backend: a task queue drained by one communication thread per communicator.
#include "dist/mpi_communicator.h"

#include <ATen/ops/add.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/minimum.h>
#include <c10/core/ScalarType.h>

#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <limits>
#include <thread>

namespace lookahead::dist {

MpiCommHandle::~MpiCommHandle() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

MpiCommHandle& MpiCommHandle::operator=(MpiCommHandle&& other) noexcept {
  if (this != &other) {
    MpiCommHandle tmp(release());
    comm_ = other.release();
  }
  return *this;
}

namespace {

MPI_Datatype reduction_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kShort: return MPI_INT16_T;
    case at::kChar: return MPI_INT8_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kBool: return MPI_UINT8_T;
    default: return MPI_DATATYPE_NULL;
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

// float16 / bfloat16 have no MPI type: reduce them in float32 (also the accurate choice).
bool reduce_in_float(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

int checked_count(int64_t n, const char* what) {
  if (n > std::numeric_limits<int>::max())
    throw DistError(ErrorKind::kInvalidArgument,
                    std::string(what) + ": " + std::to_string(n) +
                        " elements exceed MPI's int count; split the collective (" + where() + ")");
  return static_cast<int>(n);
}

// Large all-gathers and reduce-scatters run as rings of non-blocking point-to-point messages
// that the communication thread drives itself. Waiting, it sleeps between MPI_Test calls rather
// than spinning in MPI's progress loop, so the compute thread beside it keeps its core: on a CPU
// node this is what lets a transfer hide behind compute (docs/cluster.md, "Overlap"). The ring
// also fixes the traffic (each rank sends (S-1)/S of the buffer to the next rank) whatever
// OpenMPI's tuning would pick, which is what dist/traffic_estimate.h assumes.
constexpr int64_t kRingMinChunkBytes = int64_t{256} << 10;
constexpr int kRingTag = 0x4c41;  // this communicator's thread is the only user of its (duplicated) MPI_Comm
// Spinning first: a shared-memory transfer of a chunk completes in microseconds.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(100);
constexpr int64_t kMaxSleepMicros = 500;

/// Waits for `n` requests, sleeping between tests after a short spin; throws if `self` is aborted.
void wait_requests(MPI_Request* requests, int n, const Communicator& self) {
  const auto start = std::chrono::steady_clock::now();
  int64_t sleep = 1;
  for (;;) {
    int done = 0;
    LA_MPI_CHECK(MPI_Testall(n, requests, &done, MPI_STATUSES_IGNORE));
    if (done) return;
    if (self.aborted())
      throw DistError(ErrorKind::kAborted,
                      "communicator '" + self.name() + "' was aborted during a ring collective (" + where() + ")");
    if (std::chrono::steady_clock::now() - start < kSpinBeforeSleep) continue;
    std::this_thread::sleep_for(std::chrono::microseconds(sleep));
    sleep = std::min(2 * sleep, kMaxSleepMicros);
  }
}

/// One ring step: receive `count` bytes from the previous rank while sending to the next.
void ring_exchange(const void* send, void* recv, int count, int rank, int size, MPI_Comm comm,
                   const Communicator& self) {
  MPI_Request requests[2];
  LA_MPI_CHECK(MPI_Irecv(recv, count, MPI_BYTE, (rank + size - 1) % size, kRingTag, comm, &requests[0]));
  LA_MPI_CHECK(MPI_Isend(send, count, MPI_BYTE, (rank + 1) % size, kRingTag, comm, &requests[1]));
  wait_requests(requests, 2, self);
}

/// All-gather of `chunk` bytes per rank into `out` (this rank's chunk already in place).
void ring_all_gather(uint8_t* out, int64_t chunk, int count, int rank, int size, MPI_Comm comm,
                     const Communicator& self) {
  // Step k passes on the chunk received in step k-1, starting with this rank's own.
  for (int k = 0; k + 1 < size; ++k) {
    const int send = (rank - k + size) % size, recv = (rank - k - 1 + size) % size;
    ring_exchange(out + send * chunk, out + recv * chunk, count, rank, size, comm, self);
  }
}

/// Reduce-scatter of `in` ([size * chunk] elements) into `out` ([chunk]); kSum / kMax / kMin
/// (kAvg: the caller divides). Chunk j is reduced along the ring ending at rank j: step k
/// receives the partial result of chunk (rank - k - 2) and adds this rank's part.
void ring_reduce_scatter(const at::Tensor& in, const at::Tensor& out, ReduceOp op, int rank, int size, MPI_Comm comm,
                         const Communicator& self) {
  const int64_t chunk = out.numel();
  const int count = checked_count(chunk * static_cast<int64_t>(in.element_size()), "reduce_scatter");
  auto part = [&](int j) { return in.narrow(0, ((j % size) + size) % size * chunk, chunk); };
  at::Tensor recv = at::empty_like(out), acc = at::empty_like(out);
  auto combine = [&](at::Tensor dst, const at::Tensor& a, const at::Tensor& b) {
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg: at::add_out(dst, a, b); break;
      case ReduceOp::kMax: at::maximum_out(dst, a, b); break;
      case ReduceOp::kMin: at::minimum_out(dst, a, b); break;
    }
  };
  for (int k = 0; k + 1 < size; ++k) {
    const at::Tensor send = k == 0 ? part(rank - 1).contiguous() : acc;
    ring_exchange(send.data_ptr(), recv.data_ptr(), count, rank, size, comm, self);
    combine(k + 2 == size ? out : acc, recv, part(rank - k - 2));
  }
}

}  // namespace

// Shared with the communication thread, which may outlive the communicator if it is stuck in MPI
// after an abort (the process is then about to end; the thread must not touch freed memory).
struct MpiCommunicator::State {
  struct Task {
    WorkHandle work;                              // null for control tasks
    Op op;
    std::function<void(MPI_Comm)> control;        // run_blocking
  };
  MpiCommHandle comm;
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<Task> queue;
  bool stop = false;
  bool busy = false;
  std::thread thread;
};

std::shared_ptr<MpiCommunicator> MpiCommunicator::create(MPI_Comm comm, std::string name,
                                                         std::shared_ptr<CommServices> services) {
  int provided = 0;
  LA_MPI_CHECK(MPI_Query_thread(&provided));
  if (provided < MPI_THREAD_MULTIPLE)
    throw DistError(ErrorKind::kBackend,
                    "the MPI library provides thread level " + std::to_string(provided) +
                        " but Lookahead's communication threads need MPI_THREAD_MULTIPLE (" + where() + ")");
  MPI_Comm dup = MPI_COMM_NULL;
  LA_MPI_CHECK(MPI_Comm_dup(comm, &dup));
  MpiCommHandle handle(dup);
  // Errors come back as codes that we turn into DistError, not as MPI's default job abort.
  LA_MPI_CHECK(MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN));
  int rank = 0, size = 0;
  LA_MPI_CHECK(MPI_Comm_rank(dup, &rank));
  LA_MPI_CHECK(MPI_Comm_size(dup, &size));
  return std::shared_ptr<MpiCommunicator>(
      new MpiCommunicator(std::move(handle), rank, size, std::move(name), std::move(services)));
}

MpiCommunicator::MpiCommunicator(MpiCommHandle comm, int rank, int size, std::string name,
                                 std::shared_ptr<CommServices> services)
    : Communicator(std::move(name), rank, size, std::move(services)), state_(std::make_shared<State>()) {
  state_->comm = std::move(comm);
  // The thread holds the State (not `this`) alive; `self` is only used while the communicator
  // exists, which the destructor guarantees by joining unless the thread is stuck after an abort.
  state_->thread = std::thread([state = state_, self = this] {
    std::unique_lock<std::mutex> lock(state->mutex);
    for (;;) {
      state->cv.wait(lock, [&] { return state->stop || !state->queue.empty(); });
      if (state->queue.empty()) return;  // stop requested and drained
      State::Task task = std::move(state->queue.front());
      state->queue.pop_front();
      state->busy = true;
      lock.unlock();
      MPI_Comm comm = state->comm.get();
      if (task.control) {
        task.control(comm);  // exceptions are delivered through the caller's promise
      } else {
        task.work->mark_running();
        try {
          if (self->services_->config.verify_signatures) {
            auto sigs = compare_signatures(task.op.signature, comm, self->size());
            if (!sigs.empty()) throw DistError(ErrorKind::kMismatch, self->mismatch_report(task.op, sigs));
          }
          self->execute(task.op, comm);
          task.work->mark_done();
        } catch (const DistError& e) {
          task.work->mark_failed(e.kind(), e.what());
          if (e.kind() == ErrorKind::kBackend) self->abort(e.what());
        } catch (const std::exception& e) {
          task.work->mark_failed(ErrorKind::kBackend, e.what());
          self->abort(e.what());
        }
      }
      lock.lock();
      state->busy = false;
    }
  });
}

MpiCommunicator::~MpiCommunicator() {
  bool stuck = false;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stop = true;
    stuck = aborted() && state_->busy;
  }
  state_->cv.notify_all();
  if (stuck) {
    // Blocked inside MPI on a dead or diverged peer: joining would hang. The job is being
    // aborted; the thread keeps State alive and never touches this object again.
    state_->thread.detach();
    (void)state_->comm.release();
  } else {
    state_->thread.join();
  }
}

MPI_Comm MpiCommunicator::handle() const { return state_->comm.get(); }

void MpiCommunicator::check_device(const at::Tensor& t, const char* what) const {
  if (!t.device().is_cpu())
    throw DistError(ErrorKind::kInvalidArgument, std::string(what) + " is on " + t.device().str() +
                                                     ", but the MPI communicator '" + name() +
                                                     "' moves CPU tensors (" + where() + ")");
}

WorkHandle MpiCommunicator::start(Op op, WorkInfo info) {
  auto work = std::make_shared<Work>(std::move(info));
  std::vector<at::Tensor> held;
  if (op.output.defined()) held.push_back(op.output);
  if (op.input.defined()) held.push_back(op.input);
  work->hold(std::move(held));
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->queue.push_back(State::Task{work, std::move(op), nullptr});
  }
  state_->cv.notify_one();
  return work;
}

void MpiCommunicator::run_blocking(const std::function<void(MPI_Comm)>& fn) {
  if (aborted()) throw DistError(ErrorKind::kAborted, "communicator '" + name() + "' was aborted: " + aborted_reason());
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> fut = done->get_future();
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    State::Task task;
    task.control = [fn, done](MPI_Comm comm) {
      try {
        fn(comm);
        done->set_value();
      } catch (...) {
        done->set_exception(std::current_exception());
      }
    };
    state_->queue.push_back(std::move(task));
  }
  state_->cv.notify_one();
  fut.get();
}

std::vector<OpSignature> MpiCommunicator::compare_signatures(const OpSignature& signature, MPI_Comm comm,
                                                            int size) {
  auto sig = signature.values();
  constexpr int kN = static_cast<int>(std::tuple_size_v<decltype(sig)>);
  // One all-reduce(MAX) of [sig, -sig] yields max and -min of every field: equal iff all agree.
  int64_t buf[2 * kN];
  for (int i = 0; i < kN; ++i) {
    buf[i] = sig[i];
    buf[kN + i] = -sig[i];
  }
  LA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, 2 * kN, MPI_INT64_T, MPI_MAX, comm));
  bool agree = true;
  for (int i = 0; i < kN; ++i) agree = agree && buf[i] == -buf[kN + i];
  if (agree) return {};
  // Every rank saw the same max/min, so every rank takes this branch: the gather cannot hang.
  std::vector<int64_t> all(static_cast<size_t>(kN) * size);
  LA_MPI_CHECK(MPI_Allgather(sig.data(), kN, MPI_INT64_T, all.data(), kN, MPI_INT64_T, comm));
  std::vector<OpSignature> sigs(size);
  for (int r = 0; r < size; ++r) {
    const int64_t* s = all.data() + r * kN;
    sigs[r] = OpSignature{s[0], s[1], s[2], s[3], s[4], s[5]};
  }
  return sigs;
}

void MpiCommunicator::execute(const Op& op, MPI_Comm comm) {
  const int n = size();
  switch (op.type) {
    case OpType::kBarrier:
      LA_MPI_CHECK(MPI_Barrier(comm));
      return;
    case OpType::kBroadcast: {
      int count = checked_count(static_cast<int64_t>(op.output.nbytes()), "broadcast");
      LA_MPI_CHECK(MPI_Bcast(op.output.data_ptr(), count, MPI_BYTE, op.root, comm));
      return;
    }
    case OpType::kAllGather: {
      // Raw bytes: every dtype gathers the same way.
      int count = checked_count(static_cast<int64_t>(op.input.nbytes()), "all_gather");
      if (n > 1 && static_cast<int64_t>(op.input.nbytes()) >= kRingMinChunkBytes) {
        auto* out = static_cast<uint8_t*>(op.output.data_ptr());
        const auto chunk = static_cast<int64_t>(op.input.nbytes());
        if (!op.in_place) std::memcpy(out + rank() * chunk, op.input.data_ptr(), static_cast<size_t>(chunk));
        ring_all_gather(out, chunk, count, rank(), n, comm, *this);
        return;
      }
      const void* send = op.in_place ? MPI_IN_PLACE : op.input.data_ptr();
      LA_MPI_CHECK(MPI_Allgather(send, count, MPI_BYTE, op.output.data_ptr(), count, MPI_BYTE, comm));
      return;
    }
    case OpType::kAllReduce: {
      at::Tensor buf = reduce_in_float(op.output.scalar_type()) ? op.output.to(at::kFloat) : op.output;
      MPI_Datatype type = reduction_type(buf.scalar_type());
      if (type == MPI_DATATYPE_NULL)
        throw DistError(ErrorKind::kInvalidArgument,
                        std::string("all_reduce: dtype ") + dtype_name(buf.scalar_type()) +
                            " is not supported by the MPI communicator (" + where() + ")");
      LA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf.data_ptr(), checked_count(buf.numel(), "all_reduce"), type,
                                 mpi_op(op.reduce), comm));
      if (op.reduce == ReduceOp::kAvg) buf.div_(n);
      if (!buf.is_same(op.output)) op.output.copy_(buf);
      return;
    }
    case OpType::kReduceScatter: {
      bool upcast = reduce_in_float(op.input.scalar_type());
      at::Tensor in = upcast ? op.input.to(at::kFloat) : op.input;
      at::Tensor out = upcast ? at::empty({op.output.numel()}, in.options()) : op.output;
      MPI_Datatype type = reduction_type(in.scalar_type());
      if (type == MPI_DATATYPE_NULL)
        throw DistError(ErrorKind::kInvalidArgument,
                        std::string("reduce_scatter: dtype ") + dtype_name(in.scalar_type()) +
                            " is not supported by the MPI communicator (" + where() + ")");
      if (n > 1 && static_cast<int64_t>(out.nbytes()) >= kRingMinChunkBytes) {
        ring_reduce_scatter(in.reshape({-1}), out.view({-1}), op.reduce, rank(), n, comm, *this);
      } else {
        // MPI_Reduce_scatter rather than its _block form: OpenMPI offers the ring (its default
        // for large messages) only there, and the traffic model assumes it.
        const std::vector<int> counts(static_cast<size_t>(n), checked_count(out.numel(), "reduce_scatter"));
        LA_MPI_CHECK(MPI_Reduce_scatter(in.data_ptr(), out.data_ptr(), counts.data(), type, mpi_op(op.reduce), comm));
      }
      if (op.reduce == ReduceOp::kAvg) out.div_(n);
      if (upcast) op.output.view({-1}).copy_(out);
      return;
    }
  }
}

std::shared_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& name) {
  MPI_Comm sub = MPI_COMM_NULL;
  run_blocking([&](MPI_Comm comm) { LA_MPI_CHECK(MPI_Comm_split(comm, color, key, &sub)); });
  MpiCommHandle owner(sub);
  return create(sub, name, services_);
}

void MpiCommunicator::abort(const std::string& reason) {
  set_aborted(reason);
  std::deque<State::Task> dropped;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    for (auto& t : state_->queue)
      if (t.work) dropped.push_back(std::move(t));
    std::erase_if(state_->queue, [](const State::Task& t) { return t.work != nullptr; });
  }
  for (auto& t : dropped)
    t.work->mark_failed(ErrorKind::kAborted, "not started: communicator '" + name() + "' was aborted:\n" + reason);
}

}  // namespace lookahead::dist
