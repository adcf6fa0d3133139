// bench_step: whole LCM-Lookahead training steps through the sharded engine under mpirun. For each
// configuration (overlap on / off, optionally keep_gathered, per placement) it runs warm-up steps
// and measured steps of the step structure of tests/dist/lookahead_engine_test.cpp (branch 1
// forward + backward, branch 2 forward + backward while branch 1's reduce-scatters are in flight,
// finish_gradients, clip, AdamW step, end_step) and prints per-step time split into phases and the
// bytes each rank holds. Rank 0 prints.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <boost/program_options/options_description.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "dist/sharded_adamw.h"
#include "dist/sharded_engine.h"
#include "dist/world.h"
#include "model/face/align.h"
#include "model/lookahead/lookahead_model.h"

namespace lookahead::bench {
namespace {

namespace po = boost::program_options;

struct Options {
  std::string config = "tiny";
  int steps = 5;
  int warmup = 2;
  int64_t batch = 0;  // global batch; 0: 2 samples per rank
  std::vector<std::string> placements{"full", "replicate"};
  bool keep_gathered = false;
  std::string json_path;
  double timeout_s = 600.0;
};

po::options_description describe_options() {
  po::options_description desc("bench_step options");
  desc.add_options()
      ("help,h", "this text")
      ("config", po::value<std::string>()->default_value("tiny"),
       "model: tiny (LookaheadModelConfig::tiny(), 8x8 latents) or mid (UNet 64/128/128, 2 transformer layers, "
       "32x32 latents)")
      ("steps", po::value<int>()->default_value(5), "measured steps per configuration (medians are reported)")
      ("warmup", po::value<int>()->default_value(2), "untimed steps first (>= 1: the first step records the unit order)")
      ("batch", po::value<int64_t>()->default_value(0), "global batch (a multiple of the rank count); 0: 2 per rank")
      ("placements", po::value<std::string>()->default_value("full,replicate"),
       "comma-separated frozen-weight placements: full, node, replicate")
      ("keep-gathered", po::bool_switch(), "also run overlap on with keep_gathered (no second gather in backward)")
      ("json", po::value<std::string>(), "also write the results to this JSON file (rank 0)")
      ("timeout", po::value<double>()->default_value(600.0), "collective timeout in seconds");
  return desc;
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

bool parse_options(int argc, char** argv, Options& opt) {
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, describe_options()), vm);
  po::notify(vm);
  if (vm.count("help")) return false;
  opt.config = vm["config"].as<std::string>();
  opt.steps = vm["steps"].as<int>();
  opt.warmup = vm["warmup"].as<int>();
  opt.batch = vm["batch"].as<int64_t>();
  opt.placements = split_commas(vm["placements"].as<std::string>());
  opt.keep_gathered = vm["keep-gathered"].as<bool>();
  opt.timeout_s = vm["timeout"].as<double>();
  if (vm.count("json")) opt.json_path = vm["json"].as<std::string>();
  if (opt.config != "tiny" && opt.config != "mid") throw std::invalid_argument("--config must be tiny or mid");
  if (opt.steps < 1) throw std::invalid_argument("--steps must be >= 1");
  if (opt.warmup < 1) throw std::invalid_argument("--warmup must be >= 1 (the first step records the unit order)");
  if (opt.batch < 0) throw std::invalid_argument("--batch must be >= 0");
  if (opt.placements.empty()) throw std::invalid_argument("--placements is empty");
  for (const auto& p : opt.placements) dist::placement_from_string(p);  // throws on an unknown name
  return true;
}

/// The model and the shapes of its inputs.
struct ModelSetup {
  model::LookaheadModelConfig config;
  int64_t latent = 8;       // latent side h = w
  int64_t clip_tokens = 5;  // T of the CLIP features
  int64_t prompt_tokens = 3;
  std::string description;
};

ModelSetup make_setup(const std::string& name) {
  ModelSetup s;
  s.config = model::LookaheadModelConfig::tiny();
  s.config.lambda_id = 1.0;  // both branches' gradients of comparable size (as in the engine test)
  if (name == "tiny") {
    s.description = "LookaheadModelConfig::tiny(): UNet 16/32/32, 1 resnet per down block, 8x8 latents";
    return s;
  }
  // mid: SDXL's block structure (2 resnets per down block, 3 per up block, no attention in the
  // outer stage, encoder truncated after up_blocks[1]) at 64/128/128 channels, 2 transformer layers
  // in the inner stages, 32x32 latents (256x256 previews). Same conditioning sizes as tiny.
  s.config.unet = model::unet::UNetConfig::from_json(R"({"block_out_channels": [64, 128, 128],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2, "transformer_layers_per_block": [1, 2, 2], "attention_head_dim": [2, 4, 4],
    "cross_attention_dim": 24, "norm_num_groups": 32, "use_linear_projection": true,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 4, "projection_class_embeddings_input_dim": 40})",
                                                     "bench_step mid");
  s.config.taesd = model::vae::TinyConfig{.encoder_block_out_channels = {16, 16, 16, 16},
                                          .decoder_block_out_channels = {16, 16, 16, 16}};
  s.latent = 32;
  s.description =
      "mid: UNet 64/128/128 (SDXL block structure: 2 resnets per down block, transformer depth 1/2/2), "
      "TAESD 16 channels, iresnet {1,1,1,1}, 32x32 latents";
  return s;
}

