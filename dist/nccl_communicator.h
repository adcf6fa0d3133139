// NcclCommunicator: collectives on CUDA tensors through NCCL, on a dedicated high-priority
// communication stream ordered against the caller's stream with CUDA events (never a
// device-wide synchronization). Compiled only when torch has CUDA and NCCL was found.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <c10/core/Device.h>

#include <memory>
#include <string>

#include "dist/communicator.h"
#include "dist/cuda_check.h"  // LA_CUDA_CHECK
#include "dist/mpi_communicator.h"

namespace lookahead::dist {

/// Checks an NCCL result; throws DistError(kBackend) naming the call, the rank and the host.
#define LA_NCCL_CHECK(call)                                                                       \
  do {                                                                                            \
    ncclResult_t la_nccl_rc_ = (call);                                                            \
    if (la_nccl_rc_ != ncclSuccess && la_nccl_rc_ != ncclInProgress)                              \
      ::lookahead::dist::detail::throw_call_error(                                                \
          "NCCL", #call, std::string(ncclGetErrorString(la_nccl_rc_)) + " / " + ncclGetLastError(nullptr), \
          __FILE__, __LINE__);                                                                    \
  } while (0)

/// NCCL collectives among the ranks of an MPI communicator, on one CUDA device per rank.
///
/// Work::wait() makes the caller's current stream wait for the collective (the host does not
/// block); Work::synchronize() blocks the host. Tensors are protected from the caching
/// allocator until the communication stream is done with them.
class NcclCommunicator final : public Communicator {
 public:
  /// Collective over `bootstrap`: rank 0 creates the NCCL unique id and broadcasts it over MPI,
  /// then every rank joins (non-blocking init, bounded by the configured timeout).
  static std::shared_ptr<NcclCommunicator> create(MpiCommunicator& bootstrap, c10::Device device,
                                                  std::string name, std::shared_ptr<CommServices> services);
  ~NcclCommunicator() override;

  const char* backend() const override { return "nccl"; }
  c10::Device device() const { return device_; }
  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override;
  void abort(const std::string& reason) override;

  struct State;  // shared with in-flight works

 protected:
  WorkHandle start(Op op, WorkInfo info) override;
  void check_device(const at::Tensor& t, const char* what) const override;

 private:
  /// The NCCL call of `op` on `comm_stream` (caller holds the state's mutex).
  void enqueue(Op& op, ncclComm_t comm, cudaStream_t comm_stream);
  NcclCommunicator(std::shared_ptr<MpiCommunicator> bootstrap, c10::Device device, int rank, int size,
                   std::string name, std::shared_ptr<CommServices> services);

  std::shared_ptr<MpiCommunicator> bootstrap_;  // same ranks; ids for splits, signature checks
  c10::Device device_;
  std::shared_ptr<State> state_;
};

/// NCCL version of the linked library, e.g. "2.27.7".
std::string nccl_version();

/// PCI bus id of a CUDA device ("0000:1B:00.0"): the same physical GPU gives the same id in every
/// process, whatever CUDA_VISIBLE_DEVICES calls it there.
std::string cuda_device_id(c10::Device device);

}  // namespace lookahead::dist
