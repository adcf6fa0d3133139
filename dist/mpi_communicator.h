// MpiCommunicator: collectives on CPU tensors through MPI, executed by a dedicated communication
// thread so that a collective progresses while the caller computes.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "dist/communicator.h"

namespace lookahead::dist {

/// Move-only owner of an MPI_Comm (freed with MPI_Comm_free unless MPI is already finalized).
class MpiCommHandle {
 public:
  MpiCommHandle() = default;
  explicit MpiCommHandle(MPI_Comm comm) : comm_(comm) {}
  ~MpiCommHandle();
  MpiCommHandle(MpiCommHandle&& other) noexcept : comm_(other.release()) {}
  MpiCommHandle& operator=(MpiCommHandle&& other) noexcept;
  MPI_Comm get() const { return comm_; }
  MPI_Comm release() {
    MPI_Comm c = comm_;
    comm_ = MPI_COMM_NULL;
    return c;
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

/// Collectives over an MPI communicator, for CPU tensors of any dtype (float16 / bfloat16
/// reductions are computed in float32). MPI must be initialized with MPI_THREAD_MULTIPLE.
class MpiCommunicator final : public Communicator {
 public:
  /// Duplicates `comm` (so our traffic never matches the caller's) and starts the thread.
  static std::shared_ptr<MpiCommunicator> create(MPI_Comm comm, std::string name,
                                                 std::shared_ptr<CommServices> services);
  ~MpiCommunicator() override;

  const char* backend() const override { return "mpi"; }
  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override;
  void abort(const std::string& reason) override;

  /// The underlying (duplicated) MPI communicator; calls on it must not race the thread's.
  MPI_Comm handle() const;
  /// Runs `fn` on the communication thread after every collective issued before it, and waits.
  /// For collective control operations (split, NCCL bootstrap) that must keep issue order.
  void run_blocking(const std::function<void(MPI_Comm)>& fn);

  /// Compares `sig` across the ranks of `comm` (collective). Returns every rank's signature when
  /// they differ, an empty vector when all agree. Shared by the MPI and NCCL backends.
  static std::vector<OpSignature> compare_signatures(const OpSignature& sig, MPI_Comm comm, int size);

 protected:
  WorkHandle start(Op op, WorkInfo info) override;
  void check_device(const at::Tensor& t, const char* what) const override;

 private:
  struct State;
  MpiCommunicator(MpiCommHandle comm, int rank, int size, std::string name,
                  std::shared_ptr<CommServices> services);
  void execute(const Op& op, MPI_Comm comm);

  std::shared_ptr<State> state_;
};

}  // namespace lookahead::dist
