// `lookahead data encode`: precomputes the tensors the trainer reads (latents, prompt embeddings,
// CLIP features, clip_uncond) with the encoders the training configuration names, distributed
// over the ranks; rank 0 writes the new set.
#include <boost/program_options/options_description.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <ATen/Parallel.h>

#include <algorithm>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/train_options.h"
#include "trainer/conditioning.h"
#include "trainer/encode_set.h"

namespace po = boost::program_options;

namespace lookahead::launch {

int run_data_encode(dist::World& world, const std::vector<std::string>& args) {
  trainer::EncodeOptions o;
  bool help = false;
  po::options_description desc("encode options");
  desc.add_options()("in", po::value<std::string>(&o.in), "training set to encode")(
      "out", po::value<std::string>(&o.out), "training set to write (may be --in: replaced at the end)")(
      "batch", po::value<int64_t>(&o.batch)->default_value(4), "records per encoder call on each rank")(
      "half-latents", po::bool_switch(&o.half_latents), "store latents as float16")(
      "help", po::bool_switch(&help), "this text");
  // Everything else (--config, --section.key=value) is the training configuration's.
  const po::parsed_options parsed = po::command_line_parser(args).options(desc).allow_unregistered().run();
  po::variables_map vm;
  po::store(parsed, vm);
  po::notify(vm);
  const std::vector<std::string> rest = po::collect_unrecognized(parsed.options, po::include_positional);
  if (help) {
    if (world.is_root())
      std::cout << "Usage: lookahead data encode --config FILE.ini --in SET.h5 --out SET.h5 [--batch N] "
                   "[--half-latents] [--section.key=value ...]\n\n"
                   "Encodes each record with the [model] encoders (preset tiny: fixed random ones; sdxl:\n"
                   "model.sdxl_folder, model.vae, model.image_encoder) at data.resolution.\n\n"
                << desc;
    return kExitOk;
  }
  if (o.in.empty() || o.out.empty()) throw std::invalid_argument("data encode: --in and --out are required");
  if (o.batch < 1) throw std::invalid_argument("data encode: --batch must be >= 1");
  bool dry_run = false, config_help = false;
  const trainer::TrainConfig config = parse_train_config(rest, dry_run, config_help, ConfigUse::kEncode);
  if (dry_run || config_help)
    throw std::invalid_argument("data encode: --dry-run and the configuration's --help are not supported here");
  o.resolution = config.data.resolution;
  world.check_consistent("the encoding configuration",
                         dist::hash_string(config.resolved_ini + "\n" + o.in + "\n" + o.out + "\n" +
                                           std::to_string(o.batch) + (o.half_latents ? " half" : "")));
  // Ranks of a node share its cores (as in training).
  const int64_t cores = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  at::set_num_threads(static_cast<int>(config.train.threads > 0 ? config.train.threads
                                                                 : std::max<int64_t>(1, cores / world.local_size())));

  auto cond = trainer::build_conditioner(config, world.device());
  const trainer::EncodeReport r = trainer::encode_training_set(world, *cond, o);
  if (world.is_root())
    std::cout << "encoded " << r.records << " records of " << o.in << " -> " << o.out << " in " << r.seconds
              << " s on " << world.size() << " rank(s)\n"
              << "  latents:              " << shape_str(r.latent_shape) << (o.half_latents ? " float16" : " float32")
              << " (resolution " << o.resolution << ")\n"
              << "  prompt_embeds:        " << shape_str(r.prompt_shape) << "\n"
              << "  pooled_prompt_embeds: [" << r.pooled_dim << "]\n"
              << "  clip_features:        " << shape_str(r.clip_shape) << "\n"
              << "  globals/clip_uncond:  [1, " << r.clip_shape.at(0) << ", " << r.clip_shape.at(1) << "]\n";
  return kExitOk;
}

}  // namespace lookahead::launch
