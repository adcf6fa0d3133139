// sdxl_memory_model: what the sharded engine costs per GPU for the REAL SDXL lookahead model, by
// arithmetic rather than measurement. Element counts per sharding unit and role come from
// LookaheadModel(LookaheadModelConfig::sdxl(), at::kMeta).units() (shapes only, no memory), with the
// LCM-LoRA SDXL (rank 64 on PEFT's target modules) created on meta too; how often each unit is
// gathered and reduce-scattered in one step comes from tracing one training step of a small
// network with SDXL's exact unit structure (same unit names, same block layout, narrow channels)
// through a recording UnitRunner that applies the engine's rule for which calls get a backward.
// Prints bytes held per GPU and bytes moved per GPU per step for N GPUs (8 per node) and each
// placement of the frozen weights; then the peak per GPU with activations (a step of the real
// model traced on the meta device at the requested resolution and batch, trainer/activation_estimate.h).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
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
#include "dist/unit_runner.h"
#include "model/face/align.h"
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

/// Uses of one unit in one training step.
struct UnitUse {
  int64_t forward_calls = 0;   ///< every call gathers in forward
  int64_t backward_calls = 0;  ///< calls with a backward (the engine's with_grad rule): gather again + RS
};

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

// ---------------------------------------------------------------------------------------------
// One traced step.

/// Records every unit call; runs it in place. A call gets a backward under the engine's rule:
/// gradient mode on and (an input needs a gradient or the unit has trainable parameters).
class TraceRunner : public dist::UnitRunner {
 public:
  explicit TraceRunner(std::set<std::string> trainable_units) : trainable_(std::move(trainable_units)) {}
  std::vector<at::Tensor> run(const std::string& unit, const dist::UnitFn& fn,
                              const std::vector<at::Tensor>& inputs) override {
    bool any_grad = false;
    for (const auto& t : inputs) any_grad |= t.defined() && t.requires_grad();
    const bool with_grad = at::GradMode::is_enabled() && (any_grad || trainable_.contains(unit));
    calls.push_back({unit, with_grad});
    return fn(inputs);
  }
  struct Call {
    std::string unit;
    bool with_grad;
  };
  std::vector<Call> calls;

 private:
  std::set<std::string> trainable_;
};

/// A network with SDXL's unit structure (same stages, resnets per block, attention placement,
/// encoder truncation) at narrow widths, so one step runs in well under a second.
model::LookaheadModelConfig sdxl_structure_config() {
  auto c = model::LookaheadModelConfig::tiny();
  auto u = model::unet::UNetConfig::sdxl_base();
  u.block_out_channels = {16, 32, 32};
  u.transformer_layers_per_block = {1, 1, 1};  // depth lives inside a Transformer2DModel unit
  u.reverse_transformer_layers_per_block = {1, 1, 1};
  u.num_attention_heads = {1, 2, 2};
  u.cross_attention_dim = {24, 24, 24};
  u.norm_num_groups = 4;
  u.addition_time_embed_dim = 4;
  u.projection_class_embeddings_input_dim = 40;
  c.unet = u;
  return c;
}

model::Batch trace_batch(const model::LookaheadModelConfig& c, int64_t n, int64_t latent) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(11);
  const int64_t cross = c.unet.cross_attention_dim.at(0), clip = c.resampler.embedding_dim();
  const int64_t pooled = c.unet.projection_class_embeddings_input_dim - 6 * c.unet.addition_time_embed_dim;
  model::Batch b;
  b.z_tgt = at::randn({n, 4, latent, latent}, g);
  b.z_ref = at::randn({n, 4, latent, latent}, g);
  b.clip_ref = at::randn({n, 5, clip}, g);
  b.clip_uncond = at::randn({1, 5, clip}, g);
  b.tgt_prompt = at::randn({n, 3, cross}, g);
  b.tgt_pooled = at::randn({n, pooled}, g);
  b.ref_prompt = at::randn({n, 3, cross}, g);
  b.ref_pooled = at::randn({n, pooled}, g);
  b.time_ids = at::randn({n, 6}, g);
  b.ref_landmarks = model::face::arcface_template(8.0 * static_cast<double>(latent)).unsqueeze(0).repeat({n, 1, 1});
  at::Tensor r = at::randn({n, 512}, g);
  b.ref_id = r / r.norm(2, {1}, true);
  return b;
}

