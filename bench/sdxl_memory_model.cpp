// sdxl_memory_model: what the sharded engine costs per GPU for the REAL SDXL lookahead model, by
// arithmetic rather than measurement. Element counts per sharding unit and role come from
// LookaheadModel(LookaheadModelConfig::sdxl(), at::kMeta).units() (shapes only, no memory), with the
// LCM-LoRA SDXL (rank 64 on PEFT's target modules) created on meta too; how often each unit is
// gathered and reduce-scattered in one step comes from the same step of the real model traced on
// the meta device (trainer/activation_estimate.h), and the bytes those collectives send from
// dist/traffic_estimate.h. Prints bytes held per GPU and bytes sent per GPU and per node per step
// for N GPUs (8 per node) and each placement of the frozen weights; then the peak per GPU with
// activations at the requested resolution and batch.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
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
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "dist/memory_estimate.h"
#include "dist/placement.h"
#include "dist/traffic_estimate.h"
#include "model/lookahead/lookahead_model.h"
#include "trainer/activation_estimate.h"
#include "trainer/train_config.h"
#include "trainer/train_state.h"

namespace lookahead::bench {
namespace {

namespace po = boost::program_options;

/// Published size of kohya LCM-LoRA SDXL (788 modules, rank 64: docs/engine.md).
constexpr int64_t kLcmLoraParams = 196'751'360;
constexpr int64_t kGpusPerNode = 8;

// ---------------------------------------------------------------------------------------------
// Element counts of the real model.

std::vector<dist::UnitElements> sdxl_unit_sizes(int64_t& lcm_total) {
  auto config = model::LookaheadModelConfig::sdxl();
  config.lcm_lora_rank = 64;  // the LCM-LoRA SDXL's structure, on meta (no values)
  config.lcm_lora_select = model::LookaheadModelConfig::lcm_lora_sdxl_target;
  model::LookaheadModel m(config, at::kMeta);
  std::vector<dist::UnitElements> out = dist::count_elements(m.units());
  lcm_total = 0;
  for (const auto& u : out) lcm_total += u.lcm;
  return out;
}

/// The run the tool models: the SDXL preset in bf16, `batch` samples per GPU at `resolution`.
trainer::TrainConfig sdxl_run(int64_t resolution, int64_t batch, trainer::Recompute recompute, bool keep_gathered,
                              dist::Placement placement) {
  trainer::TrainConfig c;
  c.model.preset = trainer::Preset::kSdxl;
  c.model.dtype = trainer::ModelDtype::kBf16;
  c.train.batch_per_rank = batch;
  c.data.resolution = resolution;
  c.dist.placement = placement;
  c.dist.recompute = recompute;
  c.dist.keep_gathered = keep_gathered;
  return c;
}

trainer::StepMemoryPrediction predict(const trainer::TrainConfig& c, int64_t gpus) {
  return trainer::predict_step_memory(c, trainer::model_config(c, c10::Device(c10::DeviceType::CUDA)), gpus,
                                      std::min(gpus, kGpusPerNode), c.data.resolution);
}

// ---------------------------------------------------------------------------------------------
// The model.

struct Row {
  int64_t gpus = 0;
  std::string placement;
  int64_t frozen_shards = 0;  // shard count of frozen + lcm groups
  // bytes held per GPU
  double frozen = 0, lcm = 0, master = 0, grads = 0, adam = 0, ring = 0, kept = 0, rs_inflight = 0;
  double total() const { return frozen + lcm + master + grads + adam + ring + kept; }
  dist::StepTraffic traffic;
};

Row model_row(const std::vector<dist::UnitElements>& units, const std::map<std::string, dist::UnitUse>& uses, int64_t n,
              dist::Placement placement, bool keep_gathered, const std::set<std::string>& kept) {
  Row r;
  r.gpus = n;
  r.placement = dist::to_string(placement);
  const int64_t per_node = std::min(n, kGpusPerNode);
  const int64_t sf = dist::frozen_shard_ranks(placement, static_cast<int>(n), static_cast<int>(per_node));
  r.frozen_shards = sf;
  // Bytes held: frozen and LCM-LoRA in bf16, trainables as fp32 masters computing in bf16.
  dist::ShardingLayout layout{.world_size = n,
                              .frozen_shards = sf,
                              .frozen_bytes = 2,
                              .compute_bytes = 2,
                              .ring_units = trainer::DistConfig().max_gathered_units,
                              .kept_units = kept,
                              .replicated_units = {}};
  const dist::HeldBytes held = dist::held_bytes(units, layout);
  r.frozen = held.frozen;
  r.lcm = held.lcm;
  r.master = held.master;
  r.grads = held.grads;
  r.adam = held.adam;
  r.ring = held.ring;
  r.kept = held.kept;
  std::vector<double> rs_buffer;  // per unit: fp32 bytes of its unsharded trainable gradients
  for (const auto& u : units) rs_buffer.push_back(static_cast<double>(u.trainable()) * 4.0);
  std::sort(rs_buffer.rbegin(), rs_buffer.rend());
  r.rs_inflight = rs_buffer.size() >= 2 ? rs_buffer[0] + rs_buffer[1] : 0.0;
  // Ring collectives, as NCCL and OpenMPI's large-message rings run them.
  r.traffic = dist::step_traffic(units, uses,
                                 dist::TrafficLayout{.sharding = layout,
                                                     .ranks_per_node = per_node,
                                                     .keep_gathered = keep_gathered,
                                                     .all_gather = dist::CollectiveAlgorithm::kRing,
                                                     .reduce_scatter = dist::CollectiveAlgorithm::kRing});
  return r;
}

nlohmann::json to_json(const Row& r) {
  const dist::StepTraffic& t = r.traffic;
  return {{"gpus", r.gpus},
          {"nodes", t.nodes},
          {"placement", r.placement},
          {"frozen_shard_count", r.frozen_shards},
          {"bytes_per_gpu",
           {{"frozen_bf16", r.frozen},
            {"lcm_lora_bf16", r.lcm},
            {"trainable_master_fp32", r.master},
            {"trainable_grads_fp32", r.grads},
            {"adam_moments_fp32", r.adam},
            {"gather_ring_bf16", r.ring},
            {"kept_units_bf16", r.kept},
            {"total_excl_activations", r.total()},
            {"rs_staging_2_largest_units_fp32_not_in_total", r.rs_inflight}}},
          {"traffic_per_step",
           {{"sent_per_rank",
             {{"all_gather", t.all_gather_sent_per_rank},
              {"reduce_scatter", t.reduce_scatter_sent_per_rank},
              {"total", t.sent_per_rank()}}},
            {"inter_node_per_node",
             {{"all_gather", t.all_gather_inter_node_per_node},
              {"reduce_scatter", t.reduce_scatter_inter_node_per_node},
              {"total", t.inter_node_per_node()}}},
            {"gathered", t.gathered},
            {"reduced", t.reduced},
            {"gathers", t.gathers},
            {"reduce_scatters", t.reduce_scatters}}}};
}

double gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(std::stoll(item));
  for (int64_t v : out)
    if (v < 1) throw std::invalid_argument("--gpus: counts must be >= 1");
  if (out.empty()) throw std::invalid_argument("--gpus is empty");
  return out;
}

int run(int argc, char** argv) {
  po::options_description desc("sdxl_memory_model options");
  desc.add_options()("help,h", "this text")("gpus", po::value<std::string>()->default_value("1,2,4,8,16,32,64"),
                                            "comma-separated GPU counts (8 per node: above 8, whole nodes)")(
      "keep-gathered", po::bool_switch(), "model keep_gathered (one gather per forward call, none in backward)")(
      "recompute", po::value<std::string>()->default_value("blocks"),
      "dist.recompute: all | blocks | none (kept units stay gathered from forward to backward)")(
      "resolution", po::value<int64_t>()->default_value(1024), "training resolution in pixels (activations)")(
      "batch", po::value<int64_t>()->default_value(4), "samples per GPU (activations)")(
      "reserve-gib", po::value<double>()->default_value(3.0),
      "GiB per GPU outside the tensors (CUDA context, NCCL buffers, allocator slack): an input, not a measurement")(
      "memories", po::value<std::string>()->default_value("80,141"), "GPU memory sizes in GB (10^9 bytes) to check")(
      "json", po::value<std::string>(), "also write the results to this JSON file");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "sdxl_memory_model: " << e.what() << "\n\n" << desc;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  const std::vector<int64_t> gpus = parse_list(vm["gpus"].as<std::string>());
  for (int64_t n : gpus)
    if (n > kGpusPerNode && n % kGpusPerNode != 0)
      throw std::invalid_argument("--gpus: counts above 8 must fill nodes of 8, got " + std::to_string(n));
  const bool keep = vm["keep-gathered"].as<bool>();
  const std::string recompute_name = vm["recompute"].as<std::string>();
  const auto recompute = trainer::parse_config_name<trainer::Recompute>(recompute_name);
  if (!recompute) {
    std::cerr << "sdxl_memory_model: --recompute: must be " << trainer::config_choices<trainer::Recompute>()
              << ", got '" << recompute_name << "'\n";
    return 2;
  }
  const int64_t resolution = vm["resolution"].as<int64_t>(), batch = vm["batch"].as<int64_t>();
  if (resolution < 64 || resolution % 8 != 0)
    throw std::invalid_argument("--resolution must be a multiple of 8, >= 64");
  if (batch < 1) throw std::invalid_argument("--batch must be >= 1");
  at::set_num_threads(1);

  int64_t lcm_built = 0;
  std::vector<dist::UnitElements> units = sdxl_unit_sizes(lcm_built);
  int64_t totals[4] = {0, 0, 0, 0};  // frozen, lcm, adapter, lora
  for (const auto& u : units) {
    totals[0] += u.frozen;
    totals[1] += u.lcm;
    totals[2] += u.adapter;
    totals[3] += u.lora;
  }
  if (lcm_built != kLcmLoraParams) {
    // Spread the published count over the units in proportion to what was built.
    std::fprintf(stderr, "sdxl_memory_model: LCM-LoRA built on meta has %lld parameters, published %lld; scaling\n",
                 static_cast<long long>(lcm_built), static_cast<long long>(kLcmLoraParams));
    for (auto& u : units) u.lcm = lcm_built > 0 ? u.lcm * kLcmLoraParams / lcm_built : 0;
  }

  // The unit calls of one step: the same for every GPU count and placement.
  const trainer::ActivationEstimate traced =
      predict(sdxl_run(resolution, batch, *recompute, keep, dist::Placement::kFull), 1).activations;
  const std::map<std::string, dist::UnitUse>& uses = traced.uses;
  std::vector<std::string> unit_names;
  for (const auto& u : units) unit_names.push_back(u.name);
  const std::set<std::string> kept = trainer::kept_activation_units(*recompute, unit_names);

  std::printf("# sdxl_memory_model: the SDXL lookahead model under the sharded engine, per GPU (8 GPUs per node)\n");
  std::printf("# element counts: LookaheadModel(LookaheadModelConfig::sdxl(), kMeta).units(), %zu units\n",
              units.size());
  std::printf(
      "#   frozen %lld (SDXL UNet + TAESDXL decoder + IR-SE50), LCM-LoRA %lld (built on meta: rank 64 on "
      "PEFT's targets; published %lld), adapter %lld, lora %lld\n",
      static_cast<long long>(totals[0]), static_cast<long long>(lcm_built), static_cast<long long>(kLcmLoraParams),
      static_cast<long long>(totals[2]), static_cast<long long>(totals[3]));
  std::printf(
      "# one step of the SDXL model traced on the meta device (trainer/activation_estimate.h): %lld unit "
      "calls, %lld with a backward;\n#   the reference identity's ArcFace, then branch 1 calling %zu units and "
      "branch 2 %zu\n",
      static_cast<long long>(traced.unit_calls), static_cast<long long>(traced.backward_calls),
      traced.diffusion_units.size(), traced.lookahead_units.size());
  std::printf(
      "# held per GPU: frozen + LCM-LoRA shards in bf16; trainables fp32 master + fp32 grads + 2 fp32 Adam "
      "moments (16 B/element of the shard);\n#   ring = the %lld largest units' full buffers in bf16 "
      "(dist.max_gathered_units; roles sharded over >1 rank; fp32 trainables always, as bf16 compute copies);\n"
      "#   kept = the %zu units "
      "that keep their activations (dist.recompute = %s), gathered from forward to backward; ACTIVATIONS EXCLUDED.\n",
      static_cast<long long>(trainer::DistConfig().max_gathered_units), kept.size(), recompute_name.c_str());
  std::printf(
      "#   RS staging (not in total): the 2 largest units' unsharded fp32 gradients, held until their "
      "reduce-scatter is issued.\n");
  std::printf(
      "# sent per step (dist/traffic_estimate.h): ring all-gathers of bf16 units %s, frozen groups over "
      "the placement's shards, trainables over all GPUs;\n#   ring reduce-scatters of fp32 trainable gradients "
      "once per backward call. A ring over S ranks has each rank send (S-1)/S of the full buffer;\n#   ranks "
      "fill nodes in order, so a ring spanning nodes sends to the next node what one ring edge carries, "
      "(S-1)/S of the buffer, from each node.\n",
      keep ? "once per forward call (keep_gathered)"
           : "per forward call and again per backward call of a recomputed unit");
  std::printf(
      "#   per rank = bytes each GPU sends; to other nodes = bytes each node sends off the node; gathers / RS = "
      "unit gathers and reduce-scatters that move data\n");
  std::printf("%5s %5s %-9s | %8s %8s %8s %8s %8s %8s %8s %9s | %8s | %9s %9s %9s | %9s %9s %9s | %7s %5s\n", "GPUs",
              "nodes", "placement", "frozen", "lcm", "master", "grads", "adam", "ring", "kept", "total", "RSstage",
              "AG", "RS", "sent", "AG", "RS", "sent", "gathers", "RS");
  std::printf("%5s %5s %-9s | %8s %8s %8s %8s %8s %8s %8s %9s | %8s | %29s | %29s | %13s\n", "", "", "", "GiB", "GiB",
              "GiB", "GiB", "GiB", "GiB", "GiB", "GiB", "GiB", "GiB per rank", "GiB to other nodes, per node",
              "per step");
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t n : gpus)
    for (dist::Placement placement : {dist::Placement::kFull, dist::Placement::kNode, dist::Placement::kReplicate}) {
      Row r = model_row(units, uses, n, placement, keep, kept);
      const dist::StepTraffic& t = r.traffic;
      std::printf(
          "%5lld %5lld %-9s | %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %9.2f | %8.2f | %9.2f %9.2f %9.2f | "
          "%9.2f %9.2f %9.2f | %7lld %5lld\n",
          static_cast<long long>(n), static_cast<long long>(t.nodes), dist::to_string(placement), gib(r.frozen),
          gib(r.lcm), gib(r.master), gib(r.grads), gib(r.adam), gib(r.ring), gib(r.kept), gib(r.total()),
          gib(r.rs_inflight), gib(t.all_gather_sent_per_rank), gib(t.reduce_scatter_sent_per_rank),
          gib(t.sent_per_rank()), gib(t.all_gather_inter_node_per_node), gib(t.reduce_scatter_inter_node_per_node),
          gib(t.inter_node_per_node()), static_cast<long long>(t.gathers), static_cast<long long>(t.reduce_scatters));
      rows.push_back(to_json(r));
    }

