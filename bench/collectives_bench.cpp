// bench_collectives: an nccl-tests-style bandwidth table for all_gather, reduce_scatter and
// all_reduce through Lookahead's communicators, next to the raw library call (MPI, or NCCL with
// --backend nccl) on the same sizes in the same run, plus an nccl-tests `-c`-style check of the
// results. Answers: what does the wrapper (thread hand-off, validation, signature check) cost?
#include <mpi.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <boost/program_options/options_description.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_common.h"
#include "dist/mpi_communicator.h"
#include "dist/world.h"
#include "lookahead/build_config.h"
#if LA_HAVE_NCCL
#include <c10/cuda/CUDAStream.h>

#include "dist/nccl_communicator.h"
#endif

namespace lookahead::bench {
namespace {

namespace po = boost::program_options;

/// nccl-tests' bus-bandwidth factor: busbw = algbw * factor is the per-link rate of an optimal
/// ring, comparable across ops and rank counts (and with the hardware's peak).
double bus_factor(Collective c, int n) {
  double ring = static_cast<double>(n - 1) / n;
  return c == Collective::kAllReduce ? 2.0 * ring : ring;
}

struct Options : CommonOptions {
  int64_t min_bytes = int64_t{1} << 10;
  int64_t max_bytes = int64_t{256} << 20;
  double step_factor = 2.0;
  int warmup = 5;
  int iters = 20;
  int rounds = 5;
  int64_t point_bytes = int64_t{1} << 30;
  std::string backend = "mpi";
  std::vector<Collective> ops{Collective::kAllGather, Collective::kReduceScatter, Collective::kAllReduce};
  bool verify_variant = true;
  bool check = true;

  /// Iterations per timed block at S bytes: --iters, fewer for large S so one block moves at most
  /// --max-point-bytes. A pure function of the flags, so every rank runs the same count.
  int iters_at(int64_t bytes) const {
    return static_cast<int>(std::clamp<int64_t>(point_bytes / bytes, 1, iters));
  }
  int warmup_at(int64_t bytes) const { return std::min(warmup, iters_at(bytes)); }
};

void describe_options(po::options_description& desc) {
  // One option per line reads as a table.
  // clang-format off
  desc.add_options()
      ("min-bytes,b", po::value<std::string>()->default_value("1K"), "smallest size S (bytes; K/M/G suffixes)")
      ("max-bytes,e", po::value<std::string>()->default_value("256M"), "largest size S")
      ("step-factor,f", po::value<double>()->default_value(2.0), "multiply S by this between points (> 1)")
      ("warmup,w", po::value<int>()->default_value(5), "untimed iterations per point and variant")
      ("iters,n", po::value<int>()->default_value(20), "timed iterations per block")
      ("rounds,r", po::value<int>()->default_value(5),
       "timed blocks per point and variant, variants interleaved; the median block is reported")
      ("max-point-bytes", po::value<std::string>()->default_value("1G"),
       "cap on S x iterations per block: large sizes run fewer iterations (at least 1)")
      ("backend", po::value<std::string>()->default_value("mpi"),
       "mpi: CPU tensors, raw MPI beside; nccl: CUDA tensors, raw NCCL beside (needs a GPU)")
      ("ops", po::value<std::string>()->default_value("all_gather,reduce_scatter,all_reduce"),
       "comma-separated collectives to run")
      ("no-verify-variant", po::bool_switch(), "skip the wrapper run with comm.verify_signatures on")
      ("no-check", po::bool_switch(), "skip the correctness check");
  // clang-format on
}

/// Fills `opt` from the parsed command line. Throws on bad input.
void read_options(const po::variables_map& vm, Options& opt) {
  opt.min_bytes = parse_bytes(vm["min-bytes"].as<std::string>(), "min-bytes");
  opt.max_bytes = parse_bytes(vm["max-bytes"].as<std::string>(), "max-bytes");
  opt.point_bytes = parse_bytes(vm["max-point-bytes"].as<std::string>(), "max-point-bytes");
  opt.step_factor = vm["step-factor"].as<double>();
  opt.warmup = vm["warmup"].as<int>();
  opt.iters = vm["iters"].as<int>();
  opt.rounds = vm["rounds"].as<int>();
  opt.backend = vm["backend"].as<std::string>();
  opt.verify_variant = !vm["no-verify-variant"].as<bool>();
  opt.check = !vm["no-check"].as<bool>();
  opt.ops.clear();
  std::stringstream ops(vm["ops"].as<std::string>());
  for (std::string name; std::getline(ops, name, ',');)
    if (!name.empty()) opt.ops.push_back(parse_collective(name, "ops"));
  if (opt.ops.empty()) throw std::invalid_argument("--ops: name at least one collective");
  if (opt.min_bytes > opt.max_bytes) throw std::invalid_argument("--min-bytes is larger than --max-bytes");
  // The MPI calls take an int element count; float32 elements are 4 bytes.
  if (opt.max_bytes / 4 > INT_MAX) throw std::invalid_argument("--max-bytes exceeds MPI's int element count");
  if (!(opt.step_factor > 1.0)) throw std::invalid_argument("--step-factor must be greater than 1");
  if (opt.warmup < 0) throw std::invalid_argument("--warmup must be >= 0");
  if (opt.iters < 1) throw std::invalid_argument("--iters must be >= 1");
  if (opt.rounds < 1) throw std::invalid_argument("--rounds must be >= 1");
  if (opt.backend != "mpi" && opt.backend != "nccl")
    throw std::invalid_argument("--backend must be mpi or nccl, not '" + opt.backend + "'");
}

/// Sizes S from --min-bytes to --max-bytes, each --step-factor times the previous one.
std::vector<int64_t> sizes(const Options& opt) {
  std::vector<int64_t> out;
  for (int64_t s = opt.min_bytes; s <= opt.max_bytes;) {
    out.push_back(s);
    s = std::max(s + 1, static_cast<int64_t>(std::llround(static_cast<double>(s) * opt.step_factor)));
  }
  return out;
}

/// One way of running a collective: through a Lookahead communicator or the raw library call.
class Runner {
 public:
  virtual ~Runner() = default;
  /// Issues one collective on `b` (sum reductions). May return before the data moved; finish().
  virtual void run(const Buffers& b) = 0;
  /// Blocks the host until everything run() issued has completed.
  virtual void finish() {}
};

/// Lookahead's Communicator, used as a training step would: issue, then wait.
class WrapperRunner final : public Runner {
 public:
  WrapperRunner(dist::CommunicatorPtr comm, c10::Device device) : comm_(std::move(comm)), device_(device) {}

