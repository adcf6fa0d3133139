// `lookahead eval`: evaluates one or several checkpoints (and guidance settings) and writes
// metrics.json, the images and an HTML report per run, plus a comparison report; `lookahead eval
// report` combines existing runs.
#include <boost/program_options/errors.hpp>

#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/train_options.h"
#include "trainer/eval/eval_report.h"
#include "trainer/eval/evaluator.h"
#include "trainer/train_state.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace lookahead::launch {

namespace {

const char* kUsage =
    "usage: lookahead eval --config FILE.ini [--checkpoint PATH|latest ...] [--label NAME ...]\n"
    "                      [--guidance-scales NOKV,FULL,KV | cfg=S ...] [--eval-set FILE.h5] [--prompts FILE.txt]\n"
    "                      [--out DIR] [--section.key=value ...]\n"
    "       lookahead eval report --runs DIR|metrics.json ... --out DIR [--title TEXT]\n\n"
    "  For every evaluation identity and prompt, generates eval.samples images with the base UNet and the\n"
    "  trained encoder, measures ID similarity (MTCNN + ArcFace) and CLIP score, and writes DIR/metrics.json,\n"
    "  DIR/images/ and DIR/report.html. Several --checkpoint and/or --guidance-scales values evaluate every\n"
    "  combination into DIR/<label>/ and write a comparison report DIR/report.html. The [eval] keys of\n"
    "  `lookahead train --help` set the rest (sampler, steps, guidance, seeds, CLIP model).\n"
    "  --checkpoint   a checkpoint file, `latest` (<train.out>/checkpoints; the default) or `initial` (no\n"
    "                 checkpoint: the weight files as loaded, e.g. the public IP-Adapter with model.kv_encoder\n"
    "                 = off, the ablations' untrained baseline)\n"
    "  --label        names of the checkpoints in tables and plots (default step-N)\n"
    "  --eval-set, --prompts, --out   shortcuts for eval.eval_set, eval.prompts, eval.out\n";

/// "--flag value" or "--flag=value" at args[i].
std::optional<std::string> take(const std::vector<std::string>& args, size_t& i, const std::string& flag) {
  const std::string& a = args[i];
  if (a.rfind(flag + "=", 0) == 0) return a.substr(flag.size() + 1);
  if (a == flag) {
    if (i + 1 >= args.size()) throw po::error(flag + " needs a value");
    return args[++i];
  }
  return std::nullopt;
}

trainer::EvalGuidance parse_scales(const std::string& text, const trainer::EvalConfig& base) {
  trainer::EvalGuidance g = trainer::EvalGuidance::from_config(base);
  try {
    if (text.rfind("cfg=", 0) == 0) {
      g.mode = model::GuidanceMode::kCfg;
      g.cfg_scale = std::stod(text.substr(4));
      return g;
    }
    std::vector<double> v;
    std::stringstream s(text);
    for (std::string part; std::getline(s, part, ',');) v.push_back(std::stod(part));
    if (v.size() != 3) throw std::invalid_argument("three values");
    g.mode = model::GuidanceMode::kLookahead;
    g.scale_nokv = v[0];
    g.scale_full = v[1];
    g.scale_kv = v[2];
  } catch (const std::exception&) {
    throw po::error("--guidance-scales: expected NOKV,FULL,KV (e.g. 3,2,2) or cfg=S, got '" + text + "'");
  }
  return g;
}

std::string folder_name(const std::string& label) {
  std::string out;
  for (char c : label) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') ? c : '_';
  return out;
}

int run_eval_report(const std::vector<std::string>& args) {
  std::vector<std::string> runs;
  std::string out, title = "Lookahead evaluation: comparison";
  for (size_t i = 0; i < args.size(); ++i) {
    if (auto v = take(args, i, "--runs")) {
      runs.push_back(*v);
      // --runs A B C: the values up to the next flag.
      while (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) runs.push_back(args[++i]);
    } else if (auto o = take(args, i, "--out")) {
      out = *o;
    } else if (auto t = take(args, i, "--title")) {
      title = *t;
    } else if (args[i] == "--help") {
      std::cout << kUsage;
      return kExitOk;
    } else {
      throw po::error("eval report: unknown argument '" + args[i] + "'");
    }
  }
  if (runs.empty() || out.empty()) throw po::error("eval report needs --runs ... and --out DIR");
  std::vector<trainer::ReportEntry> entries;
  for (const auto& r : runs) entries.push_back(trainer::load_report_entry(fs::is_directory(r) ? r + "/metrics.json" : r));
  trainer::write_report(entries, out, title);
  std::cout << "report: " << out << "/report.html (" << entries.size() << " runs)\n";
  return kExitOk;
}

}  // namespace

