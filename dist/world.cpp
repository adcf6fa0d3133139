// MPI bootstrap, node discovery, device binding, and the job-ending policy on fatal errors.
#include "dist/world.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <mpi.h>
#include <torch/cuda.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <thread>

#include "dist/mpi_communicator.h"
#include "lookahead/build_config.h"
#if LA_HAVE_NCCL
#include "dist/nccl_communicator.h"
#endif

namespace lookahead::dist {

uint64_t hash_string(const std::string& text) { return XXH64(text.data(), text.size(), 0); }

World::World(const WorldConfig& config, int* argc, char*** argv) : config_(config) {
  int initialized = 0;
  LA_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    LA_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
    owns_mpi_ = true;
  }
  LA_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  LA_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  hostname_ = host;
  detail::set_identity(rank_, size_, hostname_);

  // Node-local ranks: processes that can share memory are on one node.
  MPI_Comm local = MPI_COMM_NULL;
  LA_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
  MpiCommHandle local_owner(local);
  LA_MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
  LA_MPI_CHECK(MPI_Comm_size(local, &local_size_));
  int leader = local_rank_ == 0 ? 1 : 0;
  LA_MPI_CHECK(MPI_Allreduce(&leader, &num_nodes_, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
  int leaders_before = 0;  // node index = number of node leaders with a lower world rank
  LA_MPI_CHECK(MPI_Exscan(&leader, &leaders_before, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
  if (rank_ == 0) leaders_before = 0;  // MPI_Exscan leaves rank 0's result undefined
  node_rank_ = leaders_before;
  LA_MPI_CHECK(MPI_Bcast(&node_rank_, 1, MPI_INT, 0, local));

  if (config_.bind_device && torch::cuda::is_available()) {
    auto count = static_cast<int>(torch::cuda::device_count());
    device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank_ % count));
    c10::impl::getDeviceGuardImpl(c10::kCUDA)->setDevice(device_);
  }

  services_ = std::make_shared<CommServices>();
  services_->config = config_.comm;
  services_->origin = Clock::now();
  services_->recorder = std::make_shared<FlightRecorder>(config_.comm.flight_recorder_size);
  services_->watchdog = std::make_shared<Watchdog>(config_.comm.watchdog_poll_s, services_->recorder,
                                                   services_->origin,
                                                   [this](const std::string& report) { on_fatal(report); }, device_);
  world_ = MpiCommunicator::create(MPI_COMM_WORLD, "world", services_);
  node_ = MpiCommunicator::create(local, "node" + std::to_string(node_rank_), services_);
}

World::~World() {
  if (failed_.load()) {
    // A communication thread may be stuck inside MPI: MPI_Finalize would hang.
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, config_.fatal_exit_code);
  }
  nccl_.reset();
  node_.reset();
  world_.reset();
  services_.reset();  // joins the watchdog
  if (owns_mpi_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
}

std::string World::mpi_version() const {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(text, &len);
  std::string v(text, static_cast<size_t>(len));
  auto cut = v.find_first_of(",\n");
  return cut == std::string::npos ? v : v.substr(0, cut);
}

CommunicatorPtr World::nccl_comm() {
#if LA_HAVE_NCCL
  if (!nccl_) {
    if (!device_.is_cuda())
      throw DistError(ErrorKind::kInvalidArgument,
                      "an NCCL communicator needs a GPU, and this process has none (" + where() + ")");
    check_own_gpu();
    nccl_ = NcclCommunicator::create(static_cast<MpiCommunicator&>(*world_), device_, "world", services_);
  }
  return nccl_;
#else
  throw DistError(ErrorKind::kInvalidArgument,
                  "this build of Lookahead has no NCCL communicator (configured without CUDA torch or NCCL)");
#endif
}

void World::check_own_gpu() {
  // Every rank of the node sends its GPU's bus id and its own name for it.
  std::string bus_id;
#if LA_HAVE_NCCL
  bus_id = cuda_device_id(device_);
#endif
  const std::vector<std::string> ids = all_gather_strings(*node_, bus_id);
  const std::vector<std::string> devices = all_gather_strings(*node_, device_.str());
  const std::string problem = shared_gpu_problem(ids, devices, static_cast<int>(torch::cuda::device_count()));
  if (!problem.empty())
    throw DistError(ErrorKind::kInvalidArgument, "host " + hostname_ + ": " + problem + " (" + where() + ")");
}

std::string shared_gpu_problem(const std::vector<std::string>& gpu_ids, const std::vector<std::string>& devices,
                               int visible) {
  TORCH_CHECK(gpu_ids.size() == devices.size(), "shared_gpu_problem: ", gpu_ids.size(), " ids for ", devices.size(),
              " devices");
  std::ostringstream msg;
  bool any = false;
  std::vector<bool> reported(gpu_ids.size(), false);
  for (size_t r = 0; r < gpu_ids.size(); ++r) {
    if (reported[r]) continue;
    std::vector<size_t> same{r};
    for (size_t q = r + 1; q < gpu_ids.size(); ++q)
      if (gpu_ids[q] == gpu_ids[r]) same.push_back(q);
    if (same.size() < 2) continue;
    msg << (any ? "; " : "") << "local ranks";
    for (size_t i = 0; i < same.size(); ++i) {
      reported[same[i]] = true;
      msg << (i == 0 ? " " : i + 1 == same.size() ? " and " : ", ") << same[i] << " (" << devices[same[i]] << ")";
    }
    msg << " are all bound to GPU " << gpu_ids[r];
    any = true;
  }
  if (!any) return {};
  msg << ". NCCL runs one rank per GPU: this node has " << gpu_ids.size() << " ranks and each sees " << visible
      << " GPU(s). Launch at most " << visible << " rank(s) per node (e.g. mpirun --map-by ppr:" << visible
      << ":node), or give each rank a GPU of its own (CUDA_VISIBLE_DEVICES)";
  return msg.str();
}

CommunicatorPtr World::comm_for(const c10::Device& device) {
  return device.is_cuda() ? nccl_comm() : world_;
}

void World::check_consistent(const std::string& what, uint64_t value) const {
  auto opts = at::TensorOptions().dtype(at::kLong);
  int64_t v = static_cast<int64_t>(value);
  at::Tensor both = at::tensor({v, -v}, opts);  // MAX of [v, -v] gives max and -min
  world_->all_reduce(both, ReduceOp::kMax)->wait();
  if (both[0].item<int64_t>() == -both[1].item<int64_t>()) return;
  at::Tensor mine = at::tensor({v}, opts);
  at::Tensor all = at::empty({size_}, opts);
  world_->all_gather(all, mine)->wait();
  std::ostringstream msg;
  msg << what << " differs across ranks; refusing to start (seen at " << where() << "):\n";
  auto a = all.accessor<int64_t, 1>();
  for (int r = 0; r < size_; ++r) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(a[r]));
    msg << "  rank " << r << ": " << hex << (a[r] != a[0] ? "   <-- differs from rank 0" : "") << "\n";
  }
  throw DistError(ErrorKind::kMismatch, msg.str());
}

