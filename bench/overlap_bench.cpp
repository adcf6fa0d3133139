// bench_overlap: how much of a collective's time a communicator hides behind compute. Times the
// compute alone, the collective alone, and both (issue, compute, wait), and reports the hidden
// fraction of the communication time. --backend mpi (default): the MPI communicator on CPU tensors,
// matmuls on the calling thread. --backend nccl: the NCCL communicator on the rank's GPU, matmuls
// enqueued on the current CUDA stream while the collective runs on the communicator's own stream.
#include <ATen/Parallel.h>
#include <mpi.h>
#include <sched.h>
#include <torch/torch.h>
#include <boost/program_options/options_description.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/bench_common.h"
#include "dist/world.h"
#include "lookahead/build_config.h"
#if LA_HAVE_NCCL
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "dist/cuda_event.h"
#include "dist/nccl_communicator.h"
#endif

namespace lookahead::bench {
namespace {

namespace po = boost::program_options;

constexpr const char* kHiddenDefinition =
    "hidden = clamp((T_comp + T_comm - T_both) / T_comm, 0, 1): the fraction of the collective's time "
    "hidden behind compute (1 = free communication, 0 = no overlap)";

/// --matmul-size when not given: large enough for a GPU to be busy rather than launch-bound.
constexpr int64_t kCudaMatmulSize = 2048;

struct Options : CommonOptions {
  std::string backend = "mpi";
  Collective op = Collective::kAllReduce;
  int64_t bytes = int64_t{64} << 20;
  int64_t matmul_size = 256;
  bool matmul_size_given = false;
  int64_t matmuls = 0;  // 0: calibrate so that compute takes about as long as the collective
  int reps = 5;
  int warmup = 2;
  bool verify = false;
};

void describe_options(po::options_description& desc) {
  // One option per line reads as a table.
  // clang-format off
  desc.add_options()
      ("backend", po::value<std::string>()->default_value("mpi"),
       "mpi: CPU tensors, matmuls on the calling thread; nccl: CUDA tensors, matmuls on the current stream "
       "(needs a GPU)")
      ("op", po::value<std::string>()->default_value("all_reduce"), "all_reduce, all_gather or reduce_scatter")
      ("bytes", po::value<std::string>()->default_value("64M"),
       "collective size S (nccl-tests meaning; K/M/G suffixes), float32")
      ("matmul-size", po::value<int64_t>()->default_value(256),
       "compute: square float32 matmuls of this size (--backend nccl: 2048 unless given)")
      ("matmuls", po::value<int64_t>()->default_value(0),
       "matmuls per compute block; 0 calibrates so that compute takes about as long as the collective")
      ("reps", po::value<int>()->default_value(5), "measured repetitions (medians are reported)")
      ("warmup", po::value<int>()->default_value(2), "untimed collectives before calibration")
      ("verify-collectives", po::bool_switch(), "run with comm.verify_signatures on (default off)");
  // clang-format on
}

/// Fills `opt` from the parsed command line. Throws on bad input.
void read_options(const po::variables_map& vm, Options& opt) {
  opt.backend = vm["backend"].as<std::string>();
  if (opt.backend != "mpi" && opt.backend != "nccl")
    throw std::invalid_argument("--backend must be mpi or nccl, not '" + opt.backend + "'");
  opt.op = parse_collective(vm["op"].as<std::string>(), "op");
  opt.bytes = parse_bytes(vm["bytes"].as<std::string>(), "bytes");
  opt.matmul_size = vm["matmul-size"].as<int64_t>();
  opt.matmul_size_given = !vm["matmul-size"].defaulted();
  opt.matmuls = vm["matmuls"].as<int64_t>();
  opt.reps = vm["reps"].as<int>();
  opt.warmup = vm["warmup"].as<int>();
  opt.verify = vm["verify-collectives"].as<bool>();
  if (opt.matmul_size < 1) throw std::invalid_argument("--matmul-size must be >= 1");
  if (opt.matmuls < 0) throw std::invalid_argument("--matmuls must be >= 0");
  if (opt.reps < 1) throw std::invalid_argument("--reps must be >= 1");
  if (opt.warmup < 0) throw std::invalid_argument("--warmup must be >= 0");
}

/// A fixed amount of work: `count` matmuls into a preallocated result. On the CPU they run on the
/// calling thread; on a GPU they are enqueued on the current stream and finish() waits for them.
class Compute {
 public:
  Compute(int64_t size, int64_t count, c10::Device device = c10::Device(c10::kCPU))
      : a_(at::rand({size, size}, at::TensorOptions().device(device))),
        b_(at::rand({size, size}, at::TensorOptions().device(device))),
        c_(at::empty({size, size}, at::TensorOptions().device(device))),
        count_(count),
        device_(device) {}
  void set_count(int64_t count) { count_ = count; }
  int64_t count() const { return count_; }
  void operator()() {
    for (int64_t i = 0; i < count_; ++i) at::mm_out(c_, a_, b_);
  }
  /// Blocks until the enqueued matmuls are done: the current stream only, never the whole device
  /// (that would also wait for the communication stream). Nothing to wait for on the CPU.
  void finish() const {
#if LA_HAVE_NCCL
    if (device_.is_cuda()) c10::cuda::getCurrentCUDAStream(device_.index()).synchronize();
#endif
  }

