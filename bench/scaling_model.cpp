// scaling_model: the training step's time on N ranks, by model rather than measurement. One step
// is traced on the meta device (trainer/activation_estimate.h): every unit call with its counted
// FLOPs (trainer/flop_counter.h), and each unit's elements by role. Each call gets a compute time
// (its FLOPs over an achieved rate), each unit a gather and a reduce-scatter time (dist::
// unit_collectives: the bytes a ring sends per rank and per node, over a bandwidth per link class,
// plus a latency per ring step), and trainer/step_timeline.h replays the engine's schedule with
// those costs: what overlaps is what the engine's prefetch and ring let overlap. Printed per
// placement and rank count: step time, compute, communication, exposed communication, weak-scaling
// efficiency against one rank, MFU, and the predicted memory per rank.
//
// Every hardware figure is an input (defaults: an H100/H200 SXM node of 8 GPUs on NVLink with
// 8 x 400 Gb/s InfiniBand; see --help); docs/scaling.md states them and calibrates the model's
// communication part against the simulated cluster (launch/cluster), where the same tool, given
// the CPU's figures, predicts bench_step's measured step.
#include <boost/program_options/options_description.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "dist/placement.h"
#include "dist/traffic_estimate.h"
#include "model/lookahead/lookahead_model.h"
#include "trainer/activation_estimate.h"
#include "trainer/run_variant.h"
#include "trainer/step_timeline.h"
#include "trainer/train_config.h"
#include "trainer/train_state.h"

