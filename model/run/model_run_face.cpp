// `lookahead model run` for the face networks: ArcFace iresnet (arcface-iresnet) and TreB1eN
// IR-SE50 (arcface-irse50), input "image" [B, 3, 112, 112] aligned RGB in [-1, 1] -> outputs
// "embedding" (L2-normalised, [B, 512]) and "features" (before normalisation); and MTCNN
// (mtcnn), input "image" uint8 [H, W, 3] RGB -> "boxes", "probs", "landmarks".
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "model/face/arcface_iresnet.h"
#include "model/face/arcface_irse.h"
#include "model/face/mtcnn_detect.h"
#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/io/torch_checkpoint.h"
#include "model/run/model_runners.h"

namespace lookahead::model::run {
namespace {

/// IR-SE options from an optional JSON config {"num_layers": 50, "mode": "ir_se" | "ir"}.
face::IRSEOptions irse_options(const std::string& path) {
  face::IRSEOptions o;
  if (path.empty()) return o;
  std::ifstream in(path);
  TORCH_CHECK(in.good(), "cannot open IR-SE config ", path);
  const auto j = nlohmann::json::parse(in);
  // Our own format: an unknown key would otherwise be silently ignored.
  TORCH_CHECK(j.is_object(), path, ": an IR-SE config must be a JSON object");
  for (const auto& [key, value] : j.items())
    TORCH_CHECK(key == "num_layers" || key == "mode", path, ": ", key, " = ", value.dump(),
                " is not supported (known keys: num_layers, mode)");
  o.num_layers(j.value("num_layers", int64_t{50}));
  const auto mode = j.value("mode", std::string("ir_se"));
  TORCH_CHECK(mode == "ir_se" || mode == "ir", path, ": mode must be ir_se or ir, got ", mode);
  o.se(mode == "ir_se");
  return o;
}

at::Tensor input_image(const NetworkRun& run) {
  return required_input(io::load_file(run.inputs), "image", run.inputs);
}

/// Runs mtcnn (weights: facenet-pytorch's folder of pnet.pt / rnet.pt / onet.pt, those three
/// files comma-separated, or one file with the three state dicts under the prefixes "pnet.",
/// "rnet.", "onet."; no config) on the uint8 [H, W, 3] "image"; writes "boxes" [N, 4], "probs"
/// [N], "landmarks" [N, 5, 2] (float32, largest face first).
int run_mtcnn(const NetworkRun& run) {
  face::Mtcnn mtcnn;
  const std::vector<std::string> files = mtcnn_files(run.weights);
  if (!files.empty()) {
    mtcnn->load_weights(files[0], files[1], files[2]);  // strict: every key of each network
    std::cerr << "model run: " << run.weights << ": pnet, rnet and onet loaded\n";
  } else {
    const auto report = io::load_state_dict(*mtcnn, io::load_weights_file(run.weights), run.weights);
    std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
  }
  const auto det = mtcnn->detect(input_image(run));
  io::save_file(run.out, {{"boxes", det.boxes}, {"probs", det.probs}, {"landmarks", det.landmarks}});
  std::cerr << "model run: wrote " << run.out << " (" << det.boxes.size(0) << " faces)\n";
  return 0;
}

}  // namespace

std::vector<std::string> mtcnn_files(const std::string& weights) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  if (fs::is_directory(weights)) {
    for (const char* net : {"pnet.pt", "rnet.pt", "onet.pt"}) files.push_back((fs::path(weights) / net).string());
  } else if (weights.find(',') != std::string::npos) {
    std::stringstream list(weights);
    for (std::string f; std::getline(list, f, ',');) files.push_back(f);
    TORCH_CHECK(files.size() == 3, "MTCNN weights '", weights, "': give the three files pnet,rnet,onet (got ",
                files.size(), ")");
  } else {
    return files;
  }
  for (const auto& f : files)
    TORCH_CHECK(fs::is_regular_file(f), "MTCNN weights: '", f, "' does not exist (facenet-pytorch's data folder holds "
                "pnet.pt, rnet.pt and onet.pt)");
  return files;
}

/// Runs arcface-iresnet (config: JSON {"network": "iresnet100" | "iresnet50", "layers":
/// [3,13,30,3], "num_features": 512}, every key optional, default iresnet100) or arcface-irse50
/// (config optional: {"num_layers": 50, "mode": "ir_se"}) on `run.inputs`' "image"; writes
/// "embedding" and "features" (float32) to `run.out`; "mtcnn" goes to run_mtcnn. Returns 0.
int run_face_network(const NetworkRun& run) {
  if (run.model == "mtcnn") return run_mtcnn(run);
  const auto topt = at::TensorOptions().dtype(run.dtype);
  at::Tensor features;
  const auto image = input_image(run).to(run.dtype);
  at::NoGradGuard no_grad;
  if (run.model == "arcface-iresnet") {
    auto o = run.config.empty() ? face::IResNetOptions() : face::IResNetOptions::from_json_file(run.config);
    face::IResNet net(o.tensor_options(topt));
    const auto report = io::load_state_dict(*net, io::load_weights_file(run.weights), run.weights);
    std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
    features = net->features(image);
  } else if (run.model == "arcface-irse50") {
    face::IRSE net(irse_options(run.config).tensor_options(topt));
    const auto report = io::load_state_dict(*net, io::load_weights_file(run.weights), run.weights);
    std::cerr << "model run: " << run.weights << ": " << report.summary() << "\n";
    features = net->features(image);
  } else {
    TORCH_CHECK(false, "run_face_network: unknown face model '", run.model, "'");
  }
  const auto f32 = features.to(at::kFloat).contiguous();
  const auto embedding = face::l2_normalize(f32).contiguous();
  io::save_file(run.out, {{"embedding", embedding}, {"features", f32}});
  std::cerr << "model run: wrote " << run.out << " (embedding " << embedding.sizes() << ")\n";
  return 0;
}

}  // namespace lookahead::model::run