void World::abort(int code, const std::string& message) {
  bool already_reported = false;
  Clock::time_point fatal_time;
  {
    std::lock_guard<std::mutex> lock(report_mutex_);
    already_reported = !reported_.empty() && message == reported_;
    fatal_time = fatal_time_;
  }
  if (already_reported) {
    std::fprintf(stderr, "[lookahead %s] ending the job (exit code %d)\n", where().c_str(), code);
    std::fflush(stderr);
    // The other survivors time out moments later; MPI_Abort now would kill them before they can
    // print their own report, and each rank's history is what locates the culprit.
    std::this_thread::sleep_until(fatal_time + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double>(config_.abort_grace_s)));
  } else
    std::fprintf(stderr, "[lookahead %s] error: %s\n", where().c_str(), message.c_str());
  std::fflush(stderr);
  failed_.store(true);
  if (size_ == 1) {
    // Nobody to take down: MPI_Abort would only add OpenMPI's banner to the message above.
    std::fflush(stdout);
    std::_Exit(code);
  }
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; keep the [[noreturn]] promise regardless
}

void World::on_fatal(const std::string& report) {
  {
    std::lock_guard<std::mutex> lock(report_mutex_);
    reported_ = report;
    fatal_time_ = Clock::now();
  }
  std::fprintf(stderr, "[lookahead %s] %s\n", where().c_str(), report.c_str());
  std::fflush(stderr);
  failed_.store(true);
  if (nccl_) nccl_->abort(report);
  // Let the caller's wait() throw and main() end the job with its own message; if nobody does
  // (the main thread is busy elsewhere), end it from here after the grace period.
  int code = config_.fatal_exit_code;
  double grace = config_.abort_grace_s;
  std::thread([code, grace] {
    std::this_thread::sleep_for(std::chrono::duration<double>(grace));
    std::fprintf(stderr, "[lookahead %s] ending the job after a collective timeout\n", where().c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }).detach();
}

}  // namespace lookahead::dist
