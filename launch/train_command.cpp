// `lookahead train` and `lookahead export`.
#include <boost/program_options/errors.hpp>
#include <boost/program_options/options_description.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <atomic>
#include <iostream>

#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/stop_signals.h"
#include "launch/train_options.h"
#include "trainer/export.h"
#include "trainer/hdf5_batch_source.h"
#include "trainer/tensor_memory.h"
#include "trainer/trainer.h"
#include "trainer/weight_check.h"

namespace po = boost::program_options;

namespace lookahead::launch {

namespace {

/// Raised by the stop signals (launch/stop_signals.h); the trainer checkpoints and exits 0.
std::atomic<bool> g_stop{false};

}  // namespace

int run_train(dist::World& world, const std::vector<std::string>& args) {
  if (args.size() == 1 && args[0] == "--help-markdown") {
    if (world.is_root()) std::cout << train_options_markdown();
    return kExitOk;
  }
  bool dry_run = false, help = false;
  trainer::TrainConfig config = parse_train_config(args, dry_run, help);
  if (help) {
    if (world.is_root()) std::cout << train_help();
    return kExitOk;
  }
  world.check_consistent("the resolved training configuration", dist::hash_string(config.resolved_ini));
  if (dry_run) {
    const std::vector<std::string> missing = missing_inputs(config);
    // Headers only, before the model is described: a wrong file is named, not built.
    const std::vector<std::string> wrong = trainer::check_weights(config, world.device());
    if (world.is_root()) {
      std::cout << "# resolved configuration\n"
                << config.resolved_ini << "\n# model\n"
                << trainer::describe_model(config, world.size(), world.local_size(), world.device());
      if (!missing.empty()) {
        std::cerr << "lookahead train: missing inputs:";
        for (const auto& m : missing) std::cerr << "\n  " << m;
        std::cerr << "\n";
      }
      for (const auto& w : wrong) std::cerr << "lookahead train: " << w << "\n";
    }
    return missing.empty() && wrong.empty() ? kExitOk : kExitUsage;
  }
  // All at once, before minutes of model building end at the first one.
  require_inputs(config, ConfigUse::kTrain, world.device());
  install_stop_signals(&g_stop, "rank " + std::to_string(world.rank()) + " of " + std::to_string(world.size()) +
                                    " on " + world.hostname());
  // If the stop comes because a rank died, the launcher kills this one moments later: say then
  // which collective it was waiting for. 1 s: a collective in flight for that long after a stop
  // request is stuck, not slow (a stop is also every preemption, which should stay quiet).
  world.services()->watchdog->report_on_stop(&g_stop, 1.0);
  // Per-step tensor peaks in metrics.jsonl (CPU runs: the GPU's allocator keeps its own).
  if (!world.device().is_cuda()) trainer::count_cpu_tensor_bytes();
  auto data = trainer::open_hdf5_batch_source(config, world.rank(), world.size(), world.device());
  trainer::Trainer trainer(world, config, std::move(data), &g_stop);
  const int64_t ran = trainer.run();
  auto exported = [&] {
    auto tensors = trainer.state().trainable_tensors();  // collective
    return world.is_root() ? trainer::export_encoder(tensors, config.train.out + "/export") : trainer::ExportedFiles{};
  }();
  if (world.is_root()) {
    std::cout << "\ntrained " << ran << " step(s), now at step " << trainer.step() << " of " << config.train.steps
              << "\n"
              << "  metrics:     " << config.train.out << "/metrics.jsonl\n"
              << "  checkpoints: " << trainer.state().checkpoint_dir().string() << "\n"
              << "  export:      " << exported.ip_adapter << " (" << exported.ip_adapter_tensors << " tensors), "
              << (exported.kv_encoder.empty() ? "no KV encoder (model.kv_encoder = off)" : exported.kv_encoder) << " ("
              << exported.kv_encoder_tensors << " tensors)\n";
  }
  return kExitOk;
}

int run_export(dist::World& world, const std::vector<std::string>& args) {
  std::string checkpoint = "latest", out;
  po::options_description own("export");
  own.add_options()("checkpoint", po::value<std::string>(&checkpoint), "checkpoint file or folder, or latest")(
      "out", po::value<std::string>(&out), "output folder");
  // Everything else is the training configuration (--config, --section.key=value, --help).
  const po::parsed_options parsed = po::command_line_parser(args).options(own).allow_unregistered().run();
  po::variables_map vm;
  po::store(parsed, vm);
  po::notify(vm);
  const std::vector<std::string> rest = po::collect_unrecognized(parsed.options, po::include_positional);
  bool dry_run = false, help = false;
  trainer::TrainConfig config = parse_train_config(rest, dry_run, help);
  if (help) {
    if (world.is_root())
      std::cout << "usage: lookahead export --config FILE.ini [--checkpoint PATH|latest] [--out DIR] "
                   "[--section.key=value ...]\n  writes DIR/ip_adapter.safetensors and DIR/kv_encoder.safetensors "
                   "from a checkpoint (default: the latest in <train.out>/checkpoints; DIR: <train.out>/export)\n";
    return kExitOk;
  }
  if (out.empty()) out = config.train.out + "/export";
  // The model is built with its weight files before the checkpoint is read: refuse wrong ones first.
  require_inputs(config, ConfigUse::kEvaluate, world.device());
  config.train.resume.clear();
  config.train.progress = false;
  trainer::TrainState state(world, config);
  const trainer::LoadedState loaded = state.load(checkpoint);
  if (loaded.path.empty())
    throw std::runtime_error("export: no checkpoint in " + state.checkpoint_dir().string() +
                             " (train first, or pass --checkpoint)");
  auto tensors = state.trainable_tensors();  // collective
  if (world.is_root()) {
    for (const auto& s : loaded.skipped) std::cerr << "skipped damaged checkpoint " << s << "\n";
    std::cerr << trainer::describe_load("loaded checkpoint", loaded, state.completed_steps(), world.size()) << "\n";
    auto files = trainer::export_encoder(tensors, out);
    std::cout << "exported step " << state.completed_steps() << ": " << files.ip_adapter << " ("
              << files.ip_adapter_tensors << " tensors), "
              << (files.kv_encoder.empty() ? "no KV encoder (model.kv_encoder = off)" : files.kv_encoder) << " ("
              << files.kv_encoder_tensors << " tensors)\n";
  }
  return kExitOk;
}

}  // namespace lookahead::launch
