// bench_overlap: how much of a collective's time the MPI communicator hides behind compute on
// the calling thread. Times the compute alone, the collective alone, and both (issue, compute,
// wait), and reports the hidden fraction of the communication time.
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
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_common.h"
#include "dist/world.h"

namespace lookahead::bench {
namespace {

namespace po = boost::program_options;

constexpr const char* kHiddenDefinition =
    "hidden = clamp((T_comp + T_comm - T_both) / T_comm, 0, 1): the fraction of the collective's time "
    "hidden behind compute (1 = free communication, 0 = no overlap)";

struct Options : CommonOptions {
  Collective op = Collective::kAllReduce;
  int64_t bytes = int64_t{64} << 20;
  int64_t matmul_size = 256;
  int64_t matmuls = 0;  // 0: calibrate so that compute takes about as long as the collective
  int reps = 5;
  int warmup = 2;
  bool verify = false;
};

void describe_options(po::options_description& desc) {
  // One option per line reads as a table.
  // clang-format off
  desc.add_options()
      ("op", po::value<std::string>()->default_value("all_reduce"), "all_reduce, all_gather or reduce_scatter")
      ("bytes", po::value<std::string>()->default_value("64M"),
       "collective size S (nccl-tests meaning; K/M/G suffixes), float32")
      ("matmul-size", po::value<int64_t>()->default_value(256), "compute: square float32 matmuls of this size")
      ("matmuls", po::value<int64_t>()->default_value(0),
       "matmuls per compute block; 0 calibrates so that compute takes about as long as the collective")
      ("reps", po::value<int>()->default_value(5), "measured repetitions (medians are reported)")
      ("warmup", po::value<int>()->default_value(2), "untimed collectives before calibration")
      ("verify-collectives", po::bool_switch(), "run with comm.verify_signatures on (default off)");
  // clang-format on
}

/// Fills `opt` from the parsed command line. Throws on bad input.
void read_options(const po::variables_map& vm, Options& opt) {
  opt.op = parse_collective(vm["op"].as<std::string>(), "op");
  opt.bytes = parse_bytes(vm["bytes"].as<std::string>(), "bytes");
  opt.matmul_size = vm["matmul-size"].as<int64_t>();
  opt.matmuls = vm["matmuls"].as<int64_t>();
  opt.reps = vm["reps"].as<int>();
  opt.warmup = vm["warmup"].as<int>();
  opt.verify = vm["verify-collectives"].as<bool>();
  if (opt.matmul_size < 1) throw std::invalid_argument("--matmul-size must be >= 1");
  if (opt.matmuls < 0) throw std::invalid_argument("--matmuls must be >= 0");
  if (opt.reps < 1) throw std::invalid_argument("--reps must be >= 1");
  if (opt.warmup < 0) throw std::invalid_argument("--warmup must be >= 0");
}

/// A fixed amount of single-threaded work: `count` matmuls into a preallocated result.
class Compute {
 public:
  Compute(int64_t size, int64_t count)
      : a_(at::rand({size, size})), b_(at::rand({size, size})), c_(at::empty({size, size})), count_(count) {}
  void set_count(int64_t count) { count_ = count; }
  int64_t count() const { return count_; }
  void operator()() {
    for (int64_t i = 0; i < count_; ++i) at::mm_out(c_, a_, b_);
  }