  void run(const Buffers& b) override {
    // MPI: blocks until done. NCCL: orders the current stream after it; finish() syncs the host.
    issue(*comm_, b)->wait();
  }

  void finish() override {
    if (device_.is_cuda()) torch::cuda::synchronize(device_.index());
  }

 private:
  dist::CommunicatorPtr comm_;
  c10::Device device_;
};

/// Plain MPI calls from the calling thread, as an application without Lookahead would make them.
class RawMpiRunner final : public Runner {
 public:
  explicit RawMpiRunner(MPI_Comm comm) : comm_(comm) {}

  void run(const Buffers& b) override {
    const int chunk = static_cast<int>(b.chunk);
    switch (b.op) {
      case Collective::kAllGather:
        LA_MPI_CHECK(MPI_Allgather(b.input.data_ptr(), chunk, MPI_FLOAT, b.output.data_ptr(), chunk, MPI_FLOAT,
                                   comm_));
        break;
      case Collective::kReduceScatter:
        LA_MPI_CHECK(MPI_Reduce_scatter_block(b.input.data_ptr(), b.output.data_ptr(), chunk, MPI_FLOAT, MPI_SUM,
                                              comm_));
        break;
      case Collective::kAllReduce:
        // In place, like the communicator's all_reduce.
        LA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, b.output.data_ptr(), static_cast<int>(b.count), MPI_FLOAT,
                                   MPI_SUM, comm_));
        break;
    }
  }

 private:
  MPI_Comm comm_;
};

