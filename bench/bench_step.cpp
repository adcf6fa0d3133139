// bench_step: whole LCM-Lookahead training steps under mpirun, the step `lookahead train` runs:
// the reference identity (ArcFace of the aligned reference photo), then TrainState::step (branch 1
// forward + backward, branch 2 forward + backward while branch 1's reduce-scatters are in flight,
// the global-mean rescale, finish_gradients, clip, AdamW, end_step) with the default [loss] and
// [optim] settings. For each configuration (overlap on / off, optionally keep_gathered, per
// placement) it runs warm-up and measured steps on synthetic batches and prints the step time split
// into phases and the bytes each rank holds. Rank 0 prints.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <mpi.h>
#include <boost/program_options/options_description.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "dist/world.h"
#include "model/lookahead/synthetic_batch.h"
#include "trainer/run_variant.h"
#include "trainer/train_state.h"

namespace lookahead::bench {
namespace {

namespace po = boost::program_options;

struct Options : CommonOptions {
  std::string config = "tiny";
  int steps = 5;
  int warmup = 2;
  int64_t batch = 0;  // global batch; 0: 2 samples per rank
  int threads = 1;    // train.threads: intra-op threads per rank
  std::vector<std::string> placements{"full", "replicate"};
  bool keep_gathered = false;
  bool overlap_off = true;
  int64_t ring = trainer::DistConfig().max_gathered_units;  // overlap on: prefetch ring - 1 calls ahead
  std::string replicate_units;                              // dist.replicate_units of every configuration
  bool verify = true;                                       // comm.verify_signatures (lookahead's default)
  // dist.recompute of the overlap on / off configurations; each further policy adds a
  // configuration "recompute <policy>" (overlap on).
  std::vector<trainer::Recompute> recompute{trainer::DistConfig().recompute};
  trainer::LossMode loss_mode = trainer::LossMode::kSum;
  trainer::ModelDtype dtype = trainer::ModelDtype::kFp32;
  /// Ablation presets (INI files) measured side by side (overlap on, the first placement).
  std::vector<std::string> variants;
};

void describe_options(po::options_description& desc) {
  // One option per line reads as a table.
  // clang-format off
  desc.add_options()
      ("config", po::value<std::string>()->default_value("tiny"),
       "model: tiny (LookaheadModelConfig::tiny(), 8x8 latents) or mid (UNet 64/128/128, 2 transformer layers, "
       "32x32 latents)")
      ("steps", po::value<int>()->default_value(5), "measured steps per configuration (medians are reported)")
      ("warmup", po::value<int>()->default_value(2), "untimed steps first (>= 1: the first step records the unit order)")
      ("batch", po::value<int64_t>()->default_value(0), "global batch (a multiple of the rank count); 0: 2 per rank")
      ("placements", po::value<std::string>()->default_value("full,replicate"),
       "comma-separated frozen-weight placements: full, node, replicate")
      ("keep-gathered", po::bool_switch(), "also run overlap on with keep_gathered (no second gather in backward)")
      ("ring", po::value<int64_t>()->default_value(trainer::DistConfig().max_gathered_units),
       "dist.max_gathered_units of overlap on: prefetch issues the gathers of the next ring - 1 unit calls")
      ("verify-collectives", po::value<bool>()->default_value(true),
       "comm.verify_signatures: a 96-byte all-reduce comparing every collective's signature before it runs "
       "(lookahead's default: on)")
      ("replicate-units", po::value<std::string>()->default_value(""),
       "dist.replicate_units: comma-separated units whose frozen weights stay whole on every rank")
      ("no-overlap-off", po::bool_switch(), "leave out the overlap off configuration (at 1 rank it is overlap on)")
      ("recompute", po::value<std::string>()->default_value(std::string(trainer::config_name(trainer::DistConfig().recompute))),
       "comma-separated dist.recompute policies (all, blocks, none): the first for overlap on / off, each further "
       "one adds a configuration 'recompute <policy>' (overlap on)")
      ("dtype", po::value<std::string>()->default_value("fp32"),
       "model.dtype: fp32, or bf16 (frozen weights in bf16, fp32 trainable masters computed in bf16)")
      ("loss-mode", po::value<std::string>()->default_value("sum"),
       "loss.mode of the step: sum (one optimizer step) or alternate (one after each branch)")
      ("variants", po::value<std::string>()->default_value(""),
       "comma-separated ablation presets (INI files, e.g. launch/configs/ablation/5-full.ini) measured side by "
       "side instead of the overlap configurations (overlap on, the first placement; docs/ablations.md)")
      ("threads", po::value<int>()->default_value(1),
       "intra-op threads per rank (train.threads; 1 leaves one core per rank for 2 ranks on 2 cores)");
  // clang-format on
}

void read_options(const po::variables_map& vm, Options& opt) {
  opt.config = vm["config"].as<std::string>();
  opt.steps = vm["steps"].as<int>();
  opt.warmup = vm["warmup"].as<int>();
  opt.batch = vm["batch"].as<int64_t>();
  opt.threads = vm["threads"].as<int>();
  opt.placements = split_commas(vm["placements"].as<std::string>());
  opt.keep_gathered = vm["keep-gathered"].as<bool>();
  opt.ring = vm["ring"].as<int64_t>();
  if (opt.ring < 1) throw std::invalid_argument("--ring must be >= 1");
  opt.replicate_units = vm["replicate-units"].as<std::string>();
  opt.verify = vm["verify-collectives"].as<bool>();
  opt.overlap_off = !vm["no-overlap-off"].as<bool>();
  opt.recompute.clear();
  for (const auto& r : split_commas(vm["recompute"].as<std::string>())) {
    const auto policy = trainer::parse_config_name<trainer::Recompute>(r);
    if (!policy)
      throw std::invalid_argument("--recompute: each policy must be " + trainer::config_choices<trainer::Recompute>() +
                                  ", got '" + r + "'");
    opt.recompute.push_back(*policy);
  }
  if (opt.recompute.empty()) throw std::invalid_argument("--recompute is empty");
  if (opt.config != "tiny" && opt.config != "mid") throw std::invalid_argument("--config must be tiny or mid");
  const auto mode = trainer::parse_config_name<trainer::LossMode>(vm["loss-mode"].as<std::string>());
  if (!mode)
    throw std::invalid_argument("--loss-mode must be " + trainer::config_choices<trainer::LossMode>() + ", got '" +
                                vm["loss-mode"].as<std::string>() + "'");
  opt.loss_mode = *mode;
  const auto dtype = trainer::parse_config_name<trainer::ModelDtype>(vm["dtype"].as<std::string>());
  if (!dtype || *dtype == trainer::ModelDtype::kAuto)
    throw std::invalid_argument("--dtype must be fp32 or bf16, got '" + vm["dtype"].as<std::string>() + "'");
  opt.dtype = *dtype;
  opt.variants = split_commas(vm["variants"].as<std::string>());
  if (opt.steps < 1) throw std::invalid_argument("--steps must be >= 1");
  if (opt.warmup < 1) throw std::invalid_argument("--warmup must be >= 1 (the first step records the unit order)");
  if (opt.threads < 1) throw std::invalid_argument("--threads must be >= 1");
  if (opt.batch < 0) throw std::invalid_argument("--batch must be >= 0");
  if (opt.placements.empty()) throw std::invalid_argument("--placements is empty");
  for (const auto& p : opt.placements) dist::placement_from_string(p);  // throws on an unknown name
}

/// The model and the shapes of its inputs.
struct ModelSetup {
  model::LookaheadModelConfig config;
  model::SyntheticShape shape;  // tiny: 8x8 latents, 5 CLIP tokens, 3 prompt tokens
  std::string description;
};

/// `base` is the tiny preset as `lookahead train` builds it (defaults of [model] and [loss]).
ModelSetup make_setup(const std::string& name, const model::LookaheadModelConfig& base) {
  ModelSetup s;
  s.config = base;
  if (name == "tiny") {
    s.description = "LookaheadModelConfig::tiny(): UNet 16/32/32, 1 resnet per down block, 8x8 latents";
    return s;
  }
  // mid: SDXL's block structure (2 resnets per down block, 3 per up block, no attention in the
  // outer stage, encoder truncated after up_blocks[1]) at 64/128/128 channels, 2 transformer layers
  // in the inner stages, 32x32 latents (256x256 previews). Same conditioning sizes as tiny.
  const model::LookaheadModelConfig mid = model::LookaheadModelConfig::mid();
  s.config.unet = mid.unet;
  s.config.taesd = mid.taesd;
  s.shape.latent = 32;
  s.shape.ref_pixels = 256;
  s.description =
      "mid: UNet 64/128/128 (SDXL block structure: 2 resnets per down block, transformer depth 1/2/2), "
      "TAESD 16 channels, iresnet {1,1,1,1}, 32x32 latents";
  return s;
}

/// One benchmark configuration.
struct BenchCase {
  std::string name;  // "overlap on", "overlap off", "keep_gathered", or an ablation variant
  trainer::DistConfig dist;
  std::optional<trainer::RunVariant> variant;  // the ablation keys of this case (none: the full model)
};

/// One measured step; every value is the maximum over ranks.
struct StepSample {
  double step_s = 0, cpu_s = 0, reference_s = 0, compute_s = 0, gather_wait_s = 0, reduce_wait_s = 0, optimizer_s = 0, other_s = 0;
  double gathers = 0, reduce_scatters = 0, gathered_bytes = 0;
  double frozen_shard = 0, trainable_shard = 0, grad_shard = 0, optimizer_state = 0, peak_gathered = 0;
};

#define LA_STEP_FIELDS(X)                                                                                        \
  X(step_s) X(cpu_s) X(reference_s) X(compute_s) X(gather_wait_s) X(reduce_wait_s) X(optimizer_s) X(other_s) X(gathers) X(reduce_scatters)          \
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
  BenchCase config;
  std::string placement;
  double build_s = 0;
  std::vector<StepSample> steps;
  StepSample median;
};

/// CPU time of this process (all its threads), seconds: with one intra-op thread, the step's work,
/// far less disturbed by outside load than wall time.
double process_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// One configuration's training state, stepped in turn with the others.
class CaseRunner {
 public:
  CaseRunner(const ModelSetup& setup, const trainer::TrainConfig& config, const BenchCase& bc, dist::World& world,
             MPI_Comm ctl, int64_t global)
      : setup_(setup), world_(world), ctl_(ctl), global_(global) {
    per_rank_ = global / world.size();
    first_ = world.rank() * per_rank_;
    result.config = bc;
    result.placement = dist::to_string(bc.dist.placement);
    const double t_build = now_s();
    trainer::TrainConfig c = config;
    c.dist = bc.dist;
    model_ = setup.config;
    if (bc.variant) {
      bc.variant->apply(c);
      model_.use_kv_encoder = bc.variant->kv_encoder == model::KvEncoderMode::kOn;
      model_.preview = bc.variant->preview;
      model_.lambda_id = bc.variant->lambda_id;
      model_.lambda_dreamsim = bc.variant->lambda_dreamsim;
    }
    // The same model (train.seed) in every configuration.
    state_ = std::make_unique<trainer::TrainState>(world, c, trainer::TrainStateOptions{model_, {}});
    result.build_s = bench::max_over_ranks(now_s() - t_build, ctl);
  }

