// `lookahead model inspect FILE`: what a weight file holds (tensors per dtype, names and shapes) and
// which supported network it matches: every network of the file's config.json class, or, without
// one, the SDXL UNet (and LoRA / IP-Adapter / KV-encoder files for it), both VAEs, both CLIP text
// towers, the IP-Adapter image encoder and the face networks, each built on the meta device.
#include "launch/model_inspect.h"

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "launch/cli.h"
#include "model/adapters/ip_adapter.h"
#include "model/adapters/kv_encoder.h"
#include "model/face/arcface_iresnet.h"
#include "model/face/arcface_irse.h"
#include "model/face/mtcnn_detect.h"
#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/io/torch_checkpoint.h"
#include "model/nn/lora_loader.h"
#include "model/run/model_runners.h"
#include "model/text/clip_text.h"
#include "model/unet/sd_family.h"
#include "model/unet/unet_2d_condition.h"
#include "model/vae/autoencoder_kl.h"
#include "model/vae/autoencoder_tiny.h"
#include "model/vae/vae_config.h"
#include "model/vision/clip_vision.h"

namespace po = boost::program_options;

namespace lookahead::launch {

namespace {

std::vector<model::io::TensorInfo> read_infos(const std::string& path) {
  std::vector<model::io::TensorInfo> infos;
  if (const std::vector<std::string> files = model::run::mtcnn_files(path); !files.empty()) {
    // facenet-pytorch's three MTCNN files: their keys under the prefixes of the merged layout.
    const char* prefixes[3] = {"pnet.", "rnet.", "onet."};
    for (size_t k = 0; k < 3; ++k)
      for (const auto& [name, t] : model::io::load_weights_file(files[k])) {
        model::io::TensorInfo info;
        info.name = prefixes[k] + name;
        info.dtype = t.scalar_type();
        info.shape = t.sizes().vec();
        infos.push_back(std::move(info));
      }
    return infos;
  }
  if (path.size() > 11 && path.substr(path.size() - 11) == ".index.json") {
    std::ifstream in(path);
    TORCH_CHECK(in, "cannot open '", path, "'");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK(false, path, ": not valid JSON: ", e.what());
    }
    TORCH_CHECK(j.contains("weight_map") && j["weight_map"].is_object(), path, ": no weight_map object");
    std::set<std::string> shards;
    for (const auto& [name, file] : j["weight_map"].items()) shards.insert(file.get<std::string>());
    auto dir = std::filesystem::path(path).parent_path();
    for (const auto& s : shards) {
      auto f = model::io::SafetensorsFile::open((dir / s).string());
      infos.insert(infos.end(), f->tensors().begin(), f->tensors().end());
    }
    return infos;
  }
  if (!path.ends_with(".safetensors")) {
    // torch.save checkpoints (.bin, .pth, .pt): read whole, as the loaders do.
    for (const auto& [name, t] : model::io::load_torch_file(path)) {
      model::io::TensorInfo info;
      info.name = name;
      info.dtype = t.scalar_type();
      info.shape = t.sizes().vec();
      infos.push_back(std::move(info));
    }
    return infos;
  }
  auto f = model::io::SafetensorsFile::open(path);
  return f->tensors();
}

/// Stage depths of an insightface iresnet file (`layer<s>.<b>.` keys), or empty for other files.
std::vector<int64_t> iresnet_layers(const std::vector<model::io::TensorInfo>& infos) {
  std::vector<int64_t> layers(4, 0);
  for (const auto& i : infos) {
    if (i.name.size() < 9 || i.name.rfind("layer", 0) != 0 || i.name[5] < '1' || i.name[5] > '4' || i.name[6] != '.')
      continue;
    const int64_t block = std::atoll(i.name.c_str() + 7);
    auto& depth = layers[static_cast<size_t>(i.name[5] - '1')];
    depth = std::max(depth, block + 1);
  }
  for (int64_t d : layers)
    if (d == 0) return {};
  return layers;
}

/// Prints how many of `module`'s tensors (parameters and buffers) the file provides with the right
/// shapes (nothing if none). `normalize` maps file keys to the module's (e.g. CLIP prefixes).
void match_module(const std::vector<model::io::TensorInfo>& infos, torch::nn::Module& module, const std::string& label,
                  const std::function<std::map<std::string, at::Tensor>(const std::map<std::string, at::Tensor>&)>&
                      normalize = nullptr) {
  std::map<std::string, at::Tensor> shapes;
  for (const auto& i : infos) shapes[i.name] = at::empty(i.shape, at::TensorOptions().device(at::kMeta));
  if (normalize) shapes = normalize(shapes);
  auto report = model::io::load_state_dict(module, shapes, "file", /*strict=*/false);
  if (report.loaded == 0 && report.mismatched.empty()) return;  // not this network's keys
  size_t tensors = module.named_parameters().size() + module.named_buffers().size();
  std::cout << "  " << label << ": " << report.loaded << " of " << tensors << " tensors match"
            << (report.ok() ? " (complete)" : "") << "\n";
  if (!report.ok()) std::cout << "    " << report.summary(8) << "\n";
}

void match_lora(const std::vector<model::io::TensorInfo>& infos, const model::unet::UNetConfig& config,
                const std::string& path, const std::string& label) {
  // Any UNet LoRA layout (kohya, PEFT, diffusers); lora_format.h tells them apart.
  bool any = std::any_of(infos.begin(), infos.end(), [](const auto& i) {
    return i.name.rfind("lora_unet_", 0) == 0 ||
           (i.name.rfind("unet.", 0) == 0 && i.name.find("lora") != std::string::npos);
  });
  if (!any) return;
  model::unet::UNet2DConditionModel unet(config, at::TensorOptions().device(at::kMeta));
  std::map<std::string, at::Tensor> tensors;
  auto file = path.size() > 11 && path.substr(path.size() - 11) == ".index.json" ? nullptr
                                                                                  : model::io::SafetensorsFile::open(path);
  for (const auto& i : infos) {
    bool alpha = i.name.size() > 6 && i.name.substr(i.name.size() - 6) == ".alpha";
    tensors[i.name] = alpha && file ? file->get(i.name) : at::empty(i.shape, at::TensorOptions().device(at::kMeta));
  }
  const std::map<std::string, std::string> no_metadata;
  try {
    auto r = model::nn::attach_lora(*unet, tensors, file ? file->metadata() : no_metadata, "inspect",
                                    std::make_shared<model::nn::LoraScale>(), path);
    std::cout << "  " << model::nn::format_name(r.format) << " for " << label << ": " << r.layers << " layers, "
              << r.parameters << " parameters";
    if (!r.alphas.empty()) {
      std::cout << ", alpha";
      for (double a : r.alphas) std::cout << " " << a;
      std::cout << " (" << r.alpha_source << ")";
    }
    if (!r.ignored.empty()) std::cout << ", " << r.ignored.size() << " text-encoder keys ignored";
    std::cout << "\n";
  } catch (const c10::Error& e) {
    std::cout << "  LoRA, but not for " << label << ": " << e.what_without_backtrace() << "\n";
  }
}

void match_ip_adapter(const std::vector<model::io::TensorInfo>& infos, const model::unet::UNetConfig& config,
                      const std::string& label) {
  std::map<std::string, at::Tensor> shapes;
  for (const auto& i : infos) shapes[i.name] = at::empty(i.shape, at::TensorOptions().device(at::kMeta));
  if (!shapes.count("image_proj.latents")) return;
  try {
    model::unet::UNet2DConditionModel unet(config, at::TensorOptions().device(at::kMeta));
    auto opts = model::adapters::infer_resampler_options(shapes, "file").tensor_options(at::TensorOptions().device(at::kMeta));
    model::adapters::IpAdapter ip(*unet, opts);
    auto report = model::io::load_state_dict(*ip, shapes, "file", /*strict=*/false);
    auto [tensors, elements] = model::unet::count_parameters(*ip);
    std::cout << "  IP-Adapter Plus for " << label << ": " << report.loaded << " of " << tensors << " tensors match"
              << (report.ok() ? " (complete)" : "") << "; Resampler dim " << opts.dim() << ", " << opts.heads()
              << " heads, depth " << opts.depth() << ", " << opts.num_queries() << " tokens of " << opts.output_dim()
              << "\n";
    if (!report.ok()) std::cout << "    " << report.summary(8) << "\n";
  } catch (const c10::Error& e) {
    std::cout << "  IP-Adapter-like keys, but not for " << label << ": " << e.what_without_backtrace() << "\n";
  }
}

/// A KV-encoder trainables file (encoder LoRAs + `.extract_kv1.` KV-head LoRAs, the keys of
/// KvEncoder::trainable_parameters): matched against a meta-device KvEncoder of the config.
void match_kv_encoder(const std::vector<model::io::TensorInfo>& infos, const model::unet::UNetConfig& config,
                      const std::string& label) {
  auto ends_with = [](const std::string& s, const std::string& suffix) { return s.ends_with(suffix); };
  bool kv = false;
  int64_t rank = 0, kv_rank = 0;
  for (const auto& i : infos) {
    const bool head = i.name.find(".extract_kv1.") != std::string::npos;
    kv = kv || head;
    if (ends_with(i.name, ".lora_down.weight") && i.shape.size() == 2) (head ? kv_rank : rank) = i.shape[0];
  }
  if (!kv) return;
  try {
    TORCH_CHECK(rank > 0 && kv_rank > 0, "needs both encoder LoRA and KV-head LoRA lora_down keys");
    model::unet::UNet2DConditionModel unet(config, at::TensorOptions().device(at::kMeta));
    model::adapters::KvEncoder encoder(unet, model::adapters::KvEncoderOptions().lora_rank(rank).kv_lora_rank(kv_rank));
    auto expected = encoder.trainable_parameters();
    int64_t matched = 0, elements = 0;
    std::vector<std::string> problems;
    std::set<std::string> seen;
    for (const auto& i : infos) {
      seen.insert(i.name);
      auto it = expected.find(i.name);
      if (it == expected.end()) {
        problems.push_back("unexpected " + i.name);
      } else if (it->second.sizes().vec() != i.shape) {
        problems.push_back("shape of " + i.name + " " + shape_str(i.shape) + ", expected " +
                           shape_str(it->second.sizes().vec()));
      } else {
        ++matched;
        elements += i.numel();
      }
    }
    for (const auto& [key, t] : expected)
      if (!seen.count(key)) problems.push_back("missing " + key);
    std::cout << "  KV-encoder trainables for " << label << ": " << matched << " of " << expected.size()
              << " tensors match" << (problems.empty() ? " (complete)" : "") << "; "
              << encoder.block_paths().size() << " blocks, " << encoder.lora_layer_paths().size()
              << " LoRA layers, rank " << rank << ", KV-head rank " << kv_rank << ", " << elements << " elements\n";
    for (size_t i = 0; i < problems.size() && i < 8; ++i) std::cout << "    " << problems[i] << "\n";
    if (problems.size() > 8) std::cout << "    ... (" << problems.size() - 8 << " more)\n";
  } catch (const c10::Error& e) {
    std::cout << "  KV-encoder-like keys, but not for " << label << ": " << e.what_without_backtrace() << "\n";
  }
}

int inspect(const std::string& path, const std::string& config_path, bool list_all) {
  auto infos = read_infos(path);
  std::map<std::string, std::pair<int64_t, int64_t>> by_dtype;  // dtype -> (tensors, elements)
  for (const auto& i : infos) {
    auto& d = by_dtype[model::io::dtype_to_string(i.dtype)];
    d.first += 1;
    d.second += i.numel();
  }
  std::cout << path << ": " << infos.size() << " tensors\n";
  for (const auto& [dtype, n] : by_dtype) std::cout << "  " << dtype << ": " << n.first << " tensors, " << n.second << " elements\n";
  size_t shown = 0;
  for (const auto& i : infos) {
    if (!list_all && shown == 20) {
      std::cout << "  ... (" << infos.size() - shown << " more; --all lists every tensor)\n";
      break;
    }
    std::cout << "  " << std::left << std::setw(72) << i.name << " " << std::setw(5) << model::io::dtype_to_string(i.dtype)
              << " " << shape_str(i.shape) << "\n";
    ++shown;
  }
  std::cout << "matches:\n";
  const auto meta = at::TensorOptions().device(at::kMeta);
  std::string cls;
  if (!config_path.empty()) {
    std::ifstream in(config_path);
    TORCH_CHECK(in, "cannot open config '", config_path, "'");
    std::stringstream text;
    text << in.rdbuf();
    // diffusers names the class in `_class_name`, transformers in `architectures`.
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK(false, config_path, ": not valid JSON: ", e.what());
    }
    if (j.is_object() && j.contains("_class_name") && j["_class_name"].is_string())
      cls = j["_class_name"].get<std::string>();
    else if (j.is_object() && j.contains("architectures") && j["architectures"].is_array() &&
             !j["architectures"].empty() && j["architectures"][0].is_string())
      cls = j["architectures"][0].get<std::string>();
  }
  if (cls == "CLIPTextModel" || cls == "CLIPTextModelWithProjection" || cls == "CLIPVisionModelWithProjection" ||
      cls == "CLIPVisionModel") {
    if (cls.rfind("CLIPText", 0) == 0) {
      model::text::ClipTextModel clip(model::text::ClipTextConfig::from_file(config_path),
                                      cls == "CLIPTextModelWithProjection", meta);
      match_module(infos, *clip, cls + " (" + config_path + ")", model::text::normalize_clip_text_keys);
    } else {
      model::vision::ClipVisionModel clip(model::vision::ClipVisionConfig::from_file(config_path),
                                          cls == "CLIPVisionModelWithProjection", meta);
      match_module(infos, *clip, cls + " (" + config_path + ")", model::vision::drop_position_ids);
    }
    return kExitOk;
  }
  if (cls == "AutoencoderTiny" || cls == "AutoencoderKL") {
    if (cls == "AutoencoderTiny") {
      model::vae::AutoencoderTiny taesd(model::vae::TinyConfig::from_file(config_path), meta);
      match_module(infos, *taesd, "AutoencoderTiny (" + config_path + ")");
    } else {
      model::vae::AutoencoderKL vae(model::vae::KLConfig::from_file(config_path), meta);
      match_module(infos, *vae, "AutoencoderKL (" + config_path + ")");
    }
    return kExitOk;
  }
  auto config = config_path.empty() ? model::unet::UNetConfig::sdxl_base() : model::unet::UNetConfig::from_file(config_path);
  std::string label = config_path.empty() ? "UNet2DConditionModel (SDXL base)" : "UNet2DConditionModel (" + config_path + ")";
  model::unet::UNet2DConditionModel unet(config, meta);
  match_module(infos, *unet, label);
  match_lora(infos, config, path, label);
  match_ip_adapter(infos, config, label);
  match_kv_encoder(infos, config, label);
  // Which Stable Diffusion generation a UNet-side file was made for: the width of the text its
  // cross-attention reads, whatever network the config names.
  std::vector<model::io::WeightShape> shapes;
  for (const auto& i : infos) shapes.push_back(model::io::WeightShape{i.name, i.dtype, i.shape, path});
  if (const auto family = model::unet::guess_sd_family(shapes))
    std::cout << "  base model: " << (family->family.empty() ? "none of SD1.5, SD2.x, SDXL" : family->family) << " ("
              << model::unet::evidence(*family) << ")\n";
  if (config_path.empty()) {
    model::vae::AutoencoderTiny taesd(model::vae::TinyConfig::taesdxl(), meta);
    match_module(infos, *taesd, "AutoencoderTiny (TAESDXL)");
    model::vae::AutoencoderKL vae(model::vae::KLConfig::sdxl(), meta);
    match_module(infos, *vae, "AutoencoderKL (SDXL VAE)");
    model::text::ClipTextModel clip_l(model::text::ClipTextConfig::clip_l(), false, meta);
    match_module(infos, *clip_l, "CLIPTextModel (CLIP ViT-L/14, SDXL text_encoder)", model::text::normalize_clip_text_keys);
    model::text::ClipTextModel bigg(model::text::ClipTextConfig::clip_bigg(), true, meta);
    match_module(infos, *bigg, "CLIPTextModelWithProjection (OpenCLIP bigG, SDXL text_encoder_2)",
                 model::text::normalize_clip_text_keys);
    model::vision::ClipVisionModel vit_h(model::vision::ClipVisionConfig::vit_h14(), true, meta);
    match_module(infos, *vit_h, "CLIPVisionModelWithProjection (ViT-H/14, IP-Adapter image encoder)",
                 model::vision::drop_position_ids);
    for (const char* name : {"iresnet100", "iresnet50"}) {
      model::face::IResNet net(model::face::IResNetOptions::named(name).tensor_options(meta));
      match_module(infos, *net, std::string("ArcFace ") + name + " (insightface layout)");
    }
    // Other stage depths (the tiny preset's {1, 1, 1, 1}): the network the file's keys describe.
    if (const auto layers = iresnet_layers(infos); !layers.empty() && layers != std::vector<int64_t>{3, 13, 30, 3} &&
                                                   layers != std::vector<int64_t>{3, 4, 14, 3}) {
      model::face::IResNet net(model::face::IResNetOptions::named("iresnet50").layers(layers).tensor_options(meta));
      match_module(infos, *net, "ArcFace iresnet, stage depths " + shape_str(layers) + " (insightface layout)");
    }
    model::face::IRSE irse(model::face::IRSEOptions().tensor_options(meta));
    match_module(infos, *irse, "ArcFace IR-SE50 (TreB1eN layout)");
    model::face::Mtcnn mtcnn(model::face::MtcnnOptions().tensor_options(meta));
    match_module(infos, *mtcnn, "MTCNN P/R/O-Net (facenet-pytorch, keys pnet./rnet./onet.)");
  }
  return kExitOk;
}

}  // namespace

int run_model_inspect(const std::vector<std::string>& args) {
  po::options_description d("lookahead model inspect FILE");
  d.add_options()(
      "file", po::value<std::string>()->required(),
      "safetensors file, *.index.json, torch.save file (.bin, .pth, .pt) or facenet-pytorch's MTCNN folder")(
      "config", po::value<std::string>()->default_value(""), "UNet config.json to match against (default: SDXL base)")(
      "all", po::bool_switch(), "list every tensor");
  po::positional_options_description pos;
  pos.add("file", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(d).positional(pos).run(), vm);
  po::notify(vm);
  return inspect(vm["file"].as<std::string>(), vm["config"].as<std::string>(), vm["all"].as<bool>());
}

}  // namespace lookahead::launch
