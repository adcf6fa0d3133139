// `lookahead data pack|synth|info|ffhq|encode`: build a training-set file from a folder of images +
// JSONL metadata, write a synthetic one (tests, tiny demo), describe/verify one, convert FFHQ
// (images + ffhq-dataset-v2.json, docs/ffhq.md), or add precomputed encoder outputs (`encode`, its
// own command: launch/data_encode_command.cpp). Only rank 0 writes; the other ranks wait, so the
// command is safe under mpirun.
#include <boost/program_options/options_description.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/positional_options.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <iostream>
#include <sstream>

#include "data/ffhq.h"
#include "data/tools.h"
#include "launch/cli.h"
#include "launch/commands.h"

namespace po = boost::program_options;

namespace lookahead::launch {

namespace {

// "3x24" or "3,24" -> {3, 24}; "" -> {}.
std::vector<int64_t> parse_shape(std::string s, const char* flag, size_t rank) {
  if (s.empty()) return {};
  const std::string original = s;
  for (char& c : s)
    if (c == 'x' || c == ',') c = ' ';
  std::vector<int64_t> out;
  std::stringstream in(s);
  int64_t v;
  while (in >> v) out.push_back(v);
  if (!in.eof() || out.size() != rank)
    throw std::invalid_argument(std::string(flag) + " must be " + std::to_string(rank) +
                                " sizes like 3x24, got '" + original + "'");
  for (int64_t x : out)
    if (x <= 0) throw std::invalid_argument(std::string(flag) + ": sizes must be positive, got '" + original + "'");
  return out;
}

void usage(std::ostream& out, const po::options_description& pack, const po::options_description& synth,
           const po::options_description& ffhq) {
  out << "Usage: lookahead data pack --images DIR --meta FILE.jsonl --out FILE.h5\n"
         "       lookahead data synth --out FILE.h5 [--identities K --per-identity M --size S ...]\n"
         "       lookahead data info FILE.h5|MANIFEST.json [--check-records]\n"
         "       lookahead data ffhq --root DIR --json ffhq-dataset-v2.json --out FILE.h5 [--category C --first I\n"
         "                           --count N --resize S --verify-md5 --skip-missing --prompt P]\n"
         "       lookahead data encode --config FILE.ini --in SET.h5 --out SET.h5 [...]"
         " (lookahead data encode --help)\n"
         "       lookahead data generate --pipeline DIR --out DIR [...] (lookahead data generate --help)\n\n"
      << pack << "\n"
      << synth << "\n"
      << ffhq;
}

// Runs `work` on rank 0 only; every rank returns its exit code after the barrier.
template <class F>
int on_root(dist::World& world, F&& work) {
  if (world.is_root()) work();
  world.comm()->barrier()->wait();
  return kExitOk;
}

}  // namespace

int run_data_command(dist::World& world, const std::vector<std::string>& args) {
  po::options_description pack("pack options");
  pack.add_options()
      ("images", po::value<std::string>()->required(), "folder the JSONL `file` entries are relative to")
      ("meta", po::value<std::string>()->required(),
       "JSONL: {\"file\", \"identity\", \"prompt\", \"photo\", \"landmarks\": [[x,y] x5]} per line")
      ("out", po::value<std::string>()->required(), "training-set file to write (HDF5)");
  po::options_description synth("synth options");
  synth.add_options()
      ("out", po::value<std::string>()->required(), "training-set file to write (HDF5)")
      ("identities", po::value<int64_t>()->default_value(4), "number of identities K")
      ("per-identity", po::value<int64_t>()->default_value(3), "records per identity M")
      ("size", po::value<int64_t>()->default_value(64), "image side S in pixels (PNG)")
      ("seed", po::value<uint64_t>()->default_value(0), "random seed")
      ("photo-fraction", po::value<double>()->default_value(0.5), "share of photos after each identity's first")
      ("latent-size", po::value<int64_t>()->default_value(0), "h > 0: random latents [C,h,h] (e.g. S/8)")
      ("latent-channels", po::value<int64_t>()->default_value(4), "latent channels C")
      ("half-latents", po::bool_switch(), "store latents as float16")
      ("prompt-embeds", po::value<std::string>()->default_value(""), "MxD: random prompt embeddings (e.g. 3x24)")
      ("pooled", po::value<int64_t>()->default_value(0), "P > 0: random pooled prompt embeddings [P] (e.g. 16)")
      ("clip-features", po::value<std::string>()->default_value(""), "TxD: random CLIP image features (e.g. 5x12)");

  po::options_description ffhq("ffhq options");
  ffhq.add_options()
      ("root", po::value<std::string>()->required(), "FFHQ folder holding images1024x1024/ (image.file_path base)")
      ("json", po::value<std::string>()->required(), "the metadata file ffhq-dataset-v2.json")
      ("out", po::value<std::string>()->required(), "training-set file to write (HDF5)")
      ("category", po::value<std::string>()->default_value("validation"),
       "validation (indices 60000..69999), training (0..59999) or all")
      ("first", po::value<int64_t>()->default_value(0), "smallest FFHQ index converted")
      ("count", po::value<int64_t>()->default_value(-1), "number of images (in index order); -1 = all selected")
      ("resize", po::value<int64_t>()->default_value(0), "S > 0: store S x S PNGs (antialiased), landmarks scaled")
      ("verify-md5", po::bool_switch(), "check each PNG against image.file_md5 first")
      ("skip-missing", po::bool_switch(), "skip (and count) entries whose image file is missing")
      ("prompt", po::value<std::string>()->default_value(""), "prompt stored with every record");

  const std::string sub = args.empty() ? "" : args[0];
  std::vector<std::string> rest(args.begin() + (args.empty() ? 0 : 1), args.end());
  // `encode` parses (and documents) its own options, including --help.
  if (sub == "encode") return run_data_encode(world, rest);
  if (sub == "generate") return run_data_generate(world, rest);
  bool help = sub == "help" || sub == "--help" || sub == "-h";
  for (const auto& a : rest) help = help || a == "--help" || a == "-h";
  if (help) {
    if (world.is_root()) usage(std::cout, pack, synth, ffhq);
    return kExitOk;
  }
  if (sub == "pack") {
    auto vm = parse(rest, pack);
    data::PackOptions o{vm["images"].as<std::string>(), vm["meta"].as<std::string>(), vm["out"].as<std::string>()};
    return on_root(world, [&] {
      data::PackReport r = data::pack_folder(o);
      std::cout << "data pack: " << o.out << ": " << r.records << " records, " << r.identities << " identities, "
                << r.photos << " photos, " << r.with_landmarks << " with landmarks\n";
    });
  }
  if (sub == "synth") {
    auto vm = parse(rest, synth);
    data::SynthOptions o;
    o.out = vm["out"].as<std::string>();
    o.identities = vm["identities"].as<int64_t>();
    o.per_identity = vm["per-identity"].as<int64_t>();
    o.size = vm["size"].as<int64_t>();
    o.seed = vm["seed"].as<uint64_t>();
    o.photo_fraction = vm["photo-fraction"].as<double>();
    o.latent_size = vm["latent-size"].as<int64_t>();
    o.latent_channels = vm["latent-channels"].as<int64_t>();
    o.half_latents = vm["half-latents"].as<bool>();
    o.prompt_embeds = parse_shape(vm["prompt-embeds"].as<std::string>(), "--prompt-embeds", 2);
    o.pooled = vm["pooled"].as<int64_t>();
    o.clip_features = parse_shape(vm["clip-features"].as<std::string>(), "--clip-features", 2);
    if (o.identities < 1 || o.per_identity < 1) throw std::invalid_argument("--identities and --per-identity must be >= 1");
    if (o.size < 16) throw std::invalid_argument("--size must be >= 16");
    if (o.latent_size < 0 || o.latent_channels < 1 || o.pooled < 0)
      throw std::invalid_argument("--latent-size, --latent-channels and --pooled must be non-negative");
    return on_root(world, [&] {
      int64_t n = data::write_synthetic(o);
      std::cout << "data synth: " << o.out << ": " << n << " records, " << o.identities << " identities, " << o.size
                << "x" << o.size << "\n";
    });
  }
  if (sub == "info") {
    po::options_description info("info options");
    info.add_options()("file", po::value<std::string>()->required(), "training-set file")
        ("check-records", po::bool_switch(), "decode every record and report corrupt ones (exit 1 if any)");
    po::positional_options_description pos;
    pos.add("file", 1);
    po::variables_map vm;
    po::store(po::command_line_parser(rest).options(info).positional(pos).run(), vm);
    po::notify(vm);
    int64_t corrupt = 0;
    if (world.is_root())
      data::describe(vm["file"].as<std::string>(), vm["check-records"].as<bool>(), std::cout, &corrupt);
    world.comm()->barrier()->wait();
    return corrupt > 0 ? kExitError : kExitOk;
  }
  if (sub == "ffhq") {
    auto vm = parse(rest, ffhq);
    data::FfhqOptions o;
    o.root = vm["root"].as<std::string>();
    o.json = vm["json"].as<std::string>();
    o.out = vm["out"].as<std::string>();
    o.category = data::parse_ffhq_category(vm["category"].as<std::string>());
    o.first = vm["first"].as<int64_t>();
    o.count = vm["count"].as<int64_t>();
    o.resize = vm["resize"].as<int64_t>();
    o.verify_md5 = vm["verify-md5"].as<bool>();
    o.skip_missing = vm["skip-missing"].as<bool>();
    o.prompt = vm["prompt"].as<std::string>();
    if (o.first < 0) throw std::invalid_argument("--first must be >= 0");
    if (o.count == 0 || o.count < -1) throw std::invalid_argument("--count must be >= 1 (or -1 = all)");
    if (o.resize < 0) throw std::invalid_argument("--resize must be >= 1 (or 0 = keep the size)");
    return on_root(world, [&] {
      data::FfhqReport r = data::convert_ffhq(o);
      std::cout << "data ffhq: " << o.out << ": " << r.records << " records (FFHQ " << r.first_index << ".."
                << r.last_index << ", " << data::to_string(o.category) << "), " << r.height << "x" << r.width
                << ", " << r.selected << " selected of " << r.entries << " entries, " << r.skipped_missing
                << " missing skipped" << (o.verify_md5 ? ", " + std::to_string(r.md5_verified) + " MD5 verified" : "")
                << "\n";
    });
  }
  throw std::invalid_argument("data: expected a subcommand pack, synth or info (sets), ffhq (FFHQ conversion) or "
                              "encode (encoder outputs), got '" + sub +
                              "' (lookahead data --help lists the options)");
}

}  // namespace lookahead::launch