int run_eval(dist::World& world, const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "report") {
    if (!world.is_root()) return kExitOk;
    return run_eval_report(std::vector<std::string>(args.begin() + 1, args.end()));
  }
  std::vector<std::string> rest, checkpoints, labels, scales;
  std::string eval_set, prompts, out;
  for (size_t i = 0; i < args.size(); ++i) {
    if (auto v = take(args, i, "--checkpoint")) checkpoints.push_back(*v);
    else if (auto l = take(args, i, "--label")) labels.push_back(*l);
    else if (auto g = take(args, i, "--guidance-scales")) scales.push_back(*g);
    else if (auto e = take(args, i, "--eval-set")) eval_set = *e;
    else if (auto p = take(args, i, "--prompts")) prompts = *p;
    else if (auto o = take(args, i, "--out")) out = *o;
    else rest.push_back(args[i]);
  }
  // A shortcut replaces the same key given as --eval.key (Boost refuses a key given twice).
  auto shortcut = [&](const std::string& key, const std::string& value) {
    if (value.empty()) return;
    std::vector<std::string> kept;
    for (size_t i = 0; i < rest.size(); ++i) {
      if (rest[i].rfind(key + "=", 0) == 0) continue;
      if (rest[i] == key) {
        ++i;
        continue;
      }
      kept.push_back(rest[i]);
    }
    kept.push_back(key + "=" + value);
    rest = std::move(kept);
  };
  shortcut("--eval.eval_set", eval_set);
  shortcut("--eval.prompts", prompts);
  shortcut("--eval.out", out);
  bool dry_run = false, help = false;
  trainer::TrainConfig config = parse_train_config(rest, dry_run, help, ConfigUse::kEvaluate);
  if (help) {
    if (world.is_root()) std::cout << kUsage;
    return kExitOk;
  }
  if (checkpoints.empty()) checkpoints.push_back("latest");
  for (size_t c = 1; c < checkpoints.size(); ++c)
    if (checkpoints[c] == "initial")
      throw po::error("--checkpoint initial must come first (a loaded checkpoint cannot be unloaded)");
  if (!labels.empty() && labels.size() != checkpoints.size())
    throw po::error("--label: give one per --checkpoint (" + std::to_string(checkpoints.size()) + ")");
  if (config.eval.eval_set.empty()) throw po::error("eval.eval_set (--eval-set) is required");
  if (config.eval.prompts.empty()) throw po::error("eval.prompts (--prompts) is required");
  const std::string out_dir = config.eval.out.empty() ? config.train.out + "/eval" : config.eval.out;
  world.check_consistent("the resolved evaluation configuration", dist::hash_string(config.resolved_ini));
  require_inputs(config, ConfigUse::kEvaluate, world.device());

  std::vector<trainer::EvalGuidance> guidances;
  for (const auto& s : scales) guidances.push_back(parse_scales(s, config.eval));
  if (guidances.empty()) guidances.push_back(trainer::EvalGuidance::from_config(config.eval));

  config.train.resume.clear();  // checkpoints are loaded one by one below
  config.train.progress = false;
  // Sampling needs no optimizer: its moments (twice the trainables in fp32) are never allocated.
  trainer::TrainStateOptions inference;
  inference.with_optimizer = false;
  trainer::TrainState state(world, config, inference);
  std::unique_ptr<trainer::Evaluator> evaluator;  // built after the first checkpoint loaded
  const bool several = checkpoints.size() * guidances.size() > 1;
  std::vector<trainer::ReportEntry> entries;
  for (size_t c = 0; c < checkpoints.size(); ++c) {
    const std::string& what = checkpoints[c];
    const trainer::LoadedState loaded = what == "initial" ? trainer::LoadedState{} : state.load(what);
    if (loaded.path.empty() && what != "initial")
      throw std::runtime_error("eval: no checkpoint in " + state.checkpoint_dir().string() +
                               " (train first, or pass --checkpoint)");
    if (what == "initial") {
      if (world.is_root()) std::cerr << "evaluating the initial weights (no checkpoint)\n";
    } else if (world.is_root()) {
      for (const auto& s : loaded.skipped) std::cerr << "skipped damaged checkpoint " << s << "\n";
      std::cerr << trainer::describe_load("loaded checkpoint", loaded, state.completed_steps(), world.size()) << "\n";
    }
    if (!evaluator) evaluator = std::make_unique<trainer::Evaluator>(world, config, state.model(), &state.engine());
    const std::string& path = loaded.path;
    const int64_t step = state.completed_steps();
    const std::string base = !labels.empty()     ? labels[c]
                             : what == "initial" ? "initial"
                                                 : "step-" + std::to_string(step);
    for (const auto& g : guidances) {
      const std::string label = guidances.size() > 1 ? base + " " + g.describe() : base;
      const std::string dir = several ? out_dir + "/" + folder_name(label) : out_dir;
      nlohmann::json metrics = evaluator->run(dir, trainer::EvalRunInfo{label, path, step}, g);
      if (world.is_root()) {
        const auto& o = metrics["overall"];
        auto num = [](const nlohmann::json& v, double scale = 1.0) {
          if (v.is_null()) return std::string("n/a");
          std::ostringstream s;
          s << std::fixed << std::setprecision(scale == 1.0 ? 3 : 1) << v.get<double>() * scale;
          return s.str();
        };
        std::cout << label << ": ID " << num(o["id_similarity"]["mean"]) << " (strict "
                  << num(o["id_similarity_strict"]["mean"]) << ", no face " << num(o["face_failure_rate"], 100.0)
                  << " %), CLIP score " << num(o["clip_score"]["mean"]) << " -> " << dir << "/report.html\n";
        entries.push_back(trainer::ReportEntry{label, metrics, dir});
      }
    }
  }
  if (world.is_root() && several) {
    trainer::write_report(entries, out_dir, "Lookahead evaluation: comparison");
    std::cout << "comparison: " << out_dir << "/report.html\n";
  }
  return kExitOk;
}

}  // namespace lookahead::launch
