// `lookahead data generate`: the consistent synthetic training set (trainer/generate/generate_set.h,
// docs/data-generation.md), distributed over the ranks of the job.
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
#include "trainer/generate/generate_set.h"

namespace po = boost::program_options;

namespace lookahead::launch {

int run_data_generate(dist::World& world, const std::vector<std::string>& args) {
  trainer::generate::GenerateOptions o;
  std::string consistency = "collapse", filter = "arcface";
  double stylized_threshold = -2;
  int64_t threads = 0;
  bool help = false, quiet = false;
  // clang-format off
  po::options_description what("what to generate");
  what.add_options()
      ("pipeline", po::value(&o.pipeline), "diffusers SDXL pipeline folder as downloaded (sdxl-turbo; SDXL base with "
                                           "--steps 30 --guidance 5)")
      ("variant", po::value(&o.variant), "weight variant of the folder's files (e.g. fp16)")
      ("out", po::value(&o.out), "output folder (a rerun with the same arguments resumes it)")
      ("identities", po::value(&o.identities)->default_value(100),
       "identities: built-in descriptions, or the first N lines of --identities-file (0: all)")
      ("identities-file", po::value(&o.identities_file), "one person description a line, instead of the built-in generator")
      ("prompts-file", po::value(&o.prompts_file),
       "templates, one a line: `vanilla: A photo of {concept}` / `style: ...` (default: the official five styles)")
      ("vanilla", po::value(&o.vanilla)->default_value(40), "vanilla images per identity (references come only from these)")
      ("style-rounds", po::value(&o.style_rounds)->default_value(8), "images per style template per identity")
      ("seed", po::value(&o.seed)->default_value(0), "seed of the descriptions, image seeds and sharing masks")
      ("placeholder", po::value(&o.placeholder)->default_value("face"),
       "word for the person in the stored training prompts (\"A photo of face\")");
  po::options_description how("how");
  how.add_options()
      ("steps", po::value(&o.steps)->default_value(1), "inference steps (sdxl-turbo: 1-4)")
      ("guidance", po::value(&o.guidance)->default_value(0.0), "classifier-free guidance scale (> 1 turns it on)")
      ("resolution", po::value(&o.resolution)->default_value(0), "image size in pixels (0: the pipeline's, 512 for sdxl-turbo)")
      ("batch", po::value(&o.batch)->default_value(8), "images per UNet call (all of one identity)")
      ("consistency", po::value(&consistency)->default_value("collapse"),
       "collapse (same description, different seeds) | shared-attention (up-block self-attention shared across an "
       "identity's batch)")
      ("share-rate", po::value(&o.share_rate)->default_value(0.5), "shared-attention: share probability of each token")
      ("dtype", po::value(&o.dtype)->default_value("auto"), "fp32 | bf16 | fp16 | auto (fp16 on CUDA, fp32 on CPU)")
      ("threads", po::value(&threads)->default_value(0), "CPU threads per rank (0: the node's cores / ranks on it)");
  po::options_description filt("filtering");
  filt.add_options()
      ("filter", po::value(&filter)->default_value("arcface"),
       "arcface (detect + identity filter) | detect (MTCNN only: images without a face are rejected) | none")
      ("mtcnn", po::value(&o.face.mtcnn), "facenet-pytorch's data folder (pnet.pt, rnet.pt, onet.pt)")
      ("arcface", po::value(&o.face.arcface), "ArcFace weights (--filter arcface)")
      ("arcface-network", po::value(&o.face.arcface_network)->default_value("irse50"), "irse50 | iresnet50 | iresnet100")
      ("min-face-size", po::value(&o.face.min_face_size)->default_value(64.0), "smallest face box side, pixels")
      ("keep-threshold", po::value(&o.filter.keep_threshold)->default_value(0.5),
       "vanilla images need this cosine to the identity's medoid")
      ("min-survivors", po::value(&o.filter.min_survivors)->default_value(4),
       "identities keeping fewer vanilla images are dropped")
      ("duplicate-threshold", po::value(&o.filter.duplicate_threshold)->default_value(0.5),
       "identity pairs whose centroids are closer are flagged")
      ("stylized-threshold", po::value(&stylized_threshold),
       "stylized images also need this cosine to the medoid (default: a detected face suffices)");
  po::options_description output("output");
  output.add_options()
      ("image-format", po::value(&o.image_format)->default_value("png"), "png | jpeg")
      ("jpeg-quality", po::value(&o.jpeg_quality)->default_value(95), "JPEG quality (the official script saved at 75)")
      ("identities-per-shard", po::value(&o.identities_per_shard)->default_value(64), "identities per shard file")
      ("report-identities", po::value(&o.report_identities)->default_value(40), "identities shown in report.html")
      ("quiet", po::bool_switch(&quiet), "no progress lines")
      ("help", po::bool_switch(&help), "this text");
  // clang-format on
  po::options_description all;
  all.add(what).add(how).add(filt).add(output);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).run(), vm);
  po::notify(vm);
  if (help) {
    if (world.is_root())
      std::cout << "Usage: [mpirun -np N] lookahead data generate --pipeline DIR --out DIR [--identities N]\n"
                   "           [--mtcnn DIR --arcface FILE | --filter none] [...]\n\n"
                   "SDXL-Turbo images of invented people, V vanilla photos and K rounds of each style per\n"
                   "identity, face-checked and identity-filtered, written as a sharded training set\n"
                   "(OUT/manifest.json) with OUT/report.html. docs/data-generation.md.\n\n"
                << all;
    return kExitOk;
  }
  o.consistency = trainer::generate::parse_consistency(consistency);
  if (filter == "none") {
    o.detect = false;
  } else if (filter == "detect") {
    o.face.arcface.clear();
  } else if (filter == "arcface") {
    if (o.face.arcface.empty())
      throw std::invalid_argument("data generate: --filter arcface needs --arcface (or --filter detect | none)");
  } else {
    throw std::invalid_argument("data generate: --filter must be arcface, detect or none, got '" + filter + "'");
  }
  if (vm.count("stylized-threshold")) o.filter.stylized_threshold = stylized_threshold;
  o.progress = !quiet;
  const int64_t cores = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  at::set_num_threads(static_cast<int>(threads > 0 ? threads : std::max<int64_t>(1, cores / world.local_size())));

  const trainer::generate::GenerateSummary s = trainer::generate::generate_set(world, o);
  if (world.is_root()) {
    std::cout << "data generate: " << o.out << "/manifest.json: " << s.kept << " of " << s.images << " images kept, "
              << s.identities_kept << " of " << s.identities << " identities";
    if (s.duplicate_pairs) std::cout << ", " << s.duplicate_pairs << " identity pair(s) flagged as duplicates";
    std::cout << "\n";
    if (!o.detect) std::cout << "data generate: --filter none: no face detection, every image kept, no landmarks\n";
    std::cout << "data generate: rank 0 skipped " << s.skipped_identities << " finished identities; "
              << s.images_per_second << " images/s on " << world.size() << " rank(s); report: " << o.out
              << "/report.html\n";
  }
  return kExitOk;
}

}  // namespace lookahead::launch