namespace lookahead::bench {
namespace {

namespace po = boost::program_options;

/// The machine, as inputs.
struct Hardware {
  double peak_tflops = 989;       ///< dense bf16 peak per GPU (H100 / H200 SXM)
  double achieved_tflops = 400;   ///< what the step's kernels reach (products, convolutions, attention)
  double intra_gbps = 360;        ///< GB/s a rank's ring sends within a node (NVLink 4: 450 line rate)
  double inter_gbps = 360;        ///< GB/s a node sends to other nodes (8 x 400 Gb/s = 400 line rate)
  double alpha_intra_us = 2;      ///< latency per ring step within a node
  double alpha_inter_us = 6;      ///< latency per ring step of a ring spanning nodes
  double hbm_gbps = 3350;         ///< memory bandwidth (the optimizer step streams its shards)
  double memory_gib = 74.5;       ///< memory per GPU (80 GB H100; H200: 131)
  double compute_slowdown = 0.0;  ///< compute slower by this fraction on more than one rank (communication's share)
};

struct Options {
  std::string config = "sdxl";
  int64_t resolution = 0;  ///< 0: the config's own (1024, mid 256, tiny 64)
  int64_t batch = 4;
  std::vector<int64_t> ranks{1, 8, 16, 32, 64, 128, 256, 512};
  int64_t per_node = 8;
  std::vector<std::string> placements{"full", "node", "replicate"};
  std::string dtype;  ///< "": bf16 for sdxl, fp32 for tiny and mid (their CPU runs)
  trainer::Recompute recompute = trainer::DistConfig().recompute;
  bool prefetch = true;
  int64_t ring = trainer::DistConfig().max_gathered_units;
  std::string replicate_units;  ///< dist.replicate_units
  bool keep_gathered = false;
  bool memory = true;
  Hardware hw;
  std::string json;
  std::string tsv;
  std::vector<std::string> measured;  ///< bench_step --json files to predict
  int64_t cores = 0;                  ///< cores of the machine the measured runs shared
  int64_t waits = 0;                  ///< print this many of each row's largest gather waits
  std::string variant;                ///< an ablation preset (INI) whose keys the step takes
};

/// The configuration a run of `name` trains, with the model it builds and its input shapes.
struct Setup {
  trainer::TrainConfig config;
  model::LookaheadModelConfig model;
  std::optional<model::SyntheticShape> inputs;  ///< tiny and mid: bench_step's synthetic batch
  int64_t resolution = 1024;
};

Setup make_setup(const Options& o) {
  Setup s;
  trainer::TrainConfig& c = s.config;
  c.train.batch_per_rank = o.batch;
  c.dist.recompute = o.recompute;
  c.dist.prefetch = o.prefetch;
  c.dist.max_gathered_units = o.ring;
  c.dist.keep_gathered = o.keep_gathered;
  c.dist.replicate_units = o.replicate_units;
  const std::string dtype = o.dtype.empty() ? (o.config == "sdxl" ? "bf16" : "fp32") : o.dtype;
  if (dtype != "bf16" && dtype != "fp32") throw std::invalid_argument("--dtype must be bf16 or fp32, got " + dtype);
  c.model.dtype = dtype == "bf16" ? trainer::ModelDtype::kBf16 : trainer::ModelDtype::kFp32;
  if (!o.variant.empty()) trainer::RunVariant::from_file(o.variant).apply(c);
  if (o.config == "sdxl") {
    c.model.preset = trainer::Preset::kSdxl;
    s.resolution = o.resolution > 0 ? o.resolution : 1024;
    s.model = trainer::model_config(c, c10::Device(c10::kCPU));
    return s;
  }
  if (o.config != "tiny" && o.config != "mid")
    throw std::invalid_argument("--config must be sdxl, mid or tiny, got '" + o.config + "'");
  // bench_step's models and batches (bench/bench_step.cpp make_setup).
  c.model.preset = trainer::Preset::kTiny;
  s.model = trainer::model_config(c, c10::Device(c10::kCPU));
  model::SyntheticShape shape;
  if (o.config == "mid") {
    const auto mid = model::LookaheadModelConfig::mid();
    s.model.unet = mid.unet;
    s.model.taesd = mid.taesd;
    shape.latent = 32;
    shape.ref_pixels = 256;
  }
  if (o.resolution > 0) {
    shape.latent = o.resolution / 8;
    shape.ref_pixels = o.resolution;
  }
  s.resolution = shape.ref_pixels;
  s.inputs = shape;
  return s;
}

/// Seconds of one collective of `kind` over `group` ranks with `per_node` per node, from what its
/// ring sends: the slower of a rank's sends on its in-node link and a node's sends to the next
/// node, plus a latency per ring step.
double collective_s(const dist::CollectiveBytes& b, int64_t group, int64_t per_node, const Hardware& hw) {
  if (group <= 1) return 0;
  const bool spans = group > per_node;
  const double bw = std::max(b.sent_per_rank / (hw.intra_gbps * 1e9), b.inter_node_per_node / (hw.inter_gbps * 1e9));
  return bw + static_cast<double>(group - 1) * (spans ? hw.alpha_inter_us : hw.alpha_intra_us) * 1e-6;
}

struct Row {
  std::string placement;
  int64_t ranks = 0, nodes = 0, frozen_shards = 0;
  trainer::Timeline timeline;
  double flops = 0;           ///< model FLOPs of the step per rank (forward + backward, no recompute)
  double executed_flops = 0;  ///< with the recompute
  double sent_per_rank = 0, inter_node_per_node = 0;
  double memory_peak = 0;
  double efficiency = 0, mfu = 0;
};

Row model_case(const Setup& s, const Options& o, const std::string& placement, int64_t ranks) {
  trainer::TrainConfig c = s.config;
  c.dist.placement = dist::placement_from_string(placement);
  const int64_t per_node = std::min(ranks, o.per_node);
  if (ranks % per_node != 0)
    throw std::invalid_argument(std::to_string(ranks) + " ranks do not fill nodes of " + std::to_string(o.per_node));
  const trainer::StepMemoryPrediction p =
      trainer::predict_step_memory(c, s.model, ranks, per_node, s.resolution, s.inputs);
  dist::TrafficLayout traffic;
  traffic.sharding = p.layout;
  traffic.ranks_per_node = per_node;
  traffic.keep_gathered = c.dist.keep_gathered;
  std::map<std::string, std::pair<double, double>> costs;  // unit -> gather, reduce seconds
  double trainable_shard = 0;
  for (const auto& u : p.unit_elements) {
    const dist::UnitCollectives k = dist::unit_collectives(u, traffic);
    costs[u.name] = {collective_s(k.frozen_sent, k.frozen_group, per_node, o.hw) +
                         collective_s(k.trainable_sent, k.trainable_group, per_node, o.hw),
                     collective_s(k.reduce_sent, k.trainable_group, per_node, o.hw)};
    trainable_shard += static_cast<double>(dist::shard_elements(u.trainable(), ranks));
  }
  const double rate = o.hw.achieved_tflops * 1e12 / (ranks > 1 ? 1.0 + o.hw.compute_slowdown : 1.0);
  std::vector<trainer::TimedCall> calls;
  Row r;
  trainer::Flops in_units;
  for (const auto& call : p.activations.calls) {
    trainer::TimedCall t;
    t.unit = call.unit;
    t.branch = call.branch;
    t.with_grad = call.with_grad;
    t.kept = p.layout.kept_units.contains(call.unit);
    const double recompute = call.with_grad && !t.kept ? call.flops.forward : 0.0;
    t.forward_s = call.flops.forward / rate;
    t.backward_s = call.with_grad ? (call.flops.backward + recompute) / rate : 0.0;
    std::tie(t.gather_s, t.reduce_s) = costs.at(call.unit);
    if (!call.with_grad) t.reduce_s = 0;
    r.executed_flops += recompute;
    in_units += call.flops;
    calls.push_back(t);
  }
  // What runs between the units (losses, the glue of the branches) and the AdamW update, which
  // streams master, gradient and moments in and out (32 bytes per element).
  const trainer::Flops& step = p.activations.flops;
  const double between = (step.forward + step.backward - in_units.forward - in_units.backward) / rate;
  trainer::TimelineOptions to;
  to.prefetch = c.dist.prefetch;
  to.ring = c.dist.max_gathered_units;
  to.keep_gathered = c.dist.keep_gathered;
  to.mode = c.loss.mode;
  to.optimizer_s = between + 32.0 * trainable_shard / (o.hw.hbm_gbps * 1e9);
  r.placement = placement;
  r.ranks = ranks;
  r.nodes = ranks / per_node;
  r.frozen_shards = p.layout.frozen_shards;
  r.timeline = trainer::simulate_step(calls, to);
  r.flops = step.forward + step.backward;
  r.executed_flops += r.flops;
  r.sent_per_rank = p.traffic.sent_per_rank();
  r.inter_node_per_node = p.traffic.inter_node_per_node();
  r.memory_peak = p.peak();
  r.mfu = r.flops / (r.timeline.step * o.hw.peak_tflops * 1e12);
  return r;
}

void print_table(const std::vector<Row>& rows, const Options& o) {
  auto gib = [](double b) { return b / (1024.0 * 1024.0 * 1024.0); };
  std::printf("%-9s %5s %5s %6s | %9s %9s %9s %9s %9s %7s %7s | %6s %6s | %9s %9s | %8s\n", "placement", "ranks",
              "nodes", "shards", "step ms", "compute", "gather", "reduce", "exposed", "hidden", "b2 fwd", "eff", "MFU",
              "sent/rank", "inter/node", "peak");
  for (const auto& r : rows) {
    const trainer::Timeline& t = r.timeline;
    std::printf(
        "%-9s %5lld %5lld %6lld | %9.1f %9.1f %9.1f %9.1f %9.1f %6.1f%% %6.1f%% | %5.1f%% %5.1f%% | %7.2f G %7.2f G | "
        "%5.1f G%s\n",
        r.placement.c_str(), static_cast<long long>(r.ranks), static_cast<long long>(r.nodes),
        static_cast<long long>(r.frozen_shards), 1e3 * t.step, 1e3 * t.compute, 1e3 * t.gather, 1e3 * t.reduce,
        1e3 * (t.gather_wait + t.reduce_wait), 100 * t.hidden_fraction(), 100 * t.phase(2, false).hidden_fraction(),
        100 * r.efficiency, 100 * r.mfu, gib(r.sent_per_rank), gib(r.inter_node_per_node), gib(r.memory_peak),
        o.memory && gib(r.memory_peak) > o.hw.memory_gib ? " (over)" : "");
  }
}

nlohmann::json to_json(const Row& r) {
  const trainer::Timeline& t = r.timeline;
  return {{"placement", r.placement},
          {"ranks", r.ranks},
          {"nodes", r.nodes},
          {"frozen_shards", r.frozen_shards},
          {"step_s", t.step},
          {"compute_s", t.compute},
          {"gather_s", t.gather},
          {"reduce_s", t.reduce},
          {"gather_wait_s", t.gather_wait},
          {"reduce_wait_s", t.reduce_wait},
          {"first_gather_wait_s", t.exposed_first},
          {"gathers", t.gathers},
          {"hidden_fraction", t.hidden_fraction()},
          {"branch2_forward_gather_s", t.phase(2, false).gather},
          {"branch2_forward_hidden_fraction", t.phase(2, false).hidden_fraction()},
          {"weak_scaling_efficiency", r.efficiency},
          {"mfu", r.mfu},
          {"model_flops", r.flops},
          {"executed_flops", r.executed_flops},
          {"sent_per_rank_bytes", r.sent_per_rank},
          {"inter_node_per_node_bytes", r.inter_node_per_node},
          {"memory_peak_bytes", r.memory_peak}};
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot read " + path);
  try {
    return nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": not JSON (" + e.what() + ")");
  }
}

/// One bench_step configuration and its medians.
struct MeasuredRun {
  std::string file, model, dtype, placement;
  int64_t ranks = 1, nodes = 1, batch = 1, ring = 2;
  bool prefetch = true, keep_gathered = false;
  std::string replicate_units;
  trainer::Recompute recompute = trainer::Recompute::kBlocks;
  double step = 0, compute = 0, gather_wait = 0, reduce_wait = 0, optimizer = 0;
};

std::vector<MeasuredRun> read_measured(const std::string& path) {
  const nlohmann::json d = read_json(path);
  std::vector<MeasuredRun> out;
  try {
    for (const auto& r : d.at("runs")) {
      MeasuredRun m;
      m.file = path;
      m.model = d.at("model").get<std::string>();
      m.dtype = d.at("dtype").get<std::string>();
      m.ranks = d.at("meta").at("ranks").get<int64_t>();
      m.nodes = d.at("meta").at("nodes").get<int64_t>();
      m.batch = d.at("global_batch").get<int64_t>() / m.ranks;
      m.placement = r.at("placement").get<std::string>();
      m.prefetch = r.at("prefetch").get<bool>();
      m.ring = r.at("max_gathered_units").get<int64_t>();
      m.keep_gathered = r.at("keep_gathered").get<bool>();
      m.replicate_units = r.value("replicate_units", std::string());
      const auto recompute = trainer::parse_config_name<trainer::Recompute>(r.at("recompute").get<std::string>());
      if (!recompute) throw std::runtime_error("unknown recompute policy");
      m.recompute = *recompute;
      const auto& med = r.at("median");
      m.step = med.at("step_s").get<double>();
      m.compute = med.at("compute_s").get<double>();
      m.gather_wait = med.at("gather_wait_s").get<double>();
      m.reduce_wait = med.at("reduce_wait_s").get<double>();
      m.optimizer = med.at("optimizer_s").get<double>();
      out.push_back(m);
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": not a bench_step --json file (" + e.what() + ")");
  }
  return out;
}

/// Predicts each measured run with the run's own configuration; the compute rate is the
/// one-rank run's (its step has no communication), slowed where a node has more ranks than cores.
int compare_measured(const Options& base) {
  std::vector<MeasuredRun> runs;
  for (const auto& f : base.measured)
    for (auto& r : read_measured(f)) runs.push_back(std::move(r));
  auto options_for = [&](const MeasuredRun& m) {
    Options o = base;
    o.config = m.model;
    o.dtype = m.dtype;
    o.batch = m.batch;
    o.per_node = m.ranks / m.nodes;
    o.recompute = m.recompute;
    o.prefetch = m.prefetch;
    o.ring = m.ring;
    o.keep_gathered = m.keep_gathered;
    o.replicate_units = m.replicate_units;
    return o;
  };
  // The rate: executed FLOPs of the one-rank step over its time without the optimizer.
  Hardware hw = base.hw;
  for (const auto& m : runs) {
    if (m.ranks != 1) continue;
    const Options o = options_for(m);
    const Row one = model_case(make_setup(o), o, m.placement, 1);
    hw.achieved_tflops = one.executed_flops / (m.step - m.optimizer) / 1e12;
    break;
  }
  std::printf("# scaling_model --measured: bench_step's medians against the model with the runs' own configurations\n");
  std::printf(
      "# achieved %.4g TFLOP/s (the 1-rank run's executed FLOPs / its step without the optimizer), in-node "
      "%.3g GB/s per rank, between nodes %.3g GB/s per node, ring step latency %.3g / %.3g us, %lld cores\n",
      hw.achieved_tflops, hw.intra_gbps, hw.inter_gbps, hw.alpha_intra_us, hw.alpha_inter_us,
      static_cast<long long>(base.cores));
  std::printf("# exposed = gather wait + reduce wait; hidden = 1 - exposed / (gather + reduce) (the model's)\n");
  std::printf("%5s %5s %-9s %-8s | %9s %9s %7s | %9s %9s | %9s %9s | %7s\n", "ranks", "nodes", "placement", "prefetch",
              "step", "predicted", "error", "exposed", "predicted", "compute", "predicted", "hidden");
  nlohmann::json doc;
  for (const auto& m : runs) {
    Options o = options_for(m);
    o.hw = hw;
    const int64_t per_node = m.ranks / m.nodes;
    if (base.cores > 0) {
      const double cores_per_node = std::max(1.0, static_cast<double>(base.cores) / static_cast<double>(m.nodes));
      o.hw.compute_slowdown = std::max(0.0, static_cast<double>(per_node) / cores_per_node - 1.0) + hw.compute_slowdown;
    }
    const Row r = model_case(make_setup(o), o, m.placement, m.ranks);
    const trainer::Timeline& t = r.timeline;
    const double exposed = t.gather_wait + t.reduce_wait;
    std::printf("%5lld %5lld %-9s %-8s | %9.1f %9.1f %+6.1f%% | %9.1f %9.1f | %9.1f %9.1f | %6.1f%%\n",
                static_cast<long long>(m.ranks), static_cast<long long>(m.nodes), m.placement.c_str(),
                m.prefetch ? "on" : "off", 1e3 * m.step, 1e3 * t.step, 100 * (t.step / m.step - 1),
                1e3 * (m.gather_wait + m.reduce_wait), 1e3 * exposed, 1e3 * m.compute, 1e3 * t.compute,
                100 * t.hidden_fraction());
    doc["rows"].push_back(
        {{"file", m.file},
         {"ranks", m.ranks},
         {"nodes", m.nodes},
         {"placement", m.placement},
         {"prefetch", m.prefetch},
         {"measured", {{"step_s", m.step}, {"exposed_s", m.gather_wait + m.reduce_wait}, {"compute_s", m.compute}}},
         {"predicted", to_json(r)}});
  }
  if (!base.json.empty()) {
    doc["hardware"] = {{"achieved_tflops", hw.achieved_tflops}, {"intra_gbps", hw.intra_gbps},
                       {"inter_gbps", hw.inter_gbps},           {"alpha_intra_us", hw.alpha_intra_us},
                       {"alpha_inter_us", hw.alpha_inter_us},   {"cores", base.cores}};
    write_json(base.json, doc);
  }
  return 0;
}

int run(int argc, char** argv) {
  Options o;
  po::options_description desc(
      "scaling_model: the training step on N ranks by model (traced FLOPs and bytes, the engine's schedule)");
  Hardware& hw = o.hw;
  // clang-format off
  desc.add_options()
      ("help", "this text")
      ("config", po::value(&o.config)->default_value(o.config), "sdxl (the real networks), mid or tiny (bench_step's models and batches)")
      ("resolution", po::value(&o.resolution)->default_value(0), "pixels (0: 1024 for sdxl, bench_step's for mid and tiny)")
      ("batch", po::value(&o.batch)->default_value(o.batch), "samples per rank (weak scaling: the same on every rank count)")
      ("variant", po::value(&o.variant)->default_value(""), "an ablation preset whose keys the step takes (e.g. launch/configs/ablation/3-x0-id.ini; docs/ablations.md)")
      ("ranks", po::value<std::string>()->default_value("1,8,16,32,64,128,256,512"), "comma-separated rank counts")
      ("ranks-per-node", po::value(&o.per_node)->default_value(o.per_node), "ranks per node (ranks fill nodes in order)")
      ("placements", po::value<std::string>()->default_value("full,node,replicate"), "dist.placement values")
      ("dtype", po::value(&o.dtype)->default_value(""), "bf16 or fp32 (default: bf16 for sdxl, fp32 for mid and tiny)")
      ("recompute", po::value<std::string>()->default_value(std::string(trainer::config_name(o.recompute))), "dist.recompute")
      ("no-prefetch", "dist.prefetch = false")
      ("ring", po::value(&o.ring)->default_value(o.ring), "dist.max_gathered_units")
      ("keep-gathered", "dist.keep_gathered = true")
      ("replicate-units", po::value(&o.replicate_units)->default_value(""), "dist.replicate_units (comma-separated unit names)")
      ("no-memory", "do not flag configurations over --memory-gib")
      ("waits", po::value(&o.waits)->default_value(0), "print each row's N largest gather waits (unit, branch, direction)")
      ("peak-tflops", po::value(&hw.peak_tflops)->default_value(hw.peak_tflops), "peak TFLOP/s per rank, for MFU (H100/H200 SXM dense bf16: 989)")
      ("achieved-tflops", po::value(&hw.achieved_tflops)->default_value(hw.achieved_tflops), "TFLOP/s the step's counted operations reach")
      ("intra-gbps", po::value(&hw.intra_gbps)->default_value(hw.intra_gbps), "GB/s a rank sends within its node (achieved ring bandwidth)")
      ("inter-gbps", po::value(&hw.inter_gbps)->default_value(hw.inter_gbps), "GB/s a node sends to other nodes (achieved, all its NICs)")
      ("alpha-intra-us", po::value(&hw.alpha_intra_us)->default_value(hw.alpha_intra_us), "latency per ring step within a node")
      ("alpha-inter-us", po::value(&hw.alpha_inter_us)->default_value(hw.alpha_inter_us), "latency per ring step of a ring spanning nodes")
      ("hbm-gbps", po::value(&hw.hbm_gbps)->default_value(hw.hbm_gbps), "memory bandwidth per rank, for the optimizer step")
      ("memory-gib", po::value(&hw.memory_gib)->default_value(hw.memory_gib), "memory per rank; larger predicted peaks are flagged")
      ("compute-slowdown", po::value(&hw.compute_slowdown)->default_value(hw.compute_slowdown),
       "compute slower by this fraction on more than one rank (what communication takes from it)")
      ("json", po::value(&o.json)->default_value(""), "also write the rows to this file")
      ("tsv", po::value(&o.tsv)->default_value(""), "also write placement, ranks, step, efficiency, MFU, hidden as columns (for plots)")
      ("measured", po::value<std::string>()->default_value(""),
       "comma-separated bench_step --json files: predict each run's step (its model, batch, ranks, nodes, placement, "
       "prefetch, ring) and print measured against predicted; the achieved rate comes from the file with one rank")
      ("cores", po::value(&o.cores)->default_value(0),
       "with --measured: cores the runs' nodes share out (launch/cluster --cpus split); more ranks than cores on a "
       "node slow its compute by ranks / cores");
  // clang-format on
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  if (vm.count("help") != 0U) {
    std::cout << desc << "\n";
    return 0;
  }
  po::notify(vm);
  o.ranks.clear();
  for (const auto& r : split_commas(vm["ranks"].as<std::string>())) o.ranks.push_back(std::stoll(r));
  o.placements = split_commas(vm["placements"].as<std::string>());
  o.measured = split_commas(vm["measured"].as<std::string>());
  const auto recompute = trainer::parse_config_name<trainer::Recompute>(vm["recompute"].as<std::string>());
  if (!recompute)
    throw std::invalid_argument("--recompute must be " + trainer::config_choices<trainer::Recompute>() + ", got '" +
                                vm["recompute"].as<std::string>() + "'");
  o.recompute = *recompute;
  o.prefetch = vm.count("no-prefetch") == 0U;
  o.keep_gathered = vm.count("keep-gathered") != 0U;
  o.memory = vm.count("no-memory") == 0U;
  if (o.ranks.empty() || o.placements.empty()) throw std::invalid_argument("--ranks and --placements need values");
  for (const int64_t r : o.ranks)
    if (r < 1) throw std::invalid_argument("--ranks: every count must be >= 1");
  if (o.batch < 1 || o.per_node < 1 || o.ring < 1)
    throw std::invalid_argument("--batch, --ranks-per-node, --ring must be >= 1");
  if (hw.achieved_tflops <= 0 || hw.peak_tflops <= 0 || hw.intra_gbps <= 0 || hw.inter_gbps <= 0 || hw.hbm_gbps <= 0)
    throw std::invalid_argument("rates (--*-tflops, --*-gbps) must be positive");

  if (!o.measured.empty()) return compare_measured(o);
  const Setup s = make_setup(o);
  std::printf("# scaling_model: %s, %lld px, batch %lld per rank, %s, dist.recompute %s, prefetch %s, ring %lld%s\n",
              o.config.c_str(), static_cast<long long>(s.resolution), static_cast<long long>(o.batch),
              s.config.model.dtype == trainer::ModelDtype::kBf16 ? "bf16" : "fp32",
              std::string(trainer::config_name(o.recompute)).c_str(), o.prefetch ? "on" : "off",
              static_cast<long long>(o.ring), o.keep_gathered ? ", keep_gathered" : "");
  std::printf(
      "# inputs: peak %.0f TFLOP/s, achieved %.3g TFLOP/s, in-node %.3g GB/s per rank, between nodes %.3g GB/s "
      "per node, ring step latency %.3g / %.3g us, HBM %.0f GB/s, %lld ranks per node, compute slowdown %.2f\n",
      hw.peak_tflops, hw.achieved_tflops, hw.intra_gbps, hw.inter_gbps, hw.alpha_intra_us, hw.alpha_inter_us,
      hw.hbm_gbps, static_cast<long long>(o.per_node), hw.compute_slowdown);
  std::printf(
      "# step = the engine's schedule replayed (trainer/step_timeline.h); compute = counted FLOPs / achieved; "
      "gather, reduce = the channel's busy time; exposed = compute waiting for them; hidden = the channel's time "
      "under compute; b2 fwd = the part of branch 2's forward gathers (the LCM UNet's) hidden; eff = step(1 rank) / "
      "step; MFU = (forward + backward FLOPs, no recompute) / (step x peak); "
      "sent/rank, inter/node = bytes per step (dist::step_traffic); peak = predicted memory per rank\n");
  std::vector<Row> rows;
  for (const auto& placement : o.placements) {
    const Row one = model_case(s, o, placement, 1);
    for (const int64_t n : o.ranks) {
      Row r = n == 1 ? one : model_case(s, o, placement, n);
      r.efficiency = one.timeline.step / r.timeline.step;
      rows.push_back(r);
    }
  }
  print_table(rows, o);
  if (o.waits > 0)
    for (const auto& r : rows) {
      std::vector<trainer::Timeline::Wait> w = r.timeline.waits;
      std::sort(w.begin(), w.end(), [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
      std::printf("# %s, %lld ranks: largest gather waits:", r.placement.c_str(), static_cast<long long>(r.ranks));
      for (size_t i = 0; i < w.size() && static_cast<int64_t>(i) < o.waits; ++i)
        std::printf(" %s (branch %d %s) %.1f ms;", w[i].unit.c_str(), w[i].branch, w[i].backward ? "bwd" : "fwd",
                    1e3 * w[i].seconds);
      std::printf("\n");
    }
  if (!rows.empty())
    std::printf(
        "# per step and rank: %.4g TFLOP model (forward + backward), %.4g TFLOP executed (with the recompute)\n",
        rows.front().flops / 1e12, rows.front().executed_flops / 1e12);
  if (!o.json.empty()) {
    nlohmann::json doc;
    doc["config"] = o.config;
    doc["resolution"] = s.resolution;
    doc["batch_per_rank"] = o.batch;
    doc["ranks_per_node"] = o.per_node;
    doc["hardware"] = {{"peak_tflops", hw.peak_tflops},
                       {"achieved_tflops", hw.achieved_tflops},
                       {"intra_gbps", hw.intra_gbps},
                       {"inter_gbps", hw.inter_gbps},
                       {"alpha_intra_us", hw.alpha_intra_us},
                       {"alpha_inter_us", hw.alpha_inter_us},
                       {"hbm_gbps", hw.hbm_gbps},
                       {"memory_gib", hw.memory_gib},
                       {"compute_slowdown", hw.compute_slowdown}};
    for (const auto& r : rows) doc["rows"].push_back(to_json(r));
    write_json(o.json, doc);
  }
  if (!o.tsv.empty()) {
    std::ofstream f(o.tsv);
    f << "# placement ranks step_s efficiency mfu hidden_fraction\n";
    for (const auto& r : rows)
      f << r.placement << " " << r.ranks << " " << r.timeline.step << " " << r.efficiency << " " << r.mfu << " "
        << r.timeline.hidden_fraction() << "\n";
    if (!f) throw std::runtime_error("cannot write " + o.tsv);
    std::printf("# wrote %s\n", o.tsv.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace lookahead::bench

int main(int argc, char** argv) {
  try {
    return lookahead::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "scaling_model: " << e.what() << "\n";
    return 2;
  }
}