struct Trace {
  std::vector<TraceRunner::Call> calls;
  std::vector<std::string> runs;         ///< "branch1: image_proj, encoder(…units), decoder(…)" per segment
  std::map<std::string, int64_t> groups;  ///< unit -> non-empty roles
  std::map<std::string, int64_t> trainable_groups;
};

/// Runs one training step (both branches' forward; backward is implied by with_grad) of `config`.
Trace trace_step(const model::LookaheadModelConfig& config, int64_t latent) {
  at::manual_seed(3);
  model::LookaheadModel m(config);
  std::set<std::string> trainable;
  Trace tr;
  for (auto& u : m.units()) {
    const size_t sizes[4] = {u.frozen.size(), u.lcm.size(), u.adapter.size(), u.lora.size()};
    tr.groups[u.name] = (sizes[0] > 0) + (sizes[1] > 0) + (sizes[2] > 0) + (sizes[3] > 0);
    tr.trainable_groups[u.name] = (sizes[2] > 0) + (sizes[3] > 0);
    if (sizes[2] + sizes[3] > 0) trainable.insert(u.name);
  }
  TraceRunner runner(trainable);
  m.set_unit_runner(&runner);
  const int64_t n = 1;
  model::Batch b = trace_batch(config, n, latent);
  auto draw = m.draw(7, 0, n, 0, n, {4, latent, latent});
  size_t mark = 0;
  auto segment = [&](const std::string& branch) {
    // Split the branch's calls into network runs: a UNet run starts at "stem_in".
    std::vector<std::string> names;
    std::string current;
    int64_t count = 0, unet_runs = 0;
    auto flush = [&] {
      if (count > 0) names.push_back(current + " (" + std::to_string(count) + " units)");
      count = 0;
    };
    for (size_t i = mark; i < runner.calls.size(); ++i) {
      const std::string& u = runner.calls[i].unit;
      std::string run = u;
      if (u == "stem_in") {
        flush();
        run = "unet#" + std::to_string(++unet_runs);
      } else if (u == "image_proj" || u == "taesd.decoder" || u == "arcface") {
        flush();
      } else {
        run = current;
      }
      current = run;
      ++count;
    }
    flush();
    std::string text = branch + ":";
    for (const auto& s : names) text += " " + s;
    tr.runs.push_back(text);
    mark = runner.calls.size();
  };
  at::Tensor l1 = m.diffusion_loss(b, draw);
  segment("branch 1 (diffusion)");
  at::Tensor l2 = m.lookahead_loss(b, draw, 1.0).loss;
  segment("branch 2 (lookahead)");
  m.set_unit_runner(nullptr);
  tr.calls = runner.calls;
  return tr;
}

