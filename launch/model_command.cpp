// `lookahead model run` (run a network on named input tensors, for parity checks and for
// debugging a user's weights; the runners are model/run/), and the dispatch to `lookahead model
// inspect` (launch/model_inspect.cpp), `lookahead model tokenize` (launch/model_tokenize.cpp) and
// `lookahead model init` (launch/model_init.cpp).
#include <boost/program_options/options_description.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>
#include <c10/util/Exception.h>

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/model_init.h"
#include "launch/model_inspect.h"
#include "launch/model_tokenize.h"
#include "model/run/model_runners.h"

namespace po = boost::program_options;

namespace lookahead::launch {

namespace {

at::ScalarType parse_dtype(const std::string& s) {
  if (s == "float32") return at::kFloat;
  if (s == "bfloat16") return at::kBFloat16;
  if (s == "float16") return at::kHalf;
  throw std::invalid_argument("--dtype must be float32, bfloat16 or float16, got '" + s + "'");
}

}  // namespace

int run_model_command(dist::World& world, const std::vector<std::string>& args) {
  if (args.empty() || (args[0] != "run" && args[0] != "inspect" && args[0] != "tokenize" && args[0] != "init"))
    throw po::error(
        "expected `lookahead model run ...`, `lookahead model inspect FILE`, `lookahead model tokenize ...` or "
        "`lookahead model init --preset P --out DIR`");
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (world.size() > 1) throw std::invalid_argument("`lookahead model` is a single-process tool; run it without mpirun");
  if (args[0] == "tokenize") return run_model_tokenize(rest);
  if (args[0] == "inspect") return run_model_inspect(rest);
  if (args[0] == "init") return run_model_init(rest);
  po::options_description d("lookahead model run");
  d.add_options()("model", po::value<std::string>()->required(), "network: unet, kv-encoder, taesd, taesdxl, vae, clip-text, clip-vision, mtcnn, arcface-iresnet, arcface-irse50")(
      "config", po::value<std::string>()->default_value(""),
      "the network's diffusers config.json (not needed for mtcnn and arcface-irse50)")(
      "weights", po::value<std::string>()->required(),
      "safetensors file (or *.index.json) with its weights; mtcnn: also facenet-pytorch's folder of pnet.pt / "
      "rnet.pt / onet.pt, or those three paths separated by commas")(
      "lora", po::value<std::string>()->default_value(""), "LoRA to apply unfused: kohya (diffusers or SGM names), PEFT or diffusers format")(
      "lora-scale", po::value<double>()->default_value(1.0), "run-time LoRA multiplier")(
      "ip-adapter", po::value<std::string>()->default_value(""),
      "IP-Adapter Plus checkpoint (.safetensors or .bin); the inputs then need image_embeds [B, N, 1280]")(
      "ip-scale", po::value<double>()->default_value(1.0), "weight of the IP-Adapter image branch")(
      "encoder-weights", po::value<std::string>()->default_value(""),
      "KV-encoder trainables (encoder LoRAs and extract_kv1 KV-head LoRAs; --model kv-encoder)")(
      "inputs", po::value<std::string>()->required(), "safetensors file of named inputs")(
      "out", po::value<std::string>()->required(), "safetensors file to write the output to")(
      "dtype", po::value<std::string>()->default_value("float32"), "float32, bfloat16 or float16");
  auto vm = parse(rest, d);
  model::run::NetworkRun o;
  o.model = vm["model"].as<std::string>();
  o.config = vm["config"].as<std::string>();
  if (o.config.empty() && o.model != "mtcnn" && o.model != "arcface-irse50")
    throw po::error("--config is required for --model " + o.model + " (the network's config.json)");
  o.weights = vm["weights"].as<std::string>();
  o.lora = vm["lora"].as<std::string>();
  o.lora_scale = vm["lora-scale"].as<double>();
  o.ip_adapter = vm["ip-adapter"].as<std::string>();
  o.ip_scale = vm["ip-scale"].as<double>();
  o.encoder_weights = vm["encoder-weights"].as<std::string>();
  o.inputs = vm["inputs"].as<std::string>();
  o.out = vm["out"].as<std::string>();
  o.dtype = parse_dtype(vm["dtype"].as<std::string>());
  using Runner = int (*)(const model::run::NetworkRun&);
  using namespace model::run;
  const std::map<std::string, Runner> runners = {
      {"unet", run_unet_network},   {"taesd", run_vae_network},          {"taesdxl", run_vae_network},
      {"vae", run_vae_network},     {"clip-text", run_clip_network},     {"clip-vision", run_clip_network},
      {"mtcnn", run_face_network},  {"arcface-iresnet", run_face_network}, {"arcface-irse50", run_face_network},
      {"kv-encoder", run_kv_network}};
  auto runner = runners.find(o.model);
  if (runner == runners.end()) {
    std::string names;
    for (const auto& [name, fn] : runners) names += (names.empty() ? "" : ", ") + name;
    throw std::invalid_argument("--model: supported networks are " + names + " (got '" + o.model + "')");
  }
  const bool unet_family = o.model == "unet" || o.model == "kv-encoder";
  TORCH_CHECK(o.lora.empty() || unet_family, "--lora applies to the unet and kv-encoder only");
  TORCH_CHECK(o.ip_adapter.empty() || unet_family, "--ip-adapter applies to the unet and kv-encoder only");
  TORCH_CHECK(o.encoder_weights.empty() || o.model == "kv-encoder", "--encoder-weights applies to kv-encoder only");
  return runner->second(o);
}

}  // namespace lookahead::launch