#if LA_HAVE_NCCL
/// Plain NCCL calls on a communicator of its own, enqueued on the current CUDA stream.
class RawNcclRunner final : public Runner {
 public:
  /// Collective over `bootstrap`: rank 0 makes the unique id and broadcasts it over MPI.
  RawNcclRunner(MPI_Comm bootstrap, int rank, int size, c10::Device device) : device_(device) {
    ncclUniqueId id{};
    if (rank == 0) LA_NCCL_CHECK(ncclGetUniqueId(&id));
    LA_MPI_CHECK(MPI_Bcast(&id, static_cast<int>(sizeof id), MPI_BYTE, 0, bootstrap));
    LA_NCCL_CHECK(ncclCommInitRank(&comm_, size, id, rank));
  }
  ~RawNcclRunner() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  RawNcclRunner(const RawNcclRunner&) = delete;
  RawNcclRunner& operator=(const RawNcclRunner&) = delete;

  void run(const Buffers& b) override {
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device_.index()).stream();
    const auto chunk = static_cast<size_t>(b.chunk);
    switch (b.op) {
      case Collective::kAllGather:
        LA_NCCL_CHECK(ncclAllGather(b.input.data_ptr(), b.output.data_ptr(), chunk, ncclFloat, comm_, stream));
        break;
      case Collective::kReduceScatter:
        LA_NCCL_CHECK(
            ncclReduceScatter(b.input.data_ptr(), b.output.data_ptr(), chunk, ncclFloat, ncclSum, comm_, stream));
        break;
      case Collective::kAllReduce:
        LA_NCCL_CHECK(ncclAllReduce(b.output.data_ptr(), b.output.data_ptr(), static_cast<size_t>(b.count),
                                    ncclFloat, ncclSum, comm_, stream));
        break;
    }
  }

  void finish() override {
    LA_CUDA_CHECK(cudaStreamSynchronize(c10::cuda::getCurrentCUDAStream(device_.index()).stream()));
  }

 private:
  ncclComm_t comm_ = nullptr;
  c10::Device device_;
};
#endif

/// Untimed runs that bring buffers, caches and the library's protocol state to steady state.
void warm_up(Runner& runner, const Buffers& b, int warmup) {
  for (int i = 0; i < warmup; ++i) runner.run(b);
  runner.finish();
}

/// Mean seconds per collective over `iters` runs started together on all ranks, maximum over
/// ranks (the slowest rank is what a synchronous training step waits for). Collective.
double time_block(Runner& runner, const Buffers& b, int iters, MPI_Comm ctl) {
  LA_MPI_CHECK(MPI_Barrier(ctl));
  double t0 = now_s();
  for (int i = 0; i < iters; ++i) runner.run(b);
  runner.finish();
  return max_over_ranks((now_s() - t0) / iters, ctl);
}

/// Rank r's input values: i % 251 + 1000 (r + 1). Small integers, so float sums over up to a
/// hundred ranks are exact and every wrong, missing or misplaced element is caught.
at::Tensor pattern(int r, int64_t count) {
  return (at::arange(count, at::kLong) % 251).to(at::kFloat) + 1000.0 * (r + 1);
}

/// Sum over n ranks of pattern(r, count).
at::Tensor pattern_sum(int n, int64_t count) {
  return (at::arange(count, at::kLong) % 251).to(at::kFloat) * n + 1000.0 * n * (n + 1) / 2;
}

/// nccl-tests `-c`: fill the inputs with rank-dependent values, run once, and count this rank's
/// wrong output elements. Outputs start poisoned so untouched elements count as wrong.
int64_t count_wrong(Runner& runner, const Buffers& b, int rank, int n) {
  at::Tensor expected;
  switch (b.op) {
    case Collective::kAllGather: {
      b.input.copy_(pattern(rank, b.chunk));
      b.output.fill_(-1.0);
      std::vector<at::Tensor> parts;
      for (int r = 0; r < n; ++r) parts.push_back(pattern(r, b.chunk));
      expected = at::cat(parts);
      break;
    }
    case Collective::kReduceScatter:
      b.input.copy_(pattern(rank, b.count));
      b.output.fill_(-1.0);
      expected = pattern_sum(n, b.count).slice(0, rank * b.chunk, (rank + 1) * b.chunk);
      break;
    case Collective::kAllReduce:
      b.output.copy_(pattern(rank, b.count));
      expected = pattern_sum(n, b.count);
      break;
  }
  runner.run(b);
  runner.finish();
  return b.output.cpu().ne(expected).sum().item<int64_t>();
}