/// Samples [first, first + count) of step `step`'s global batch, each from its own generator (the
/// same data on any rank count).
model::Batch make_batch(const ModelSetup& s, int step, int64_t first, int64_t count) {
  const int64_t h = s.latent, cross = s.config.unet.cross_attention_dim.at(0);
  const int64_t clip_dim = s.config.resampler.embedding_dim();
  const int64_t pooled = s.config.unet.projection_class_embeddings_input_dim - 6 * s.config.unet.addition_time_embed_dim;
  const double preview = 8.0 * static_cast<double>(h);  // TAESD upsamples 8x
  std::vector<at::Tensor> cols[10];
  for (int64_t i = first; i < first + count; ++i) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(7919 * step + i);
    cols[0].push_back(at::randn({1, 4, h, h}, g));
    cols[1].push_back(at::randn({1, 4, h, h}, g));
    cols[2].push_back(at::randn({1, s.clip_tokens, clip_dim}, g));
    cols[3].push_back(at::randn({1, s.prompt_tokens, cross}, g));
    cols[4].push_back(at::randn({1, pooled}, g));
    cols[5].push_back(at::randn({1, s.prompt_tokens, cross}, g));
    cols[6].push_back(at::randn({1, pooled}, g));
    cols[7].push_back(at::randn({1, 6}, g));
    cols[8].push_back(model::face::arcface_template(preview).unsqueeze(0) +
                      at::randn({1, 5, 2}, g).to(at::kDouble));
    at::Tensor r = at::randn({1, 512}, g);
    cols[9].push_back(r / r.norm(2, {1}, true));
  }
  auto cat = [&](int c) { return at::cat(cols[c], 0); };
  model::Batch b;
  b.z_tgt = cat(0);
  b.z_ref = cat(1);
  b.clip_ref = cat(2);
  b.clip_uncond = at::randn({1, s.clip_tokens, clip_dim}, at::make_generator<at::CPUGeneratorImpl>(5));
  b.tgt_prompt = cat(3);
  b.tgt_pooled = cat(4);
  b.ref_prompt = cat(5);
  b.ref_pooled = cat(6);
  b.time_ids = cat(7);
  b.ref_landmarks = cat(8);
  b.ref_id = cat(9);
  return b;
}

/// One benchmark configuration.
struct RunConfig {
  std::string name;  // "overlap on", "overlap off", "keep_gathered"
  dist::EngineOptions engine;
};

/// One measured step; every value is the maximum over ranks.
struct StepSample {
  double step_s = 0, compute_s = 0, gather_wait_s = 0, reduce_wait_s = 0, optimizer_s = 0, other_s = 0;
  double gathers = 0, reduce_scatters = 0, gathered_bytes = 0;
  double frozen_shard = 0, trainable_shard = 0, grad_shard = 0, optimizer_state = 0, peak_gathered = 0;
};

#define LA_STEP_FIELDS(X)                                                                                        \
  X(step_s) X(compute_s) X(gather_wait_s) X(reduce_wait_s) X(optimizer_s) X(other_s) X(gathers) X(reduce_scatters)          \
      X(gathered_bytes) X(frozen_shard) X(trainable_shard) X(grad_shard) X(optimizer_state) X(peak_gathered)

