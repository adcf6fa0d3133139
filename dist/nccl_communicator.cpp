// NCCL backend: bootstrap over MPI, event-ordered communication stream, async error polling.
#include "dist/nccl_communicator.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdio>
#include <thread>

#include "dist/cuda_event.h"

namespace lookahead::dist {

namespace {

/// Seconds a communicator waits for its in-flight work at shutdown when collectives have no
/// timeout (CommConfig::timeout_s <= 0); past it, the comm is aborted rather than waited for.
constexpr double kShutdownLimitS = 60.0;

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kChar: return ncclInt8;
    case at::kByte:
    case at::kBool: return ncclUint8;
    default:
      throw DistError(ErrorKind::kInvalidArgument,
                      std::string("dtype ") + dtype_name(t) + " cannot be reduced by NCCL (" + where() + ")");
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  // Guards comm: every NCCL call on it (enqueue, readiness and error polls, finalize) holds it,
  // so the watchdog's ncclCommAbort can never pull the comm from under a call in progress.
  std::mutex mutex;
  std::atomic<bool> aborted{false};
  std::atomic<bool> work_failed{false};  // some collective failed: shutdown must not finalize
  c10::cuda::CUDAStream stream;     // communication stream (high priority)
  std::vector<std::weak_ptr<Work>> outstanding;
  double timeout_s = 0;
  explicit State(c10::cuda::CUDAStream s) : stream(s) {}

  /// Non-blocking communicators return ncclInProgress until an operation is enqueued.
  void wait_ready(const char* what) {
    auto t0 = Clock::now();
    for (;;) {
      ncclResult_t state = ncclSuccess;
      LA_NCCL_CHECK(ncclCommGetAsyncError(comm, &state));
      if (state == ncclSuccess) return;
      if (state != ncclInProgress)
        detail::throw_call_error("NCCL", what, ncclGetErrorString(state), __FILE__, __LINE__);
      if (timeout_s > 0 && std::chrono::duration<double>(Clock::now() - t0).count() > timeout_s)
        throw DistError(ErrorKind::kTimeout, std::string(what) + " did not complete within " +
                                                 std::to_string(timeout_s) + " s (" + where() + ")");
      std::this_thread::yield();
    }
  }
};

namespace {

class NcclWork final : public Work {
 public:
  NcclWork(WorkInfo info, std::shared_ptr<NcclCommunicator::State> state, c10::Device device)
      : Work(std::move(info)), state_(std::move(state)), device_(device) {}

  CudaEvent& end_event() { return end_; }

  bool is_done() override {
    WorkState s = state();
    if (s == WorkState::kDone || s == WorkState::kFailed) return true;
    // Polled from the watchdog thread too: query the event and free the held tensors on our
    // device, not on the thread's default GPU 0.
    c10::cuda::CUDAGuard guard(device_);
    cudaError_t rc = cudaEventQuery(end_.get());
    if (rc == cudaSuccess) {
      mark_done();
      return true;
    }
    if (rc != cudaErrorNotReady) {
      state_->work_failed.store(true);
      mark_failed(ErrorKind::kBackend, std::string("CUDA error while waiting for ") + to_string(info().op) + ": " +
                                           cudaGetErrorString(rc) + " (" + where() + ")");
      return true;
    }
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (state_->aborted.load() || !state_->comm) return false;  // the abort path fails us
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(state_->comm, &async) == ncclSuccess && async != ncclSuccess &&
        async != ncclInProgress) {
      state_->work_failed.store(true);
      mark_failed(ErrorKind::kBackend, std::string("NCCL asynchronous error during ") + to_string(info().op) +
                                           " on communicator '" + info().comm_name + "': " +
                                           ncclGetErrorString(async) + " (" + where() + ")");
      return true;
    }
    return false;
  }

  void wait() override {
    if (state() == WorkState::kFailed) throw DistError(error_kind(), error());
    // Order the caller's stream after the collective; the host does not block.
    c10::cuda::CUDAGuard guard(device_);
    auto caller = c10::cuda::getCurrentCUDAStream(device_.index());
    LA_CUDA_CHECK(cudaStreamWaitEvent(caller.stream(), end_.get(), 0));
  }

  void synchronize() override {
    while (!is_done()) std::this_thread::sleep_for(std::chrono::microseconds(20));
    if (state() == WorkState::kFailed) throw DistError(error_kind(), error());
  }

 private:
  std::shared_ptr<NcclCommunicator::State> state_;
  c10::Device device_;
  CudaEvent end_;
};

}  // namespace