/// One variant's result at one point.
struct Timing {
  double seconds = 0.0;  // median over rounds
  double algbw = 0.0;    // GB/s (1e9 bytes)
  double busbw = 0.0;
  std::vector<double> rounds;  // every round's seconds, to judge the noise

  nlohmann::json to_json() const {
    std::vector<double> rounds_us;
    for (double s : rounds) rounds_us.push_back(s * 1e6);
    return {{"time_us", seconds * 1e6}, {"algbw_gbs", algbw}, {"busbw_gbs", busbw}, {"rounds_us", rounds_us}};
  }
};

Timing make_timing(const std::vector<double>& rounds, int64_t bytes, Collective c, int n) {
  double seconds = median(rounds);
  double algbw = static_cast<double>(bytes) / seconds / 1e9;
  return {seconds, algbw, algbw * bus_factor(c, n), rounds};
}

struct Row {
  Collective op;
  int64_t bytes, count;
  int warmup, iters;
  Timing wrapper, verify, raw;
  int64_t wrong = 0;
};

double ratio(const Timing& a, const Timing& b) { return b.busbw > 0 ? a.busbw / b.busbw : 0.0; }

void print_header(const Options& opt, const dist::World& world, const std::string& raw_name) {
  std::printf("# bench_collectives: %d ranks on %d node(s), backend %s, float32, sum reductions\n", world.size(),
              world.num_nodes(), opt.backend.c_str());
  std::printf("# MPI: %s; load average at start %.2f on %d cores\n", world.mpi_version().c_str(), load_average(),
              static_cast<int>(std::thread::hardware_concurrency()));
  std::printf("# sizes %s .. %s x%g; warmup %d; %d rounds of blocks of %d iters, a block moving at most %s\n",
              format_bytes(opt.min_bytes).c_str(), format_bytes(opt.max_bytes).c_str(), opt.step_factor, opt.warmup,
              opt.rounds, opt.iters, format_bytes(opt.point_bytes).c_str());
  std::printf("# time = median over rounds of (mean per iteration in a block, max over ranks)\n");
  std::printf("# algbw = S/time (1e9 B/s); busbw = algbw x %s\n",
              "2(n-1)/n (all_reduce) or (n-1)/n (all_gather, reduce_scatter)");
  std::printf("# S: all_gather output bytes, reduce_scatter input bytes, all_reduce tensor bytes\n");
  std::printf("# wrapper = world communicator with comm.verify_signatures OFF (issue + wait)\n");
  if (opt.verify_variant)
    std::printf("# +verify = same with comm.verify_signatures ON (the CommConfig default)\n");
  std::printf("# raw = %s on the same buffers; ratio = wrapper busbw / raw busbw\n", raw_name.c_str());
  std::printf("# #wrong = wrong elements over all ranks and variants (%s)\n",
              opt.check ? "checked after timing" : "check disabled");
  std::printf("#\n");
  std::printf("# %-14s %11s %10s %5s | %10s %8s %8s | %10s %8s | %6s", "op", "size(B)", "count", "iters",
              "wrap(us)", "algbw", "busbw", "raw(us)", "busbw", "ratio");
  if (opt.verify_variant) std::printf(" | %10s %8s %6s", "+vrfy(us)", "busbw", "ratio");
  std::printf(" | %6s\n", "#wrong");
  std::fflush(stdout);
}

void print_row(const Options& opt, const Row& r) {
  std::printf("  %-14s %11lld %10lld %5d | %10.1f %8.3f %8.3f | %10.1f %8.3f | %6.3f", to_string(r.op),
              static_cast<long long>(r.bytes), static_cast<long long>(r.count), r.iters, r.wrapper.seconds * 1e6,
              r.wrapper.algbw, r.wrapper.busbw, r.raw.seconds * 1e6, r.raw.busbw, ratio(r.wrapper, r.raw));
  if (opt.verify_variant)
    std::printf(" | %10.1f %8.3f %6.3f", r.verify.seconds * 1e6, r.verify.busbw, ratio(r.verify, r.raw));
  if (opt.check)
    std::printf(" | %6lld\n", static_cast<long long>(r.wrong));
  else
    std::printf(" | %6s\n", "-");
  std::fflush(stdout);
}

