// World: the process's place in the job (rank, size, node, device) and owner of MPI, of the
// communicators and of the reliability services (flight recorder, watchdog). It is the only
// process-wide object; launch/ creates exactly one and passes it by reference.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"

namespace lookahead::dist {

/// How the World starts and how it reacts to a failure.
struct WorldConfig {
  CommConfig comm;
  /// Bind this process to cuda:(local_rank % device_count) when CUDA is available.
  bool bind_device = true;
  /// After a collective timed out, seconds the process gets to report and exit by itself before
  /// the watchdog ends the whole job with MPI_Abort (so every surviving rank can print its report).
  double abort_grace_s = 2.0;
  /// Exit code of a job ended by a distributed failure (timeout, rank mismatch).
  int fatal_exit_code = 3;
};

/// The process's place in the job. Started under mpirun it spans all ranks; started alone it is
/// a world of one (MPI singleton), and the same code runs unchanged.
class World {
 public:
  /// Initializes MPI with MPI_THREAD_MULTIPLE (communication threads call MPI concurrently),
  /// discovers node-local ranks, binds the device and starts the watchdog. One per process.
  World(const WorldConfig& config, int* argc, char*** argv);
  /// Releases communicators and finalizes MPI, or ends the job with MPI_Abort after a fatal error.
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  /// Rank among the processes on this node, and their number.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  /// Index of this node (0 .. num_nodes-1, ordered by lowest world rank), and the node count.
  int node_rank() const { return node_rank_; }
  int num_nodes() const { return num_nodes_; }
  const std::string& hostname() const { return hostname_; }
  /// Device this process computes on: cuda:i when bound, cpu otherwise.
  c10::Device device() const { return device_; }
  bool is_root() const { return rank_ == 0; }
  const WorldConfig& config() const { return config_; }
  /// MPI library version string.
  std::string mpi_version() const;

  /// MPI communicator over all ranks (CPU tensors).
  CommunicatorPtr comm() const { return world_; }
  /// MPI communicator over the ranks of this node.
  CommunicatorPtr node_comm() const { return node_; }
  /// NCCL communicator over all ranks (CUDA tensors on device()), created on first use.
  /// Throws DistError if this build has no NCCL, this process has no GPU, or two ranks of a node
  /// were bound to the same GPU (more ranks than visible GPUs).
  CommunicatorPtr nccl_comm();
  /// The communicator for tensors on `device`: NCCL for CUDA, MPI for CPU.
  CommunicatorPtr comm_for(const c10::Device& device);

  /// Refuses to go on unless every rank passes the same `value` for `what` (e.g. a config hash):
  /// throws DistError(kMismatch) on every rank, naming the ranks whose value differs.
  void check_consistent(const std::string& what, uint64_t value) const;

  /// Reports `message` on stderr, then ends the whole job (MPI_Abort) with `code`. For main().
  [[noreturn]] void abort(int code, const std::string& message);

  /// Shared services (recorder, watchdog) of this world's communicators.
  const std::shared_ptr<CommServices>& services() const { return services_; }

 private:
  void on_fatal(const std::string& report);
  /// Collective over the node: throws DistError naming the ranks that share this rank's GPU.
  void check_own_gpu();

  WorldConfig config_;
  int rank_ = 0, size_ = 1;
  int local_rank_ = 0, local_size_ = 1;
  int node_rank_ = 0, num_nodes_ = 1;
  std::string hostname_;
  c10::Device device_{c10::kCPU};
  std::shared_ptr<CommServices> services_;
  CommunicatorPtr world_;
  CommunicatorPtr node_;
  CommunicatorPtr nccl_;
  std::atomic<bool> failed_{false};
  std::mutex report_mutex_;
  std::string reported_;          // the watchdog's report, already on stderr
  Clock::time_point fatal_time_;  // when the watchdog reported it
  bool owns_mpi_ = false;
};

/// 64-bit xxHash of `text` (configuration hashes for World::check_consistent).
uint64_t hash_string(const std::string& text);

/// The ranks of one node that were bound to the same physical GPU, as a sentence with the fix, or
/// "" when each has its own. `gpu_ids[r]` identifies local rank r's GPU (its PCI bus id) and
/// `devices[r]` names it as that rank sees it ("cuda:0"); `visible` is the GPU count a rank sees.
/// NCCL cannot run two ranks on one GPU and would only say "Duplicate GPU detected" from inside
/// its init.
std::string shared_gpu_problem(const std::vector<std::string>& gpu_ids, const std::vector<std::string>& devices,
                               int visible);

}  // namespace lookahead::dist
