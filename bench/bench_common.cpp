// Implementation of the benchmark helpers: collective buffers, size parsing, rank reductions over
// a private MPI communicator, and result metadata.
#include "bench/bench_common.h"

#include <ATen/ops/zeros.h>
#include <boost/program_options/options_description.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "lookahead/build_config.h"

namespace lookahead::bench {

const char* to_string(Collective c) {
  switch (c) {
    case Collective::kAllGather: return "all_gather";
    case Collective::kReduceScatter: return "reduce_scatter";
    case Collective::kAllReduce: return "all_reduce";
  }
  return "?";
}

Collective parse_collective(const std::string& name, const std::string& flag) {
  for (Collective c : {Collective::kAllGather, Collective::kReduceScatter, Collective::kAllReduce})
    if (name == to_string(c)) return c;
  throw std::invalid_argument("--" + flag + ": unknown collective '" + name +
                              "' (choose from all_gather, reduce_scatter, all_reduce)");
}

int64_t element_count(Collective c, int64_t bytes, int n) {
  int64_t count = std::max<int64_t>(1, bytes / 4);
  if (c == Collective::kAllReduce) return count;
  return std::max<int64_t>(n, count / n * n);
}

Buffers make_buffers(Collective c, int64_t count, int n, const at::TensorOptions& options) {
  Buffers b{c, count, count / n, {}, {}};
  switch (c) {
    case Collective::kAllGather:
      b.input = at::zeros({b.chunk}, options);
      b.output = at::zeros({count}, options);
      break;
    case Collective::kReduceScatter:
      b.input = at::zeros({count}, options);
      b.output = at::zeros({b.chunk}, options);
      break;
    case Collective::kAllReduce:
      b.output = at::zeros({count}, options);
      break;
  }
  return b;
}

dist::WorkHandle issue(dist::Communicator& comm, const Buffers& b) {
  switch (b.op) {
    case Collective::kAllGather: return comm.all_gather(b.output, b.input);
    case Collective::kReduceScatter: return comm.reduce_scatter(b.output, b.input);
    case Collective::kAllReduce: return comm.all_reduce(b.output);
  }
  throw std::logic_error("issue: unknown collective");
}

int64_t parse_bytes(const std::string& text, const std::string& flag) {
  auto fail = [&] {
    throw std::invalid_argument("--" + flag + ": '" + text +
                                "' is not a positive byte count (examples: 4096, 1K, 256M, 2G)");
  };
  if (text.empty()) fail();
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || digits > 12) fail();
  int64_t value = std::stoll(text.substr(0, digits));
  std::string suffix = text.substr(digits);
  int shift = 0;
  if (suffix == "K" || suffix == "k" || suffix == "KiB") {
    shift = 10;
  } else if (suffix == "M" || suffix == "m" || suffix == "MiB") {
    shift = 20;
  } else if (suffix == "G" || suffix == "g" || suffix == "GiB") {
    shift = 30;
  } else if (!suffix.empty() && suffix != "B") {
    fail();
  }
  if (value < 1 || value > (std::numeric_limits<int64_t>::max() >> shift)) fail();
  value <<= shift;
  return value;
}

std::string format_bytes(int64_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024.0 && unit < 4) {
    v /= 1024.0;
    ++unit;
  }
  char text[32];
  if (v == static_cast<double>(static_cast<int64_t>(v)))
    std::snprintf(text, sizeof text, "%lld %s", static_cast<long long>(v), units[unit]);
  else
    std::snprintf(text, sizeof text, "%.1f %s", v, units[unit]);
  return text;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

double max_over_ranks(double value, MPI_Comm comm) {
  double result = value;
  LA_MPI_CHECK(MPI_Allreduce(&value, &result, 1, MPI_DOUBLE, MPI_MAX, comm));
  return result;
}

int64_t sum_over_ranks(int64_t value, MPI_Comm comm) {
  int64_t result = value;
  LA_MPI_CHECK(MPI_Allreduce(&value, &result, 1, MPI_INT64_T, MPI_SUM, comm));
  return result;
}

dist::MpiCommHandle duplicate_world() {
  MPI_Comm dup = MPI_COMM_NULL;
  LA_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
  dist::MpiCommHandle handle(dup);
  // Failures must surface as DistError with a rank and host, not as MPI's silent job abort.
  LA_MPI_CHECK(MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN));
  return handle;
}

double load_average() {
  double load[1] = {-1.0};
  return getloadavg(load, 1) == 1 ? load[0] : -1.0;
}

nlohmann::json run_metadata(const dist::World& world) {
  std::time_t t = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return {{"ranks", world.size()},
          {"nodes", world.num_nodes()},
          {"host", world.hostname()},
          {"device", world.device().str()},
          {"mpi", world.mpi_version()},
          {"lookahead", LA_VERSION},
          {"torch", LA_TORCH_VERSION},
          {"nccl_built", static_cast<bool>(LA_HAVE_NCCL)},
          {"loadavg_1m", load_average()},
          {"utc", stamp}};
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

void write_json(const std::string& path, const nlohmann::json& doc) {
  std::ofstream out(path);
  out << doc.dump(2) << "\n";
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
  std::printf("# wrote %s\n", path.c_str());
}

int bench_main(const BenchSpec& spec, CommonOptions& common, int argc, char** argv) {
  namespace po = boost::program_options;
  po::options_description desc(std::string(spec.name) + " options");
  desc.add_options()("help,h", "this text");
  spec.describe(desc);
  // clang-format off
  desc.add_options()
      ("json", po::value<std::string>(), "also write the results to this JSON file (rank 0)")
      ("timeout", po::value<double>()->default_value(600.0), "collective timeout in seconds");
  // clang-format on
  bool help = false;
  std::string usage_error;
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
    help = vm.count("help") > 0;
    if (!help) {
      common.timeout_s = vm["timeout"].as<double>();
      if (vm.count("json")) common.json_path = vm["json"].as<std::string>();
      spec.read(vm);
    }
  } catch (const std::exception& e) {
    usage_error = e.what();
  }
  dist::WorldConfig config;
  config.comm.timeout_s = common.timeout_s;
  if (spec.configure) spec.configure(config);
  dist::World world(config, &argc, &argv);
  if (help || !usage_error.empty()) {
    if (world.is_root()) {
      if (!usage_error.empty()) std::cerr << spec.name << ": " << usage_error << "\n\n";
      (usage_error.empty() ? std::cout : std::cerr) << desc;
    }
    return usage_error.empty() ? kExitOk : kExitUsage;
  }
  try {
    return spec.run(world);
  } catch (const dist::DistError& e) {
    world.abort(e.kind() == dist::ErrorKind::kInvalidArgument ? kExitError : kExitDistributed, e.what());
  } catch (const std::exception& e) {
    world.abort(kExitError, e.what());
  }
}

}  // namespace lookahead::bench