  // Peak per GPU with activations: one step of the SDXL model traced on the meta device at the
  // requested shapes (trainer/activation_estimate.h), per GPU count and placement.
  const double reserve = vm["reserve-gib"].as<double>() * 1024.0 * 1024.0 * 1024.0;
  const std::vector<int64_t> memories = parse_list(vm["memories"].as<std::string>());
  std::printf(
      "\n# peak per GPU WITH activations: %lldx%lld, batch %lld per GPU, bf16, dist.recompute = %s; each "
      "phase = always held + that phase's gathered weights + its traced activations;\n#   fits = peak + "
      "%.1f GiB reserve (an assumed input) within the GPU's memory\n",
      static_cast<long long>(resolution), static_cast<long long>(resolution), static_cast<long long>(batch),
      recompute_name.c_str(), vm["reserve-gib"].as<double>());
  std::printf("%5s %-9s | %8s %8s %8s %8s %8s |", "GPUs", "placement", "held", "branch1", "branch2", "optim", "peak");
  for (int64_t m : memories) std::printf(" %6lldGB", static_cast<long long>(m));
  std::printf(" | %s\n", "peak at");
  nlohmann::json peak_rows = nlohmann::json::array();
  auto at_unit = [](const std::string& unit) { return unit.empty() ? std::string("end of forward") : unit; };
  for (int64_t n : gpus)
    for (dist::Placement placement : {dist::Placement::kFull, dist::Placement::kNode, dist::Placement::kReplicate}) {
      const trainer::StepMemoryPrediction p = predict(sdxl_run(resolution, batch, *recompute, keep, placement), n);
      const double peak = p.peak();
      const bool b2 = p.lookahead() >= p.diffusion();
      const std::string where = p.optimizer() >= std::max(p.diffusion(), p.lookahead())
                                    ? "optimizer"
                                    : (b2 ? "branch 2, " + at_unit(p.activations.lookahead.unit)
                                          : "branch 1, " + at_unit(p.activations.diffusion.unit));
      std::printf("%5lld %-9s | %8.2f %8.2f %8.2f %8.2f %8.2f |", static_cast<long long>(n), dist::to_string(placement),
                  gib(p.base), gib(p.diffusion()), gib(p.lookahead()), gib(p.optimizer()), gib(peak));
      nlohmann::json fits;
      for (int64_t m : memories) {
        const bool ok = peak + reserve <= static_cast<double>(m) * 1e9;
        std::printf(" %8s", ok ? "fits" : "NO");
        fits[std::to_string(m) + "GB"] = ok;
      }
      std::printf(" | %s\n", where.c_str());
      peak_rows.push_back({{"gpus", n},
                           {"placement", dist::to_string(placement)},
                           {"held_bytes", p.base},
                           {"branch1_bytes", p.diffusion()},
                           {"branch2_bytes", p.lookahead()},
                           {"optimizer_bytes", p.optimizer()},
                           {"peak_bytes", peak},
                           {"peak_at", where},
                           {"fits_with_reserve", fits}});
    }