/// The summary the benchmark exists for: wrapper/raw busbw at a small and a large message.
nlohmann::json print_summary(const Options& opt, const std::vector<Row>& rows) {
  const int64_t marks[] = {int64_t{1} << 20, int64_t{64} << 20};
  nlohmann::json summary = nlohmann::json::array();
  std::printf("#\n# summary: busbw ratio wrapper / raw (1.000 = as fast as the raw call)%s\n",
              opt.verify_variant ? "; in parentheses with verify_signatures on" : "");
  for (Collective c : opt.ops) {
    std::printf("#   %-14s", to_string(c));
    for (int64_t mark : marks) {
      auto it = std::find_if(rows.begin(), rows.end(), [&](const Row& r) { return r.op == c && r.bytes == mark; });
      if (it == rows.end()) {
        std::printf("  %s: not in range       ", format_bytes(mark).c_str());
        continue;
      }
      std::printf("  %s: %.3f", format_bytes(mark).c_str(), ratio(it->wrapper, it->raw));
      nlohmann::json entry = {{"op", to_string(c)}, {"bytes", mark}, {"ratio", ratio(it->wrapper, it->raw)}};
      if (opt.verify_variant) {
        std::printf(" (%.3f)", ratio(it->verify, it->raw));
        entry["ratio_verify"] = ratio(it->verify, it->raw);
      }
      summary.push_back(entry);
    }
    std::printf("\n");
  }
  return summary;
}

/// The runners of one backend: wrapper (verify off), wrapper (verify on) and the raw call.
struct Runners {
  std::unique_ptr<Runner> wrapper, verify, raw;
  std::string raw_name;
  dist::CommunicatorPtr verify_comm;  // kept alive for `verify`
};

Runners make_runners(const Options& opt, dist::World& world, MPI_Comm ctl) {
  Runners r;
  const bool nccl = opt.backend == "nccl";
  if (nccl && !world.device().is_cuda())
    throw std::runtime_error("--backend nccl needs a GPU, and this process has none");
  // Same recorder and watchdog as the World's communicators; only the signature check differs.
  std::shared_ptr<dist::CommServices> verify_services;
  std::shared_ptr<dist::MpiCommunicator> verify_mpi;
  if (opt.verify_variant) {
    verify_services = std::make_shared<dist::CommServices>(*world.services());
    verify_services->config.verify_signatures = true;
    verify_mpi = dist::MpiCommunicator::create(MPI_COMM_WORLD, "bench_verify", verify_services);
    r.verify_comm = verify_mpi;
  }
  if (!nccl) {
    r.wrapper = std::make_unique<WrapperRunner>(world.comm(), world.device());
    r.raw = std::make_unique<RawMpiRunner>(ctl);
    r.raw_name = "MPI_Allgather / MPI_Reduce_scatter_block / MPI_Allreduce(MPI_IN_PLACE) on a dup of MPI_COMM_WORLD";
  } else {
#if LA_HAVE_NCCL
    r.wrapper = std::make_unique<WrapperRunner>(world.nccl_comm(), world.device());
    r.raw = std::make_unique<RawNcclRunner>(ctl, world.rank(), world.size(), world.device());
    r.raw_name = "ncclAllGather / ncclReduceScatter / ncclAllReduce(in place) on a separate ncclComm";
    if (verify_mpi)
      r.verify_comm = dist::NcclCommunicator::create(*verify_mpi, world.device(), "bench_verify", verify_services);
#else
    throw std::runtime_error("--backend nccl: this build of Lookahead has no NCCL");
#endif
  }
  if (r.verify_comm) r.verify = std::make_unique<WrapperRunner>(r.verify_comm, world.device());
  return r;
}