std::string nccl_version() {
  int v = 0;
  ncclGetVersion(&v);
  // NCCL_VERSION(X,Y,Z) = X*10000 + Y*100 + Z for 2.9 and later
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

std::string cuda_device_id(c10::Device device) {
  char id[64] = {0};
  LA_CUDA_CHECK(cudaDeviceGetPCIBusId(id, sizeof id - 1, device.index()));
  return id;
}

std::shared_ptr<NcclCommunicator> NcclCommunicator::create(MpiCommunicator& bootstrap, c10::Device device,
                                                           std::string name,
                                                           std::shared_ptr<CommServices> services) {
  // A private copy of the bootstrap group: splits and signature checks use it, in issue order.
  auto shadow = std::static_pointer_cast<MpiCommunicator>(
      bootstrap.split(0, bootstrap.rank(), name + "/bootstrap"));
  return std::shared_ptr<NcclCommunicator>(new NcclCommunicator(shadow, device, shadow->rank(), shadow->size(),
                                                                std::move(name), std::move(services)));
}

NcclCommunicator::NcclCommunicator(std::shared_ptr<MpiCommunicator> bootstrap, c10::Device device, int rank,
                                   int size, std::string name, std::shared_ptr<CommServices> services)
    : Communicator(std::move(name), rank, size, std::move(services)), bootstrap_(std::move(bootstrap)),
      device_(device) {
  c10::cuda::CUDAGuard guard(device_);
  state_ = std::make_shared<State>(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device_.index()));
  state_->timeout_s = services_->config.timeout_s;
  ncclUniqueId id;
  if (rank == 0) LA_NCCL_CHECK(ncclGetUniqueId(&id));
  bootstrap_->run_blocking(
      [&](MPI_Comm comm) { LA_MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm)); });
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // init and calls return at once; we poll with a timeout instead of hanging
  LA_NCCL_CHECK(ncclCommInitRankConfig(&state_->comm, size, id, rank, &config));
  try {
    state_->wait_ready("ncclCommInitRankConfig");
  } catch (...) {
    // A peer that never joins leaves the init running; the destructor will not run for a
    // constructor that throws, so stop it here.
    ncclCommAbort(state_->comm);
    state_->comm = nullptr;
    throw;
  }
}

NcclCommunicator::~NcclCommunicator() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  if (!state_->comm || state_->aborted.load()) return;  // never created, or already aborted
  c10::cuda::CUDAGuard guard(device_);
  // A collective whose peer died or diverged never ends, and exit must not hang on it: wait a
  // bounded time for the stream and for the finalize, and abort instead of destroying when either
  // does not finish or some collective already failed.
  const double limit_s = state_->timeout_s > 0 ? state_->timeout_s : kShutdownLimitS;
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(limit_s));
  std::string problem = state_->work_failed.load() ? "a collective on it failed" : "";
  while (problem.empty()) {
    const cudaError_t rc = cudaStreamQuery(state_->stream.stream());
    if (rc == cudaSuccess) break;
    if (rc != cudaErrorNotReady)
      problem = std::string("its stream reported ") + cudaGetErrorString(rc);
    else if (Clock::now() > deadline)
      problem = "collectives still in flight after " + std::to_string(limit_s) + " s";
    else
      std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  if (problem.empty()) {
    // On a non-blocking comm the finalize runs in the background; its state says when it is done.
    ncclResult_t st = ncclCommFinalize(state_->comm);
    if (st == ncclSuccess || st == ncclInProgress) {
      for (;;) {
        if (ncclCommGetAsyncError(state_->comm, &st) != ncclSuccess) st = ncclInternalError;
        if (st != ncclInProgress || Clock::now() > deadline) break;
        std::this_thread::yield();
      }
    }
    if (st != ncclSuccess)
      problem = st == ncclInProgress ? "ncclCommFinalize did not complete within " + std::to_string(limit_s) + " s"
                                     : std::string("ncclCommFinalize: ") + ncclGetErrorString(st);
  }
  if (problem.empty()) {
    ncclCommDestroy(state_->comm);
  } else {
    std::fprintf(stderr, "[lookahead %s] NCCL communicator '%s' at shutdown: %s; aborting it instead of waiting\n",
                 where().c_str(), name().c_str(), problem.c_str());
    ncclCommAbort(state_->comm);
  }
  state_->comm = nullptr;
}

void NcclCommunicator::check_device(const at::Tensor& t, const char* what) const {
  if (t.device() != device_)
    throw DistError(ErrorKind::kInvalidArgument, std::string(what) + " is on " + t.device().str() +
                                                     ", but the NCCL communicator '" + name() + "' runs on " +
                                                     device_.str() + " (" + where() + ")");
}