StepSample max_over_ranks(const StepSample& local, MPI_Comm ctl) {
  StepSample out;
#define LA_MAX(f) out.f = bench::max_over_ranks(local.f, ctl);
  LA_STEP_FIELDS(LA_MAX)
#undef LA_MAX
  return out;
}

StepSample median_of(const std::vector<StepSample>& samples) {
  StepSample out;
#define LA_MED(f)                                        \
  {                                                      \
    std::vector<double> v;                               \
    for (const auto& s : samples) v.push_back(s.f);      \
    out.f = median(v);                                   \
  }
  LA_STEP_FIELDS(LA_MED)
#undef LA_MED
  return out;
}

nlohmann::json to_json(const StepSample& s) {
  nlohmann::json j;
#define LA_JSON(f) j[#f] = s.f;
  LA_STEP_FIELDS(LA_JSON)
#undef LA_JSON
  return j;
}

struct Result {
  RunConfig config;
  std::string placement;
  double build_s = 0;
  std::vector<StepSample> steps;
  StepSample median;
};

constexpr uint64_t kSeed = 2024;

/// One configuration's model, engine and optimizer, stepped in turn with the others.
class Trainer {
 public:
  Trainer(const ModelSetup& setup, const RunConfig& rc, dist::World& world, MPI_Comm ctl, int64_t global)
      : setup_(setup), world_(world), ctl_(ctl), global_(global), alpha_(kSeed) {
    per_rank_ = global / world.size();
    first_ = world.rank() * per_rank_;
    result.config = rc;
    result.placement = dist::to_string(rc.engine.placement);
    const double t_build = now_s();
    at::manual_seed(31);  // the same model in every configuration
    model_ = std::make_unique<model::LookaheadModel>(setup.config);
    {
      at::NoGradGuard no_grad;
      for (auto& [k, t] : model_->lora_parameters()) t.normal_(0.0, 0.1);  // every LoRA passes gradients
    }
    std::vector<dist::EngineUnit> units;
    for (auto& u : model_->units()) units.push_back(dist::EngineUnit{u.name, u.frozen, u.lcm, u.adapter, u.lora});
    engine_ = std::make_unique<dist::ShardedEngine>(world, std::move(units), rc.engine);
    model_->set_unit_runner(engine_.get());
    adamw_ = std::make_unique<dist::ShardedAdamW>(
        std::vector<dist::AdamWGroupOptions>{{"adapter", 1e-5, 0.01}, {"lora", 5e-6, 0.01}});
    for (auto& [g, lr] : engine_->trainable_groups()) adamw_->add(g, lr);
    result.build_s = bench::max_over_ranks(now_s() - t_build, ctl);
  }
  ~Trainer() { model_->set_unit_runner(nullptr); }

  /// One training step; returns its sample (max over ranks). Collective.
  StepSample step(int step) {
    const std::vector<int64_t> latent_shape{4, setup_.latent, setup_.latent};
    auto batch = make_batch(setup_, step, first_, per_rank_);
    auto draw = model_->draw(kSeed, step, global_, first_, per_rank_, latent_shape);
    auto& engine = *engine_;
    auto& adamw = *adamw_;
    LA_MPI_CHECK(MPI_Barrier(ctl_));
    engine.reset_times();
    const double t0 = now_s();
    // Branch 1's backward first: its reduce-scatters run while branch 2 computes forward.
    at::Tensor l1 = model_->diffusion_loss(batch, draw);
    l1.backward();
    at::Tensor l2 = model_->lookahead_loss(batch, draw, alpha_.value(step)).loss;
    l2.backward();
    engine.finish_gradients();
    const dist::EngineMemory mem = engine.memory();  // grad shards exist until zero_grad
    const double t_opt = now_s();
    adamw.clip_grad_norm(1.0, world_.comm());
    adamw.step();
    engine.times().optimizer_s = now_s() - t_opt;
    const int64_t state_bytes = adamw.state_bytes();
    adamw.zero_grad();
    engine.end_step();
    const double t1 = now_s();
    if (!std::isfinite(l1.item<double>()) || !std::isfinite(l2.item<double>()))
      throw std::runtime_error("bench_step: non-finite loss in step " + std::to_string(step));

    const dist::PhaseTimes& pt = engine.times();
    StepSample local;
    local.step_s = t1 - t0;
    local.compute_s = pt.compute_s;
    local.gather_wait_s = pt.gather_wait_s;
    local.reduce_wait_s = pt.reduce_wait_s;
    local.optimizer_s = pt.optimizer_s;
    local.other_s = local.step_s - pt.compute_s - pt.gather_wait_s - pt.reduce_wait_s - pt.optimizer_s;
    local.gathers = static_cast<double>(pt.gathers);
    local.reduce_scatters = static_cast<double>(pt.reduce_scatters);
    local.gathered_bytes = static_cast<double>(pt.gathered_bytes);
    local.frozen_shard = static_cast<double>(mem.frozen_shard_bytes);
    local.trainable_shard = static_cast<double>(mem.trainable_shard_bytes);
    local.grad_shard = static_cast<double>(mem.grad_shard_bytes);
    local.optimizer_state = static_cast<double>(state_bytes);
    local.peak_gathered = static_cast<double>(mem.peak_gathered_bytes);
    return max_over_ranks(local, ctl_);
  }