int run(const Options& opt, dist::World& world) {
  dist::MpiCommHandle ctl_handle = duplicate_world();
  MPI_Comm ctl = ctl_handle.get();
  const int n = world.size();
  const int rank = world.rank();
  const bool root = world.is_root();
  Runners runners = make_runners(opt, world, ctl);
  auto options = at::TensorOptions().dtype(at::kFloat).device(world.device());

  const nlohmann::json meta = run_metadata(world);  // before our own load shows in the load average
  if (root) print_header(opt, world, runners.raw_name);
  std::vector<Row> rows;
  int64_t total_wrong = 0;
  for (Collective c : opt.ops) {
    for (int64_t requested : sizes(opt)) {
      Row row{c, 0, element_count(c, requested, n), opt.warmup_at(requested), opt.iters_at(requested), {}, {}, {}};
      row.bytes = row.count * 4;
      Buffers b = make_buffers(c, row.count, n, options);
      std::vector<Runner*> variants{runners.wrapper.get(), runners.raw.get()};
      if (runners.verify) variants.push_back(runners.verify.get());
      for (Runner* v : variants) warm_up(*v, b, row.warmup);
      // Interleaved rounds spread slow drifts (other load, frequency changes) over all variants.
      std::vector<std::vector<double>> seconds(variants.size());
      for (int round = 0; round < opt.rounds; ++round)
        for (size_t v = 0; v < variants.size(); ++v) seconds[v].push_back(time_block(*variants[v], b, row.iters, ctl));
      row.wrapper = make_timing(seconds[0], row.bytes, c, n);
      row.raw = make_timing(seconds[1], row.bytes, c, n);
      if (runners.verify) row.verify = make_timing(seconds[2], row.bytes, c, n);
      if (opt.check) {
        int64_t wrong = count_wrong(*runners.wrapper, b, rank, n) + count_wrong(*runners.raw, b, rank, n);
        if (runners.verify) wrong += count_wrong(*runners.verify, b, rank, n);
        row.wrong = sum_over_ranks(wrong, ctl);
        total_wrong += row.wrong;
      }
      if (root) print_row(opt, row);
      rows.push_back(row);
    }
  }

  if (root) {
    nlohmann::json summary = print_summary(opt, rows);
    std::printf("# total wrong elements: %lld\n", static_cast<long long>(total_wrong));
    if (!opt.json_path.empty()) {
      nlohmann::json doc;
      doc["benchmark"] = "bench_collectives";
      doc["meta"] = meta;
      doc["config"] = {{"backend", opt.backend},      {"dtype", "float32"},
                       {"min_bytes", opt.min_bytes},  {"max_bytes", opt.max_bytes},
                       {"step_factor", opt.step_factor}, {"warmup", opt.warmup},
                       {"iters", opt.iters},          {"rounds", opt.rounds},
                       {"max_point_bytes", opt.point_bytes},
                       {"check", opt.check},          {"raw", runners.raw_name},
                       {"wrapper", "world communicator, comm.verify_signatures off"},
                       {"wrapper_verify", opt.verify_variant ? "comm.verify_signatures on" : "not run"},
                       {"time", "median over rounds of (mean seconds per iteration in a block, max over ranks)"}};
      nlohmann::json out_rows = nlohmann::json::array();
      for (const Row& r : rows) {
        nlohmann::json j = {{"op", to_string(r.op)},   {"bytes", r.bytes},
                            {"count", r.count},        {"warmup", r.warmup},
                            {"iters", r.iters},        {"wrapper", r.wrapper.to_json()},
                            {"raw", r.raw.to_json()},  {"ratio", ratio(r.wrapper, r.raw)}};
        if (opt.verify_variant) {
          j["wrapper_verify"] = r.verify.to_json();
          j["ratio_verify"] = ratio(r.verify, r.raw);
        }
        if (opt.check) j["wrong"] = r.wrong;
        out_rows.push_back(j);
      }
      doc["rows"] = out_rows;
      doc["summary"] = summary;
      doc["total_wrong"] = total_wrong;
      write_json(opt.json_path, doc);
    }
    std::fflush(stdout);
  }
  // Every rank holds the same total (sum over ranks per row), so all agree on the exit code.
  return total_wrong == 0 ? kExitOk : kExitError;
}

/// The verify-on variant has a communicator of its own.
void configure_world(const Options&, dist::WorldConfig& config) { config.comm.verify_signatures = false; }

}  // namespace
}  // namespace lookahead::bench

int main(int argc, char** argv) {
  return lookahead::bench::bench_main<lookahead::bench::Options>(
      "bench_collectives", argc, argv, lookahead::bench::describe_options, lookahead::bench::read_options,
      lookahead::bench::run, lookahead::bench::configure_world);
}