  /// One training step; returns its sample (max over ranks). Collective.
  StepSample step(int step) {
    model::SyntheticBatch sb = model::synthetic_batch(model_, setup_.shape, step, first_, per_rank_);
    const std::vector<int64_t> latent_shape{4, setup_.shape.latent, setup_.shape.latent};
    LA_MPI_CHECK(MPI_Barrier(ctl_));
    const double c0 = process_cpu_s();
    const double t0 = now_s();
    state_->model().set_reference(sb.batch, sb.ref_pixels, sb.ref_pixel_landmarks);
    const double t_ref = now_s();
    const trainer::StepStats st = state_->step(sb.batch, state_->draw(per_rank_, latent_shape), state_->alpha());
    const double t1 = now_s();
    const double c1 = process_cpu_s();
    if (!std::isfinite(st.loss_diffusion) || !std::isfinite(st.loss_lookahead))
      throw std::runtime_error("bench_step: non-finite loss in step " + std::to_string(step));

    const dist::PhaseTimes& pt = st.times;
    StepSample local;
    local.step_s = t1 - t0;
    local.cpu_s = c1 - c0;
    local.reference_s = t_ref - t0;
    local.compute_s = pt.compute_s;
    local.gather_wait_s = pt.gather_wait_s;
    local.reduce_wait_s = pt.reduce_wait_s;
    local.optimizer_s = st.optimizer_s;
    local.other_s = local.step_s - local.reference_s - pt.compute_s - pt.gather_wait_s - pt.reduce_wait_s - st.optimizer_s;
    local.gathers = static_cast<double>(pt.gathers);
    local.reduce_scatters = static_cast<double>(pt.reduce_scatters);
    local.gathered_bytes = static_cast<double>(pt.gathered_bytes);
    local.frozen_shard = static_cast<double>(st.memory.frozen_shard_bytes);
    local.trainable_shard = static_cast<double>(st.memory.trainable_shard_bytes);
    local.grad_shard = static_cast<double>(st.memory.grad_shard_bytes);
    local.optimizer_state = static_cast<double>(st.optimizer_state_bytes);
    local.peak_gathered = static_cast<double>(st.memory.peak_gathered_bytes);
    return max_over_ranks(local, ctl_);
  }