 private:
  at::Tensor a_, b_, c_;
  int64_t count_;
  c10::Device device_;
};

/// Cores this process may run on (its MPI binding). Overlap needs one for the communication
/// thread besides the one computing; with a single core the two can only take turns.
int allowed_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
  return CPU_COUNT(&set);
}

double seconds_since(dist::Clock::time_point t0, dist::Clock::time_point t1) {
  return std::chrono::duration<double>(t1 - t0).count();
}

/// One repetition; every time is the maximum over ranks (what a synchronous step waits for).
struct Rep {
  double comm = 0.0;             ///< collective alone: issue -> wait returned
  double compute = 0.0;          ///< compute alone
  double both = 0.0;             ///< issue, compute, wait: issue -> wait returned
  double comm_in_both = 0.0;     ///< issue -> collective completed, while computing
  double compute_in_both = 0.0;  ///< the compute block, while the collective runs

  double hidden() const { return comm > 0 ? std::clamp((compute + comm - both) / comm, 0.0, 1.0) : 0.0; }
  nlohmann::json to_json() const {
    return {{"comm_s", comm},
            {"compute_s", compute},
            {"both_s", both},
            {"comm_in_both_s", comm_in_both},
            {"compute_in_both_s", compute_in_both},
            {"hidden", hidden()}};
  }
};

double time_comm(dist::Communicator& comm, const Buffers& b, MPI_Comm ctl) {
  LA_MPI_CHECK(MPI_Barrier(ctl));
  auto t0 = dist::Clock::now();
  // The host waits for completion (MPI: the same as wait(); NCCL: wait() only orders the stream).
  issue(comm, b)->synchronize();
  return seconds_since(t0, dist::Clock::now());
}

double time_compute(Compute& compute, MPI_Comm ctl) {
  LA_MPI_CHECK(MPI_Barrier(ctl));
  auto t0 = dist::Clock::now();
  compute();
  compute.finish();
  return seconds_since(t0, dist::Clock::now());
}

#if LA_HAVE_NCCL

/// The `both` phase on a GPU: the host only enqueues, so it is free to watch both streams. Issue
/// the collective (communication stream), enqueue the matmuls (current stream), then poll both
/// until done: the times at which each was seen done are comm|both and compute|both (to the
/// polling resolution, microseconds). A collective that fails or times out throws; none hangs,
/// since the watchdog fails a collective past its timeout.
void both_on_gpu(dist::Communicator& comm, const Buffers& b, Compute& compute, c10::Device device, Rep& local) {
  c10::cuda::CUDAGuard guard(device);
  dist::CudaEvent compute_done;
  auto t0 = dist::Clock::now();
  dist::WorkHandle work = issue(comm, b);
  compute();
  LA_CUDA_CHECK(cudaEventRecord(compute_done.get(), c10::cuda::getCurrentCUDAStream(device.index()).stream()));
  std::optional<dist::Clock::time_point> t_comm, t_compute;
  while (!t_comm || !t_compute) {
    if (!t_comm && work->is_done()) t_comm = dist::Clock::now();
    if (!t_compute) {
      const cudaError_t rc = cudaEventQuery(compute_done.get());
      if (rc == cudaSuccess)
        t_compute = dist::Clock::now();
      else if (rc != cudaErrorNotReady)
        LA_CUDA_CHECK(rc);
    }
  }
  work->synchronize();  // throws the collective's error, if it failed
  local.both = seconds_since(t0, std::max(*t_comm, *t_compute));
  local.comm_in_both = seconds_since(t0, *t_comm);
  local.compute_in_both = seconds_since(t0, *t_compute);
}
#endif

Rep measure(dist::Communicator& comm, const Buffers& b, Compute& compute, MPI_Comm ctl, c10::Device device) {
  Rep local;
  local.comm = time_comm(comm, b, ctl);
  local.compute = time_compute(compute, ctl);
  LA_MPI_CHECK(MPI_Barrier(ctl));
  if (device.is_cuda()) {
#if LA_HAVE_NCCL
    both_on_gpu(comm, b, compute, device, local);
#endif
  } else {
    auto t0 = dist::Clock::now();
    dist::WorkHandle work = issue(comm, b);
    compute();
    auto t_compute = dist::Clock::now();
    work->wait();
    auto t_both = dist::Clock::now();
    local.both = seconds_since(t0, t_both);
    local.compute_in_both = seconds_since(t0, t_compute);
    // end_time() is when the communication thread saw it finish, which may precede the wait.
    local.comm_in_both = seconds_since(t0, work->end_time());
  }
  return Rep{max_over_ranks(local.comm, ctl), max_over_ranks(local.compute, ctl), max_over_ranks(local.both, ctl),
             max_over_ranks(local.comm_in_both, ctl), max_over_ranks(local.compute_in_both, ctl)};
}

/// The collective alone, one matmul, and the matmul count that makes compute match it.
struct Calibration {
  double comm_s = 0.0;
  double matmul_s = 0.0;
  int64_t matmuls = 0;
};

/// Matmuls per compute block so that compute takes about as long as the collective alone.
/// Uses maxima over ranks, so every rank computes the same count. Collective.
Calibration calibrate(dist::Communicator& comm, const Buffers& b, Compute& compute, MPI_Comm ctl) {
  constexpr int kSamples = 3;
  constexpr int64_t kBatch = 8;
  auto per_matmul = [&](int64_t count) {
    compute.set_count(count);
    std::vector<double> s;
    for (int i = 0; i < kSamples; ++i) s.push_back(time_compute(compute, ctl) / static_cast<double>(count));
    return max_over_ranks(median(s), ctl);
  };
  std::vector<double> comm_s;
  for (int i = 0; i < kSamples; ++i) comm_s.push_back(time_comm(comm, b, ctl));
  Calibration cal;
  cal.comm_s = max_over_ranks(median(comm_s), ctl);
  // A short batch gives a first estimate; a block of about the target length then corrects it for
  // what only shows over longer runs (cache eviction, sustained clock, the other rank's load).
  double first = per_matmul(kBatch);
  cal.matmul_s = per_matmul(std::max<int64_t>(1, std::llround(cal.comm_s / first)));
  cal.matmuls = std::max<int64_t>(1, std::llround(cal.comm_s / cal.matmul_s));
  return cal;
}

void print_row(const char* label, const Rep& r) {
  std::printf("  %-7s %10.2f %12.2f %10.2f %14.2f %17.2f %8.3f\n", label, r.comm * 1e3, r.compute * 1e3, r.both * 1e3,
              r.comm_in_both * 1e3, r.compute_in_both * 1e3, r.hidden());
}

/// The communicator of --backend, and the device its tensors and the compute live on.
std::pair<dist::CommunicatorPtr, c10::Device> backend_comm(const Options& opt, dist::World& world) {
  if (opt.backend == "mpi") return {world.comm(), c10::Device(c10::kCPU)};
  if (!world.device().is_cuda()) throw std::runtime_error("--backend nccl needs a GPU, and this process has none");
#if LA_HAVE_NCCL
  return {world.nccl_comm(), world.device()};
#else
  throw std::runtime_error("--backend nccl: this build of Lookahead has no NCCL");
#endif
}

int run(const Options& opt, dist::World& world) {
  // Compute on one thread, so that a second core (where the rank has one) stays free for the
  // communication thread; whether it has one is printed below.
  at::set_num_threads(1);
  const nlohmann::json meta = run_metadata(world);  // before our own load shows in the load average
  const int cores = allowed_cores();
  dist::MpiCommHandle ctl_handle = duplicate_world();
  MPI_Comm ctl = ctl_handle.get();
  const auto [comm, device] = backend_comm(opt, world);
  const bool gpu = device.is_cuda();
  const int64_t matmul_size = gpu && !opt.matmul_size_given ? kCudaMatmulSize : opt.matmul_size;
  const int n = world.size();
  Buffers b = make_buffers(opt.op, element_count(opt.op, opt.bytes, n), n,
                           at::TensorOptions().dtype(at::kFloat).device(device));
  const int64_t bytes = b.count * 4;
  Compute compute(matmul_size, 1, device);
  for (int i = 0; i < opt.warmup; ++i) issue(*comm, b)->synchronize();
  compute();
  compute.finish();

  Calibration cal = calibrate(*comm, b, compute, ctl);
  const bool calibrated = opt.matmuls == 0;
  compute.set_count(calibrated ? cal.matmuls : opt.matmuls);

  std::vector<Rep> reps;
  for (int i = 0; i < opt.reps; ++i) reps.push_back(measure(*comm, b, compute, ctl, device));
  auto median_of = [&](double Rep::*field) {
    std::vector<double> v;
    for (const Rep& r : reps) v.push_back(r.*field);
    return median(v);
  };
  Rep med{median_of(&Rep::comm), median_of(&Rep::compute), median_of(&Rep::both), median_of(&Rep::comm_in_both),
          median_of(&Rep::compute_in_both)};
  const double speedup = med.both > 0 ? (med.comm + med.compute) / med.both : 0.0;

  if (world.is_root()) {
    std::printf(
        "# bench_overlap: %d ranks on %d node(s); %s of %lld B (%s) float32 through the %s communicator "
        "(verify_signatures %s)\n",
        n, world.num_nodes(), to_string(opt.op), static_cast<long long>(bytes), format_bytes(bytes).c_str(),
        gpu ? "NCCL" : "MPI", opt.verify ? "on" : "off");
    std::printf("# MPI: %s; load average at start %.2f on %d cores\n", world.mpi_version().c_str(),
                meta["loadavg_1m"].get<double>(), static_cast<int>(std::thread::hardware_concurrency()));
    if (gpu) {
#if LA_HAVE_NCCL
      std::printf("# NCCL %s on %s (rank 0); the collective runs on the communicator's stream\n",
                  dist::nccl_version().c_str(), device.str().c_str());
#endif
      std::printf("# compute: %lld matmuls of %lldx%lld float32 on the current CUDA stream%s\n",
                  static_cast<long long>(compute.count()), static_cast<long long>(matmul_size),
                  static_cast<long long>(matmul_size), calibrated ? " (calibrated: compute ~ comm)" : " (--matmuls)");
      std::printf(
          "# times: host clock; compute alone waits for its stream; in both, the host polls the collective "
          "and an event after the matmuls\n");
    } else {
      std::printf("# cores rank 0 may run on: %d (mpirun binding); the communication thread shares them with compute\n",
                  cores);
      std::printf("# compute: %lld matmuls of %lldx%lld float32 on the calling thread, at::set_num_threads(1)%s\n",
                  static_cast<long long>(compute.count()), static_cast<long long>(matmul_size),
                  static_cast<long long>(matmul_size), calibrated ? " (calibrated: compute ~ comm)" : " (--matmuls)");
    }
    std::printf("# calibration: collective alone %.2f ms, one matmul %.3f ms (max over ranks)\n", cal.comm_s * 1e3,
                cal.matmul_s * 1e3);
    std::printf("# comm = collective alone (issue -> wait); compute = compute alone; both = issue, compute, wait\n");
    std::printf("# comm|both = issue -> collective done while computing; compute|both = the compute block then\n");
    std::printf("# every time is the max over ranks of one repetition; the last row is the median over reps\n");
    std::printf("# %s\n#\n", kHiddenDefinition);
    std::printf("# %-7s %10s %12s %10s %14s %17s %8s\n", "rep", "comm(ms)", "compute(ms)", "both(ms)", "comm|both(ms)",
                "compute|both(ms)", "hidden");
    for (size_t i = 0; i < reps.size(); ++i) print_row(std::to_string(i).c_str(), reps[i]);
    print_row("median", med);
    std::printf("#\n# hidden fraction (from medians): %.3f; speedup over serial (comm + compute) / both: %.3f\n",
                med.hidden(), speedup);
    if (!opt.json_path.empty()) {
      nlohmann::json reps_json = nlohmann::json::array();
      for (const Rep& r : reps) reps_json.push_back(r.to_json());
      nlohmann::json config = {{"op", to_string(opt.op)},
                               {"bytes", bytes},
                               {"dtype", "float32"},
                               {"backend", opt.backend},
                               {"verify_signatures", opt.verify},
                               {"matmul_size", matmul_size},
                               {"matmuls", compute.count()},
                               {"matmuls_calibrated", calibrated},
                               {"reps", opt.reps},
                               {"compute_threads", 1},
                               {"rank0_allowed_cores", cores}};
      if (gpu) {
        // The matmuls run on the GPU: the host's threads and cores do not bound them.
        config.erase("compute_threads");
        config.erase("rank0_allowed_cores");
        config["device"] = device.str();
        config["compute_stream"] = "current CUDA stream; the collective on the NCCL communicator's stream";
      }
      nlohmann::json doc = {
          {"benchmark", "bench_overlap"},
          {"meta", meta},
          {"config", config},
          {"calibration", {{"comm_s", cal.comm_s}, {"matmul_s", cal.matmul_s}, {"matmuls", cal.matmuls}}},
          {"definition", kHiddenDefinition},
          {"times", "each repetition: max over ranks; median: median over repetitions"},
          {"reps", reps_json},
          {"median", med.to_json()},
          {"hidden", med.hidden()},
          {"speedup", speedup}};
      write_json(opt.json_path, doc);
    }
    std::fflush(stdout);
  }
  return kExitOk;
}

void configure_world(const Options& opt, dist::WorldConfig& config) { config.comm.verify_signatures = opt.verify; }

}  // namespace
}  // namespace lookahead::bench

int main(int argc, char** argv) {
  return lookahead::bench::bench_main<lookahead::bench::Options>(
      "bench_overlap", argc, argv, lookahead::bench::describe_options, lookahead::bench::read_options,
      lookahead::bench::run, lookahead::bench::configure_world);
}
