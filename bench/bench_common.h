// Helpers shared by the distributed benchmarks (bench_collectives, bench_overlap): collective
// buffers, byte-size flags, reductions of timings over ranks, run metadata and JSON output. Both
// benchmarks run every rank through the same deterministic schedule, so helpers marked
// "Collective" must be called by all ranks in the same order.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <mpi.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "dist/mpi_communicator.h"
#include "dist/world.h"

namespace boost::program_options {
class options_description;
class variables_map;
}  // namespace boost::program_options

namespace lookahead::bench {

/// Exit codes shared by the benchmark binaries.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,        ///< wrong results, unusable setup, any other error
  kExitUsage = 2,        ///< bad command line
  kExitDistributed = 3,  ///< collective timeout, rank mismatch, backend failure
};

/// The collectives the benchmarks measure (float32, sum reductions).
enum class Collective { kAllGather, kReduceScatter, kAllReduce };

/// "all_gather", "reduce_scatter" or "all_reduce".
const char* to_string(Collective c);
/// Inverse of to_string; throws std::invalid_argument naming `flag` for an unknown name.
Collective parse_collective(const std::string& name, const std::string& flag);

/// Float32 elements of an array of S bytes, where S is the nccl-tests size (all_gather output,
/// reduce_scatter input, all_reduce tensor). all_gather and reduce_scatter round down to a multiple
/// of the rank count `n`, as nccl-tests does, and never below one element per rank.
int64_t element_count(Collective c, int64_t bytes, int n);

/// The tensors of one collective. `input` is undefined for all_reduce, which works in place.
struct Buffers {
  Collective op = Collective::kAllReduce;
  int64_t count = 0;  ///< elements of S
  int64_t chunk = 0;  ///< elements per rank: count / n
  at::Tensor input, output;
};

/// Zero-filled (so every page is touched before timing) buffers for `count` elements on `n` ranks.
Buffers make_buffers(Collective c, int64_t count, int n, const at::TensorOptions& options);

/// Starts the collective of `b` on `comm` (sum reductions) and returns its Work.
dist::WorkHandle issue(dist::Communicator& comm, const Buffers& b);

/// Parses a byte count: a plain integer or one with a binary suffix K, M or G ("256M" = 256 MiB).
/// Throws std::invalid_argument naming `flag` on anything else or on a value below 1.
int64_t parse_bytes(const std::string& text, const std::string& flag);

/// The non-empty items of a comma-separated flag value ("full,,node" -> {"full", "node"}).
std::vector<std::string> split_commas(const std::string& text);

/// Human-readable binary size, e.g. "64 MiB", "1.5 KiB", "512 B".
std::string format_bytes(int64_t bytes);

/// Seconds on a monotonic clock (only differences are meaningful).
double now_s();

/// Median of `values` (mean of the two middle values for an even count); 0 when empty.
double median(std::vector<double> values);

/// Maximum of `value` over the ranks of `comm`. Collective.
double max_over_ranks(double value, MPI_Comm comm);
/// Sum of `value` over the ranks of `comm`. Collective.
int64_t sum_over_ranks(int64_t value, MPI_Comm comm);

/// A private duplicate of MPI_COMM_WORLD for the benchmark's own barriers, reductions and raw
/// library calls, so that none of them can match traffic of the communicators under test.
/// Collective; call it after the World exists and release it before the World is destroyed.
dist::MpiCommHandle duplicate_world();

/// The 1-minute load average of this machine (-1 if unknown): other jobs sharing the cores show
/// up here, and they distort every timing.
double load_average();

/// Facts about the run that every result file carries: ranks, nodes, host, library versions, the
/// load average (take it before the benchmark adds its own load) and the time.
nlohmann::json run_metadata(const dist::World& world);

/// Writes `doc` pretty-printed to `path` and says so on stdout ("# wrote PATH"); throws
/// std::runtime_error when that fails.
void write_json(const std::string& path, const nlohmann::json& doc);

/// The flags every distributed benchmark takes besides its own (and --help).
struct CommonOptions {
  std::string json_path;     ///< --json: also write the results to this file (rank 0); empty: none
  double timeout_s = 600.0;  ///< --timeout: collective timeout in seconds
};

/// One distributed benchmark, as `bench_main` runs it.
struct BenchSpec {
  const char* name = "";
  /// Adds the benchmark's own options; --help, --json and --timeout are added after them.
  std::function<void(boost::program_options::options_description&)> describe;
  /// Reads the benchmark's own options; throws std::invalid_argument (or a program_options error)
  /// for bad input. Runs before the World starts, so that `configure` can depend on it.
  std::function<void(const boost::program_options::variables_map&)> read;
  /// Adjusts the World's configuration, whose collective timeout is already --timeout. Optional.
  std::function<void(dist::WorldConfig&)> configure;
  std::function<int(dist::World&)> run;
};

/// The `main` of a distributed benchmark: parses argv into `common` and the spec's options, starts
/// the World, then rank 0 prints the usage for --help or a bad command line (exit kExitUsage), or
/// `run` runs. Errors become the exit codes above; a failure on one rank aborts the job instead
/// of hanging it.
int bench_main(const BenchSpec& spec, CommonOptions& common, int argc, char** argv);

/// bench_main for the usual shape: `Options` derives from CommonOptions, `describe` adds its
/// options, `read` fills it, `configure` (optional) adjusts the World, `run` runs it.
template <class Options>
int bench_main(const char* name, int argc, char** argv, void (*describe)(boost::program_options::options_description&),
               void (*read)(const boost::program_options::variables_map&, Options&),
               int (*run)(const Options&, dist::World&),
               void (*configure)(const Options&, dist::WorldConfig&) = nullptr) {
  Options opt;
  BenchSpec spec;
  spec.name = name;
  spec.describe = describe;
  spec.read = [&](const boost::program_options::variables_map& vm) { read(vm, opt); };
  if (configure) spec.configure = [&](dist::WorldConfig& config) { configure(opt, config); };
  spec.run = [&](dist::World& world) { return run(opt, world); };
  return bench_main(spec, opt, argc, argv);
}

}  // namespace lookahead::bench