  Result result;

 private:
  const ModelSetup& setup_;
  model::LookaheadModelConfig model_;  // setup_.config with this case's ablation keys
  dist::World& world_;
  MPI_Comm ctl_;
  int64_t global_, per_rank_ = 0, first_ = 0;
  std::unique_ptr<trainer::TrainState> state_;
};

std::string mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", bytes / (1024.0 * 1024.0));
  return buf;
}

void print_results(const std::vector<Result>& results, double load_end) {
  std::printf("# load average at the end %.2f\n", load_end);
  std::printf("# times: ms per step, each the median over measured steps of its max over ranks (so columns need not "
              "add up);\n# reference = the reference photo's ArcFace embedding; other = step - reference - compute - waits - "
              "optimizer on each rank (autograd outside units, losses, face alignment, host all-reduces)\n");
  std::printf("# exposed = (gather wait + reduce-scatter wait) / step\n");
  std::printf("%-16s %-9s %9s %9s %9s %9s %9s %9s %9s %8s %7s %6s %11s\n", "config", "placement", "step", "reference",
              "compute", "gath.wait", "rs.wait", "optim", "other", "exposed", "gathers", "RS", "gathered");
  for (const auto& r : results) {
    const auto& m = r.median;
    const double other = m.other_s;
    std::printf("%-16s %-9s %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %7.1f%% %7.0f %6.0f %7s MiB\n",
                r.config.name.c_str(), r.placement.c_str(), m.step_s * 1e3, m.reference_s * 1e3, m.compute_s * 1e3,
                m.gather_wait_s * 1e3, m.reduce_wait_s * 1e3, m.optimizer_s * 1e3, other * 1e3, 100.0 * (m.gather_wait_s + m.reduce_wait_s) / m.step_s, m.gathers,
                m.reduce_scatters, mib(m.gathered_bytes).c_str());
  }
  std::printf("#\n# memory per rank in MiB (max over ranks): shards after finish_gradients, optimizer state = "
              "ShardedAdamW::state_bytes\n");
  std::printf("%-16s %-9s %12s %12s %12s %12s %12s\n", "config", "placement", "frozen", "trainable", "grads",
              "optim.state", "peak.gather");
  for (const auto& r : results) {
    const auto& m = r.median;
    std::printf("%-16s %-9s %12s %12s %12s %12s %12s\n", r.config.name.c_str(), r.placement.c_str(),
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
  const nlohmann::json meta = run_metadata(world);
  dist::MpiCommHandle ctl_handle = duplicate_world();
  MPI_Comm ctl = ctl_handle.get();
  const int64_t global = opt.batch > 0 ? opt.batch : 2 * world.size();
  if (global % world.size() != 0)
    throw std::invalid_argument("bench_step: --batch must be a multiple of the rank count");
  // The configuration `lookahead train` would run: the tiny preset, defaults of every section.
  trainer::TrainConfig config;
  config.model.preset = trainer::Preset::kTiny;
  config.model.dtype = opt.dtype;
  config.loss.mode = opt.loss_mode;
  config.train.seed = 2024;
  config.train.threads = opt.threads;  // default 1: 2 ranks on 2 cores, one intra-op thread each
  const ModelSetup setup = make_setup(opt.config, trainer::model_config(config, world.device()));

  std::vector<BenchCase> configs;
  for (const auto& path : opt.variants) {
    trainer::DistConfig on;
    on.placement = dist::placement_from_string(opt.placements.front());
    on.max_gathered_units = opt.ring;
    on.replicate_units = opt.replicate_units;
    on.recompute = opt.recompute.front();
    const std::string name = std::filesystem::path(path).stem().string();  // "5-full"
    configs.push_back({name, on, trainer::RunVariant::from_file(path)});
  }
  for (const auto& p : opt.variants.empty() ? opt.placements : std::vector<std::string>{}) {
    trainer::DistConfig on;
    on.placement = dist::placement_from_string(p);
    on.prefetch = true;
    on.max_gathered_units = opt.ring;
    on.replicate_units = opt.replicate_units;
    on.recompute = opt.recompute.front();
    trainer::DistConfig off = on;
    off.prefetch = false;
    off.max_gathered_units = 1;
    configs.push_back({"overlap on", on, std::nullopt});
    if (opt.overlap_off) configs.push_back({"overlap off", off, std::nullopt});
    if (opt.keep_gathered) {
      trainer::DistConfig keep = on;
      keep.keep_gathered = true;
      configs.push_back({"keep_gathered", keep, std::nullopt});
    }
    for (size_t i = 1; i < opt.recompute.size(); ++i) {
      trainer::DistConfig r = on;
      r.recompute = opt.recompute[i];
      configs.push_back({"recompute " + std::string(trainer::config_name(r.recompute)), r, std::nullopt});
    }
  }
  if (world.is_root()) {
    std::printf("# bench_step: %d ranks on %d node(s), MPI communicator, at::set_num_threads(%d), %s on CPU\n",
                world.size(), world.num_nodes(), opt.threads, std::string(trainer::config_name(opt.dtype)).c_str());
    std::printf("# model: %s\n", setup.description.c_str());
    std::printf("# step: reference identity + TrainState::step, loss.mode %s, [loss] and [optim] defaults\n",
                std::string(trainer::config_name(opt.loss_mode)).c_str());
    std::printf("# global batch %lld (%lld per rank); %d warm-up + %d measured steps per configuration; "
                "load average at start %.2f\n",
                static_cast<long long>(global), static_cast<long long>(global / world.size()), opt.warmup, opt.steps,
                meta["loadavg_1m"].get<double>());
    std::printf(
        "# overlap on: prefetch, max_gathered_units %lld; overlap off: no prefetch, max_gathered_units 1; "
        "both dist.recompute %s%s%s\n",
        static_cast<long long>(opt.ring), std::string(trainer::config_name(opt.recompute.front())).c_str(),
        opt.replicate_units.empty() ? "" : ", dist.replicate_units ", opt.replicate_units.c_str());
    std::printf("# the configurations take turns step by step (interleaved), so outside load hits them alike\n#\n");
    std::fflush(stdout);
  }
  // Every configuration lives at once and they take turns step by step, so that load from
  // outside (other jobs on the same cores) drifts over all of them alike.
  std::vector<std::unique_ptr<CaseRunner>> trainers;
  for (const auto& bc : configs)
    trainers.push_back(std::make_unique<CaseRunner>(setup, config, bc, world, ctl, global));
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
                        {"prefetch", r.config.dist.prefetch},
                        {"max_gathered_units", r.config.dist.max_gathered_units},
                        {"keep_gathered", r.config.dist.keep_gathered},
                        {"replicate_units", r.config.dist.replicate_units},
                        {"recompute", std::string(trainer::config_name(r.config.dist.recompute))},
                        {"build_s", r.build_s},
                        {"median", to_json(r.median)},
                        {"steps", steps}});
      }
      nlohmann::json doc = {{"benchmark", "bench_step"},
                            {"meta", meta},
                            {"model", opt.config},
                            {"loss_mode", std::string(trainer::config_name(opt.loss_mode))},
                            {"dtype", std::string(trainer::config_name(opt.dtype))},
                            {"model_description", setup.description},
                            {"global_batch", global},
                            {"warmup", opt.warmup},
                            {"measured_steps", opt.steps},
                            {"compute_threads", opt.threads},
                            {"verify_signatures", opt.verify},
                            {"times", "per step: max over ranks; median over measured steps; seconds and bytes"},
                            {"interleaved", "configurations take turns step by step"},
                            {"loadavg_1m_end", load_end},
                            {"runs", runs}};
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
      "bench_step", argc, argv, lookahead::bench::describe_options, lookahead::bench::read_options,
      lookahead::bench::run, lookahead::bench::configure_world);
}