WorkHandle NcclCommunicator::start(Op op, WorkInfo info) {
  if (services_->config.verify_signatures) {
    // Host round-trip over MPI, no GPU synchronization; off by default in production configs.
    std::vector<OpSignature> sigs;
    bootstrap_->run_blocking(
        [&](MPI_Comm comm) { sigs = MpiCommunicator::compare_signatures(op.signature, comm, size()); });
    if (!sigs.empty()) throw DistError(ErrorKind::kMismatch, mismatch_report(op, sigs));
  }
  c10::cuda::CUDAGuard guard(device_);
  auto work = std::make_shared<NcclWork>(std::move(info), state_, device_);
  cudaStream_t comm_stream = state_->stream.stream();
  // Order: everything the caller enqueued so far (producers of the inputs) before the collective.
  CudaEvent ready;
  LA_CUDA_CHECK(cudaEventRecord(ready.get(), c10::cuda::getCurrentCUDAStream(device_.index()).stream()));
  LA_CUDA_CHECK(cudaStreamWaitEvent(comm_stream, ready.get(), 0));

  {
    std::unique_lock<std::mutex> lock(state_->mutex);
    // The base class checked for an abort before calling us, but the watchdog may have aborted the
    // comm since; after ncclCommAbort it must not be touched.
    if (state_->aborted.load() || !state_->comm)
      throw DistError(ErrorKind::kAborted, "communicator '" + name() + "' was aborted at " + where() +
                                               " after an earlier failure:\n" + aborted_reason());
    std::string failure;
    ErrorKind kind = ErrorKind::kBackend;
    try {
      enqueue(op, state_->comm, comm_stream);
      state_->wait_ready(to_string(op.type));
      LA_CUDA_CHECK(cudaEventRecord(work->end_event().get(), comm_stream));
    } catch (const DistError& e) {
      failure = e.what();
      kind = e.kind();
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (!failure.empty()) {
      // The collective may be enqueued but is not tracked: nothing would ever wait for it or end it.
      // Abort the comm (so that its kernels stop and shutdown does not hang), then report.
      lock.unlock();
      abort(std::string("starting ") + to_string(op.type) + " failed: " + failure);
      throw DistError(kind, failure);
    }
  }
  // The caching allocator must not hand these blocks to another stream before NCCL is done.
  for (const at::Tensor* t : {&op.output, &op.input})
    if (t->defined()) c10::cuda::CUDACachingAllocator::recordStream(t->storage().data_ptr(), state_->stream);
  std::vector<at::Tensor> held;
  if (op.output.defined()) held.push_back(op.output);
  if (op.input.defined()) held.push_back(op.input);
  work->hold(std::move(held));
  work->mark_running();
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    std::erase_if(state_->outstanding, [](const std::weak_ptr<Work>& w) { return w.expired(); });
    state_->outstanding.push_back(work);
  }
  return work;
}

void NcclCommunicator::enqueue(Op& op, ncclComm_t comm, cudaStream_t comm_stream) {
  switch (op.type) {
    case OpType::kAllGather:
      LA_NCCL_CHECK(ncclAllGather(op.input.data_ptr(), op.output.data_ptr(), op.input.nbytes(), ncclUint8, comm,
                                  comm_stream));
      break;
    case OpType::kReduceScatter:
      LA_NCCL_CHECK(ncclReduceScatter(op.input.data_ptr(), op.output.data_ptr(), op.output.numel(),
                                      nccl_type(op.input.scalar_type()), nccl_op(op.reduce), comm, comm_stream));
      break;
    case OpType::kAllReduce:
      LA_NCCL_CHECK(ncclAllReduce(op.output.data_ptr(), op.output.data_ptr(), op.output.numel(),
                                  nccl_type(op.output.scalar_type()), nccl_op(op.reduce), comm, comm_stream));
      break;
    case OpType::kBroadcast:
      LA_NCCL_CHECK(ncclBroadcast(op.output.data_ptr(), op.output.data_ptr(), op.output.nbytes(), ncclUint8,
                                  op.root, comm, comm_stream));
      break;
    case OpType::kBarrier: {
      at::Tensor one = at::empty({1}, at::TensorOptions().dtype(at::kFloat).device(device_));
      LA_NCCL_CHECK(ncclAllReduce(one.data_ptr(), one.data_ptr(), 1, ncclFloat32, ncclSum, comm, comm_stream));
      op.output = one;
      break;
    }
  }
}

std::shared_ptr<Communicator> NcclCommunicator::split(int color, int key, const std::string& name) {
  auto sub = std::static_pointer_cast<MpiCommunicator>(bootstrap_->split(color, key, name + "/bootstrap"));
  return std::shared_ptr<NcclCommunicator>(
      new NcclCommunicator(sub, device_, sub->rank(), sub->size(), name, services_));
}

void NcclCommunicator::abort(const std::string& reason) {
  set_aborted(reason);
  std::vector<std::shared_ptr<Work>> pending;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (state_->aborted.exchange(true)) return;
    // ncclCommAbort stops in-flight kernels; ncclCommDestroy could block forever here.
    if (state_->comm) ncclCommAbort(state_->comm);
    for (auto& w : state_->outstanding)
      if (auto p = w.lock()) pending.push_back(std::move(p));
    state_->outstanding.clear();
  }
  for (auto& w : pending)
    w->mark_failed(ErrorKind::kAborted, "communicator '" + name() + "' was aborted:\n" + reason);
}

}  // namespace lookahead::dist