  if (vm.count("json")) {
    nlohmann::json unit_json = nlohmann::json::array();
    for (const auto& u : units) {
      const dist::UnitUse use = uses.contains(u.name) ? uses.at(u.name) : dist::UnitUse{};
      unit_json.push_back({{"name", u.name},
                           {"frozen", u.frozen},
                           {"lcm", u.lcm},
                           {"adapter", u.adapter},
                           {"lora", u.lora},
                           {"forward_calls", use.forward_calls},
                           {"backward_calls", use.backward_calls}});
    }
    nlohmann::json doc = {
        {"benchmark", "sdxl_memory_model"},
        {"gpus_per_node", kGpusPerNode},
        {"keep_gathered", keep},
        {"recompute", recompute_name},
        {"kept_units", kept},
        {"lcm_lora_params_published", kLcmLoraParams},
        {"lcm_lora_params_built_on_meta", lcm_built},
        {"totals", {{"frozen", totals[0]}, {"lcm", totals[1]}, {"adapter", totals[2]}, {"lora", totals[3]}}},
        {"step_trace",
         {{"unit_calls", traced.unit_calls},
          {"backward_calls", traced.backward_calls},
          {"branch1_units", traced.diffusion_units},
          {"branch2_units", traced.lookahead_units}}},
        {"assumptions",
         "frozen and LCM-LoRA stored and gathered in bf16; trainables fp32 master + fp32 grads + 2 fp32 moments, "
         "gathered in bf16; ring = the dist.max_gathered_units largest units; activations excluded from the held "
         "bytes; ring all-gathers and "
         "reduce-scatters, each rank sending (S-1)/S of the full buffer; ranks filling nodes of 8 in order, a node "
         "sending to other nodes what its ring edge to the next node carries"},
        {"units", unit_json},
        {"rows", rows},
        {"peak_with_activations",
         {{"resolution", resolution}, {"batch_per_gpu", batch}, {"reserve_bytes", reserve}, {"rows", peak_rows}}}};
    std::ofstream f(vm["json"].as<std::string>());
    if (!f) throw std::runtime_error("sdxl_memory_model: cannot write " + vm["json"].as<std::string>());
    f << doc.dump(2) << "\n";
    std::printf("# wrote %s\n", vm["json"].as<std::string>().c_str());
  }
  return 0;
}

}  // namespace
}  // namespace lookahead::bench

int main(int argc, char** argv) {
  try {
    return lookahead::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "sdxl_memory_model: " << e.what() << "\n";
    return 1;
  }
}