  Result result;

 private:
  const ModelSetup& setup_;
  dist::World& world_;
  MPI_Comm ctl_;
  int64_t global_, per_rank_ = 0, first_ = 0;
  model::AlphaSchedule alpha_;
  std::unique_ptr<model::LookaheadModel> model_;
  std::unique_ptr<dist::ShardedEngine> engine_;
  std::unique_ptr<dist::ShardedAdamW> adamw_;
};

std::string mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", bytes / (1024.0 * 1024.0));
  return buf;
}

void print_results(const std::vector<Result>& results, double load_end) {
  std::printf("# load average at the end %.2f\n", load_end);
  std::printf("# times: ms per step, each the median over measured steps of its max over ranks (so columns need not "
              "add up);\n# other = step - compute - waits - optimizer on each rank (autograd outside units, losses, "
              "face alignment)\n");
  std::printf("# exposed = (gather wait + reduce-scatter wait) / step\n");
  std::printf("%-14s %-9s %9s %9s %9s %9s %9s %9s %8s %7s %6s %11s\n", "config", "placement", "step", "compute",
              "gath.wait", "rs.wait", "optim", "other", "exposed", "gathers", "RS", "gathered");
  for (const auto& r : results) {
    const auto& m = r.median;
    const double other = m.other_s;
    std::printf("%-14s %-9s %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %7.1f%% %7.0f %6.0f %7s MiB\n", r.config.name.c_str(),
                r.placement.c_str(), m.step_s * 1e3, m.compute_s * 1e3, m.gather_wait_s * 1e3, m.reduce_wait_s * 1e3,
                m.optimizer_s * 1e3, other * 1e3, 100.0 * (m.gather_wait_s + m.reduce_wait_s) / m.step_s, m.gathers,
                m.reduce_scatters, mib(m.gathered_bytes).c_str());
  }
  std::printf("#\n# memory per rank in MiB (max over ranks): shards after finish_gradients, optimizer state = "
              "ShardedAdamW::state_bytes\n");
  std::printf("%-14s %-9s %12s %12s %12s %12s %12s\n", "config", "placement", "frozen", "trainable", "grads",
              "optim.state", "peak.gather");
  for (const auto& r : results) {
    const auto& m = r.median;
    std::printf("%-14s %-9s %12s %12s %12s %12s %12s\n", r.config.name.c_str(), r.placement.c_str(),
                mib(m.frozen_shard).c_str(), mib(m.trainable_shard).c_str(), mib(m.grad_shard).c_str(),
                mib(m.optimizer_state).c_str(), mib(m.peak_gathered).c_str());
  }
  std::printf("#\n# overlap off / on, step time:");
  for (const auto& on : results) {
    if (on.config.name != "overlap on") continue;
    for (const auto& off : results)
      if (off.config.name == "overlap off" && off.placement == on.placement)
        std::printf("  %s %.3f", on.placement.c_str(), off.median.step_s / on.median.step_s);
  }
  std::printf("\n");
}