std::map<std::string, UnitUse> uses_of(const Trace& tr) {
  std::map<std::string, UnitUse> out;
  for (const auto& c : tr.calls) {
    ++out[c.unit].forward_calls;
    out[c.unit].backward_calls += c.with_grad;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The model.

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
using dist::shard_elements;

struct Row {
  int64_t gpus = 0, nodes = 0;
  std::string placement;
  int64_t frozen_shards = 0;  // shard count of frozen + lcm groups
  // bytes held per GPU
  double frozen = 0, lcm = 0, master = 0, grads = 0, adam = 0, ring = 0, kept = 0, rs_inflight = 0;
  double total() const { return frozen + lcm + master + grads + adam + ring + kept; }
  // bytes per GPU per step (received for all-gather, sent for reduce-scatter; ring algorithm)
  double ag_intra = 0, ag_inter = 0, rs_intra = 0, rs_inter = 0;
  int64_t gather_calls = 0, rs_calls = 0;
};

Row model_row(const std::vector<dist::UnitElements>& units, const std::map<std::string, UnitUse>& uses, int64_t n,
              dist::Placement placement, bool keep_gathered, const std::set<std::string>& kept) {
  Row r;
  r.gpus = n;
  r.nodes = ceil_div(n, kGpusPerNode);
  r.placement = dist::to_string(placement);
  const int64_t sf = dist::frozen_shard_ranks(placement, static_cast<int>(n), static_cast<int>(std::min(n, kGpusPerNode)));
  r.frozen_shards = sf;
  // Bytes held: frozen and LCM-LoRA in bf16, trainables as fp32 masters computing in bf16.
  dist::ShardingLayout layout{
      .world_size = n, .frozen_shards = sf, .frozen_bytes = 2, .compute_bytes = 2, .ring_units = 2, .kept_units = kept};
  const dist::HeldBytes held = dist::held_bytes(units, layout);
  r.frozen = held.frozen;
  r.lcm = held.lcm;
  r.master = held.master;
  r.grads = held.grads;
  r.adam = held.adam;
  r.ring = held.ring;
  r.kept = held.kept;
  constexpr double kBf16 = 2, kFp32 = 4;
  std::vector<double> rs_buffer;  // per unit: fp32 bytes of its unsharded trainable gradients
  // Fraction of a collective's per-GPU ring volume over s ranks, and the part of it that belongs to
  // shards on other nodes (a group spanning s ranks, 8 per node).
  auto ring = [](int64_t s) { return s > 1 ? static_cast<double>(s - 1) / static_cast<double>(s) : 0.0; };
  auto remote = [](int64_t s) {
    return s > kGpusPerNode ? static_cast<double>(s - kGpusPerNode) / static_cast<double>(s - 1) : 0.0;
  };
  for (const auto& u : units) {
    const UnitUse use = uses.contains(u.name) ? uses.at(u.name) : UnitUse{};
    const int64_t t_shard = shard_elements(u.adapter, n) + shard_elements(u.lora, n);
    // Full (padded) buffers that a collective moves (roles sharded over > 1 rank), bf16.
    double g_frozen = sf > 1 ? (shard_elements(u.frozen, sf) + shard_elements(u.lcm, sf)) * sf * kBf16 : 0.0;
    double g_train = n > 1 ? t_shard * n * kBf16 : 0.0;
    rs_buffer.push_back(u.trainable() * kFp32);
    // Gathers: every forward call, and every backward call again (ZeRO-3), unless keep_gathered
    // holds the unit from its forward to its last backward or the unit keeps its activations.
    const int64_t gathers = use.forward_calls + (keep_gathered || kept.contains(u.name) ? 0 : use.backward_calls);
    const double ag_f = gathers * g_frozen * ring(sf), ag_t = gathers * g_train * ring(n);
    r.ag_inter += ag_f * remote(sf) + ag_t * remote(n);
    r.ag_intra += ag_f * (1 - remote(sf)) + ag_t * (1 - remote(n));
    // One reduce-scatter of each trainable group (fp32) per backward call.
    const int64_t rs = u.trainable() > 0 ? use.backward_calls : 0;
    const double rs_b = rs * t_shard * n * kFp32 * ring(n);
    r.rs_inter += rs_b * remote(n);
    r.rs_intra += rs_b * (1 - remote(n));
    r.gather_calls += (g_frozen + g_train > 0) ? gathers : 0;
    r.rs_calls += (n > 1) ? rs : 0;
  }
  std::sort(rs_buffer.rbegin(), rs_buffer.rend());
  r.rs_inflight = rs_buffer.size() >= 2 ? rs_buffer[0] + rs_buffer[1] : 0.0;
  return r;
}

nlohmann::json to_json(const Row& r) {
  return {{"gpus", r.gpus},
          {"nodes", r.nodes},
          {"placement", r.placement},
          {"frozen_shard_count", r.frozen_shards},
          {"bytes_per_gpu",
           {{"frozen_bf16", r.frozen},
            {"lcm_lora_bf16", r.lcm},
            {"trainable_master_fp32", r.master},
            {"trainable_grads_fp32", r.grads},
            {"adam_moments_fp32", r.adam},
            {"gather_ring_2_largest_units_bf16", r.ring},
            {"kept_units_bf16", r.kept},
            {"total_excl_activations", r.total()},
            {"rs_staging_2_largest_units_fp32_not_in_total", r.rs_inflight}}},
          {"bytes_moved_per_gpu_per_step",
           {{"all_gather_intra_node", r.ag_intra},
            {"all_gather_inter_node", r.ag_inter},
            {"reduce_scatter_intra_node", r.rs_intra},
            {"reduce_scatter_inter_node", r.rs_inter},
            {"total", r.ag_intra + r.ag_inter + r.rs_intra + r.rs_inter}}},
          {"group_gathers_with_traffic", r.gather_calls},
          {"reduce_scatters", r.rs_calls}};
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
                                            "comma-separated GPU counts (8 per node)")(
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
  const bool keep = vm["keep-gathered"].as<bool>();
  const std::string recompute_name = vm["recompute"].as<std::string>();
  const auto recompute = trainer::parse_config_name<trainer::Recompute>(recompute_name);
  if (!recompute) {
    std::cerr << "sdxl_memory_model: --recompute: must be " << trainer::config_choices<trainer::Recompute>()
              << ", got '" << recompute_name << "'\n";
    return 2;
  }
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
    for (auto& u : units)
      u.lcm = lcm_built > 0 ? u.lcm * kLcmLoraParams / lcm_built : 0;
  }

  // The traced step, on a network with SDXL's unit structure; its unit names must be SDXL's.
  const Trace tr = trace_step(sdxl_structure_config(), 8);
  {
    std::set<std::string> a, b;
    for (const auto& u : units) a.insert(u.name);
    for (const auto& [u, g] : tr.groups) b.insert(u);
    if (a != b) throw std::runtime_error("sdxl_memory_model: the traced network's units differ from SDXL's");
  }
  const auto uses = uses_of(tr);
  std::vector<std::string> unit_names;
  for (const auto& u : units) unit_names.push_back(u.name);
  const std::set<std::string> kept = trainer::kept_activation_units(*recompute, unit_names);
  int64_t fwd = 0, bwd = 0, group_gathers = 0, group_rs = 0;
  for (const auto& c : tr.calls) {
    fwd += 1;
    bwd += c.with_grad;
    group_gathers += tr.groups.at(c.unit) * (1 + (c.with_grad && !kept.contains(c.unit)));
    group_rs += c.with_grad ? tr.trainable_groups.at(c.unit) : 0;
  }
  // Cross-check against the engine's own counters: the same prediction for the tiny config
  // (bench_step --config tiny reports the engine's group gathers and reduce-scatters per step).
  const Trace tiny = trace_step(model::LookaheadModelConfig::tiny(), 8);
  std::vector<std::string> tiny_names;
  for (const auto& [u, g] : tiny.groups) tiny_names.push_back(u);
  const std::set<std::string> tiny_kept = trainer::kept_activation_units(*recompute, tiny_names);
  int64_t tiny_gathers = 0, tiny_rs = 0;
  for (const auto& c : tiny.calls) {
    tiny_gathers += tiny.groups.at(c.unit) * (1 + (c.with_grad && !tiny_kept.contains(c.unit)));
    tiny_rs += c.with_grad ? tiny.trainable_groups.at(c.unit) : 0;
  }

  std::printf("# sdxl_memory_model: the SDXL lookahead model under the sharded engine, per GPU (8 GPUs per node)\n");
  std::printf("# element counts: LookaheadModel(LookaheadModelConfig::sdxl(), kMeta).units(), %zu units\n",
              units.size());
  std::printf("#   frozen %lld (SDXL UNet + TAESDXL decoder + IR-SE50), LCM-LoRA %lld (built on meta: rank 64 on "
              "PEFT's targets; published %lld), adapter %lld, lora %lld\n",
              static_cast<long long>(totals[0]), static_cast<long long>(lcm_built),
              static_cast<long long>(kLcmLoraParams), static_cast<long long>(totals[2]),
              static_cast<long long>(totals[3]));
  std::printf("# one step, traced on a network with SDXL's unit structure (%zu unit calls, %lld with a backward):\n",
              static_cast<size_t>(fwd), static_cast<long long>(bwd));
  for (const auto& s : tr.runs) std::printf("#   %s\n", s.c_str());
  std::printf("#   per step: %lld group gathers (%s), %lld group reduce-scatters\n",
              static_cast<long long>(keep ? 0 : group_gathers),
              keep ? "keep_gathered: see rows" : "forward, and backward of the recomputed units",
              static_cast<long long>(group_rs));
  std::printf("#   cross-check, same rule on the tiny config: %lld group gathers, %lld reduce-scatters per step "
              "(compare bench_step --config tiny's gathers / RS columns)\n",
              static_cast<long long>(tiny_gathers), static_cast<long long>(tiny_rs));
  std::printf("# held per GPU: frozen + LCM-LoRA shards in bf16; trainables fp32 master + fp32 grads + 2 fp32 Adam "
              "moments (16 B/element of the shard);\n#   ring = the 2 largest units' full buffers in bf16 "
              "(roles sharded over >1 rank; fp32 trainables always, as bf16 compute copies);\n#   kept = the %zu units that keep "
              "their activations (dist.recompute = %s), gathered from forward to backward; ACTIVATIONS EXCLUDED.\n",
              kept.size(), recompute_name.c_str());
  std::printf("#   RS staging (not in total): the 2 largest units' unsharded fp32 gradients, held until their "
              "reduce-scatter is issued.\n");
  std::printf("# moved per GPU per step: ring algorithm, (S-1)/S of each full buffer per collective over S ranks; "
              "all-gathers in bf16 %s,\n#   reduce-scatters of trainable grads in fp32 once per backward call; "
              "inter-node = the part belonging to shards on other nodes ((S-8)/(S-1) of it).\n",
              keep ? "once per forward call (keep_gathered)"
                   : "per forward call and again per backward call of a recomputed unit");
  std::printf("%5s %5s %-9s | %8s %8s %8s %8s %8s %8s %8s %9s | %8s | %9s %9s %9s %9s %9s\n", "GPUs", "nodes",
              "placement", "frozen", "lcm", "master", "grads", "adam", "ring", "kept", "total", "RSstage", "AG.intra",
              "AG.inter",
              "RS.intra", "RS.inter", "moved");
  std::printf("%5s %5s %-9s | %8s %8s %8s %8s %8s %8s %8s %9s | %8s | %9s %9s %9s %9s %9s\n", "", "", "", "GiB",
              "GiB", "GiB", "GiB", "GiB", "GiB", "GiB", "GiB", "GiB", "GiB", "GiB", "GiB", "GiB", "GiB");
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t n : gpus)
    for (dist::Placement placement : {dist::Placement::kFull, dist::Placement::kNode, dist::Placement::kReplicate}) {
      Row r = model_row(units, uses, n, placement, keep, kept);
      const char* p = dist::to_string(placement);
      std::printf(
          "%5lld %5lld %-9s | %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %9.2f | %8.2f | %9.2f %9.2f %9.2f %9.2f %9.2f\n",
          static_cast<long long>(n), static_cast<long long>(r.nodes), p, gib(r.frozen), gib(r.lcm), gib(r.master),
          gib(r.grads), gib(r.adam), gib(r.ring), gib(r.kept), gib(r.total()), gib(r.rs_inflight),
                  gib(r.ag_intra), gib(r.ag_inter), gib(r.rs_intra), gib(r.rs_inter),
                  gib(r.ag_intra + r.ag_inter + r.rs_intra + r.rs_inter));
      rows.push_back(to_json(r));
    }

  // Peak per GPU with activations: one step of the SDXL model traced on the meta device at the
  // requested shapes (trainer/activation_estimate.h), per GPU count and placement.
  const int64_t resolution = vm["resolution"].as<int64_t>(), batch = vm["batch"].as<int64_t>();
  const double reserve = vm["reserve-gib"].as<double>() * 1024.0 * 1024.0 * 1024.0;
  const std::vector<int64_t> memories = parse_list(vm["memories"].as<std::string>());
  if (resolution < 64 || resolution % 8 != 0)
    throw std::invalid_argument("--resolution must be a multiple of 8, >= 64");
  if (batch < 1) throw std::invalid_argument("--batch must be >= 1");
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
      trainer::TrainConfig c;
      c.model.preset = trainer::Preset::kSdxl;
      c.model.dtype = trainer::ModelDtype::kBf16;
      c.train.batch_per_rank = batch;
      c.data.resolution = resolution;
      c.dist.placement = placement;
      c.dist.recompute = *recompute;
      c.dist.keep_gathered = keep;
      const trainer::StepMemoryPrediction p = trainer::predict_step_memory(
          c, trainer::model_config(c, c10::Device(c10::DeviceType::CUDA)), n, std::min(n, kGpusPerNode), resolution);
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
      const UnitUse use = uses.contains(u.name) ? uses.at(u.name) : UnitUse{};
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
         {{"runs", tr.runs},
          {"unit_calls", fwd},
          {"backward_calls", bwd},
          {"group_gathers", group_gathers},
          {"group_reduce_scatters", group_rs}}},
        {"tiny_cross_check", {{"group_gathers", tiny_gathers}, {"group_reduce_scatters", tiny_rs}}},
        {"assumptions",
         "frozen and LCM-LoRA stored and gathered in bf16; trainables fp32 master + fp32 grads + 2 fp32 moments, "
         "gathered in bf16; ring = 2 largest units; activations excluded; ring-algorithm volumes (S-1)/S"},
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