 private:
  at::Tensor a_, b_, c_;
  int64_t count_;
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
  issue(comm, b)->wait();
  return seconds_since(t0, dist::Clock::now());
}

double time_compute(Compute& compute, MPI_Comm ctl) {
  LA_MPI_CHECK(MPI_Barrier(ctl));
  auto t0 = dist::Clock::now();
  compute();
  return seconds_since(t0, dist::Clock::now());
}

Rep measure(dist::Communicator& comm, const Buffers& b, Compute& compute, MPI_Comm ctl) {
  Rep local;
  local.comm = time_comm(comm, b, ctl);
  local.compute = time_compute(compute, ctl);
  LA_MPI_CHECK(MPI_Barrier(ctl));
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
  std::printf("  %-7s %10.2f %12.2f %10.2f %14.2f %17.2f %8.3f\n", label, r.comm * 1e3, r.compute * 1e3,
              r.both * 1e3, r.comm_in_both * 1e3, r.compute_in_both * 1e3, r.hidden());
}

int run(const Options& opt, dist::World& world) {
  // Compute on one thread, so that a second core (where the rank has one) stays free for the
  // communication thread; whether it has one is printed below.
  at::set_num_threads(1);
  const nlohmann::json meta = run_metadata(world);  // before our own load shows in the load average
  const int cores = allowed_cores();
  dist::MpiCommHandle ctl_handle = duplicate_world();
  MPI_Comm ctl = ctl_handle.get();
  dist::CommunicatorPtr comm = world.comm();
  const int n = world.size();
  Buffers b = make_buffers(opt.op, element_count(opt.op, opt.bytes, n), n, at::TensorOptions().dtype(at::kFloat));
  const int64_t bytes = b.count * 4;
  Compute compute(opt.matmul_size, 1);
  for (int i = 0; i < opt.warmup; ++i) issue(*comm, b)->wait();
  compute();

  Calibration cal = calibrate(*comm, b, compute, ctl);
  const bool calibrated = opt.matmuls == 0;
  compute.set_count(calibrated ? cal.matmuls : opt.matmuls);

  std::vector<Rep> reps;
  for (int i = 0; i < opt.reps; ++i) reps.push_back(measure(*comm, b, compute, ctl));
  auto median_of = [&](double Rep::*field) {
    std::vector<double> v;
    for (const Rep& r : reps) v.push_back(r.*field);
    return median(v);
  };
  Rep med{median_of(&Rep::comm), median_of(&Rep::compute), median_of(&Rep::both), median_of(&Rep::comm_in_both),
          median_of(&Rep::compute_in_both)};
  const double speedup = med.both > 0 ? (med.comm + med.compute) / med.both : 0.0;

  if (world.is_root()) {
    std::printf("# bench_overlap: %d ranks on %d node(s); %s of %lld B (%s) float32 through the MPI communicator "
                "(verify_signatures %s)\n",
                n, world.num_nodes(), to_string(opt.op), static_cast<long long>(bytes),
                format_bytes(bytes).c_str(), opt.verify ? "on" : "off");
    std::printf("# MPI: %s; load average at start %.2f on %d cores\n", world.mpi_version().c_str(),
                meta["loadavg_1m"].get<double>(), static_cast<int>(std::thread::hardware_concurrency()));
    std::printf("# cores rank 0 may run on: %d (mpirun binding); the communication thread shares them with compute\n",
                cores);
    std::printf("# compute: %lld matmuls of %lldx%lld float32 on the calling thread, at::set_num_threads(1)%s\n",
                static_cast<long long>(compute.count()), static_cast<long long>(opt.matmul_size),
                static_cast<long long>(opt.matmul_size), calibrated ? " (calibrated: compute ~ comm)" : " (--matmuls)");
    std::printf("# calibration: collective alone %.2f ms, one matmul %.3f ms (max over ranks)\n", cal.comm_s * 1e3,
                cal.matmul_s * 1e3);
    std::printf("# comm = collective alone (issue -> wait); compute = compute alone; both = issue, compute, wait\n");
    std::printf("# comm|both = issue -> collective done while computing; compute|both = the compute block then\n");
    std::printf("# every time is the max over ranks of one repetition; the last row is the median over reps\n");
    std::printf("# %s\n#\n", kHiddenDefinition);
    std::printf("# %-7s %10s %12s %10s %14s %17s %8s\n", "rep", "comm(ms)", "compute(ms)", "both(ms)",
                "comm|both(ms)", "compute|both(ms)", "hidden");
    for (size_t i = 0; i < reps.size(); ++i) print_row(std::to_string(i).c_str(), reps[i]);
    print_row("median", med);
    std::printf("#\n# hidden fraction (from medians): %.3f; speedup over serial (comm + compute) / both: %.3f\n",
                med.hidden(), speedup);
    if (!opt.json_path.empty()) {
      nlohmann::json reps_json = nlohmann::json::array();
      for (const Rep& r : reps) reps_json.push_back(r.to_json());
      nlohmann::json doc = {
          {"benchmark", "bench_overlap"},
          {"meta", meta},
          {"config",
           {{"op", to_string(opt.op)},
            {"bytes", bytes},
            {"dtype", "float32"},
            {"backend", "mpi"},
            {"verify_signatures", opt.verify},
            {"matmul_size", opt.matmul_size},
            {"matmuls", compute.count()},
            {"matmuls_calibrated", calibrated},
            {"reps", opt.reps},
            {"compute_threads", 1},
            {"rank0_allowed_cores", cores}}},
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