int run(const Options& opt, dist::World& world) {
  at::set_num_threads(1);  // 2 ranks on 2 cores: one intra-op thread each
  const nlohmann::json meta = run_metadata(world);
  dist::MpiCommHandle ctl_handle = duplicate_world();
  MPI_Comm ctl = ctl_handle.get();
  const int64_t global = opt.batch > 0 ? opt.batch : 2 * world.size();
  if (global % world.size() != 0)
    throw std::invalid_argument("bench_step: --batch must be a multiple of the rank count");
  const ModelSetup setup = make_setup(opt.config);

  std::vector<RunConfig> configs;
  for (const auto& p : opt.placements) {
    dist::EngineOptions on;
    on.placement = dist::placement_from_string(p);
    on.prefetch = true;
    on.max_gathered_units = 2;
    dist::EngineOptions off = on;
    off.prefetch = false;
    off.max_gathered_units = 1;
    configs.push_back({"overlap on", on});
    configs.push_back({"overlap off", off});
    if (opt.keep_gathered) {
      dist::EngineOptions keep = on;
      keep.keep_gathered = true;
      configs.push_back({"keep_gathered", keep});
    }
  }
  if (world.is_root()) {
    std::printf("# bench_step: %d ranks on %d node(s), MPI communicator, at::set_num_threads(1), fp32 on CPU\n",
                world.size(), world.num_nodes());
    std::printf("# model: %s\n", setup.description.c_str());
    std::printf("# global batch %lld (%lld per rank); %d warm-up + %d measured steps per configuration; "
                "load average at start %.2f\n",
                static_cast<long long>(global), static_cast<long long>(global / world.size()), opt.warmup, opt.steps,
                meta["loadavg_1m"].get<double>());
    std::printf("# overlap on: prefetch, max_gathered_units 2; overlap off: no prefetch, max_gathered_units 1\n");
    std::printf("# the configurations take turns step by step (interleaved), so outside load hits them alike\n#\n");
    std::fflush(stdout);
  }
  // Every configuration lives at once and they take turns step by step, so that load from
  // outside (other jobs on the same cores) drifts over all of them alike.
  std::vector<std::unique_ptr<Trainer>> trainers;
  for (const auto& rc : configs) trainers.push_back(std::make_unique<Trainer>(setup, rc, world, ctl, global));
  for (int step = 0; step < opt.warmup + opt.steps; ++step)
    for (auto& t : trainers) {
      StepSample s = t->step(step);
      if (step >= opt.warmup) t->result.steps.push_back(s);
    }
  const double load_end = load_average();
  std::vector<Result> results;
  for (auto& t : trainers) {
    t->result.median = median_of(t->result.steps);
    results.push_back(t->result);
  }
  trainers.clear();

  if (world.is_root()) {
    print_results(results, load_end);
    if (!opt.json_path.empty()) {
      nlohmann::json runs = nlohmann::json::array();
      for (const auto& r : results) {
        nlohmann::json steps = nlohmann::json::array();
        for (const auto& s : r.steps) steps.push_back(to_json(s));
        runs.push_back({{"config", r.config.name},
                        {"placement", r.placement},
                        {"prefetch", r.config.engine.prefetch},
                        {"max_gathered_units", r.config.engine.max_gathered_units},
                        {"keep_gathered", r.config.engine.keep_gathered},
                        {"build_s", r.build_s},
                        {"median", to_json(r.median)},
                        {"steps", steps}});
      }
      nlohmann::json doc = {{"benchmark", "bench_step"},
                            {"meta", meta},
                            {"model", opt.config},
                            {"model_description", setup.description},
                            {"global_batch", global},
                            {"warmup", opt.warmup},
                            {"measured_steps", opt.steps},
                            {"compute_threads", 1},
                            {"times", "per step: max over ranks; median over measured steps; seconds and bytes"},
                            {"interleaved", "configurations take turns step by step"},
                            {"loadavg_1m_end", load_end},
                            {"runs", runs}};
      write_json(opt.json_path, doc);
      std::printf("# wrote %s\n", opt.json_path.c_str());
    }
    std::fflush(stdout);
  }
  return kExitOk;
}

}  // namespace
}  // namespace lookahead::bench

int main(int argc, char** argv) {
  using namespace lookahead;
  bench::Options opt;
  return bench::bench_main(
      "bench_step", argc, argv, [&](int c, char** v) { return bench::parse_options(c, v, opt); },
      [](std::ostream& out) { out << bench::describe_options(); },
      [&] {
        dist::WorldConfig config;
        config.comm.timeout_s = opt.timeout_s;
        return config;
      },
      [&](dist::World& world) { return bench::run(opt, world); });
}
