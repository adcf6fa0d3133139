// Header-only check of a configuration's weight files against its model (see weight_check.h).
#include "trainer/weight_check.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "model/io/safetensors.h"
#include "model/io/weight_shapes.h"
#include "model/lookahead/lookahead_model.h"
#include "model/nn/lora_loader.h"
#include "model/unet/sd_family.h"
#include "trainer/train_state.h"

namespace lookahead::trainer {

namespace {

namespace io = model::io;
using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;  // in module order

/// What a strict load fills: parameters, then buffers (BatchNorm statistics).
Shapes module_shapes(torch::nn::Module& module) {
  Shapes out;
  for (const auto& p : module.named_parameters()) out.emplace_back(p.key(), p.value().sizes().vec());
  for (const auto& b : module.named_buffers()) out.emplace_back(b.key(), b.value().sizes().vec());
  return out;
}

/// How messages name the networks the configuration builds.
struct Names {
  std::string model;  ///< "SDXL", "the tiny preset", "model.unet_config's model"
  std::string owner;  ///< the same as a possessive, before a network's name
};

Names names_of(const TrainConfig& c) {
  if (!c.model.unet_config.empty()) return {"the model of model.unet_config", "model.unet_config's"};
  if (c.model.preset == Preset::kTiny) return {"the tiny preset", "the tiny preset's"};
  return {"SDXL", "the SDXL"};
}

/// The first disagreement between a file's tensors and a network's (mis-shaped first, then
/// missing, then unexpected) and how many of each there are; empty when they match as a strict
/// load needs. `path`: the file configured, to name a shard only when it is another file.
std::string compare(const std::vector<io::WeightShape>& file, const Shapes& expected, const std::string& network,
                    const std::string& path) {
  std::map<std::string, const io::WeightShape*> by_name;
  for (const auto& t : file) by_name.emplace(t.name, &t);
  std::set<std::string> known;
  std::string first_bad, first_missing, first_unexpected;
  size_t bad = 0, missing = 0, unexpected = 0;
  for (const auto& [key, shape] : expected) {
    known.insert(key);
    const auto it = by_name.find(key);
    if (it == by_name.end()) {
      if (missing++ == 0) first_missing = key;
    } else if (it->second->shape != shape && bad++ == 0) {
      const io::WeightShape& t = *it->second;
      const std::string shard =
          t.file == path ? "" : " (shard " + std::filesystem::path(t.file).filename().string() + ")";
      first_bad = "tensor '" + key + "' is " + io::shape_text(t.shape) + shard + ", " + network + " expects " +
                  io::shape_text(shape);
    }
  }
  for (const auto& t : file)
    if (!known.count(t.name) && unexpected++ == 0) first_unexpected = t.name;
  if (bad + missing + unexpected == 0) return "";
  std::string out = bad       ? first_bad
                    : missing ? "tensor '" + first_missing + "' of " + network + " is missing"
                              : "tensor '" + first_unexpected + "' is not one of " + network + "'s";
  // "(1 of 1680 tensors mis-shaped)", "(32 of 32 tensors mis-shaped, 51 unexpected)".
  std::string counts;
  auto count = [&](size_t n, const std::string& what) {
    if (n == 0) return;
    counts += counts.empty() ? std::to_string(n) + " of " + std::to_string(expected.size()) + " tensors " + what
                             : ", " + std::to_string(n) + " " + what;
  };
  count(bad, "mis-shaped");
  count(missing, "missing");
  count(unexpected, "unexpected");
  return out + " (" + counts + ")";
}

/// "kohya LoRA", "PEFT LoRA", ...: the layout a LoRA file's keys are in, for messages.
std::string lora_kind(const std::vector<io::WeightShape>& file) {
  bool kohya = false, sgm = false, peft = false, old = false;
  for (const auto& t : file) {
    if (t.name.rfind("lora_unet_", 0) == 0) {
      kohya = true;
      sgm = sgm || t.name.rfind("lora_unet_input_blocks_", 0) == 0 || t.name.rfind("lora_unet_middle_block_", 0) == 0 ||
            t.name.rfind("lora_unet_output_blocks_", 0) == 0;
    } else if (t.name.rfind("unet.", 0) == 0) {
      peft = peft || t.name.find(".lora_A.") != std::string::npos;
      old = old || t.name.find("lora.down.") != std::string::npos;
    }
  }
  using model::nn::LoraFormat;
  if (kohya) return model::nn::format_name(sgm ? LoraFormat::kKohyaSgm : LoraFormat::kKohya);
  if (peft) return model::nn::format_name(LoraFormat::kPeft);
  if (old) return model::nn::format_name(LoraFormat::kDiffusersOld);
  return "LoRA";
}

/// "an SD1.5 kohya LoRA (cross-attention dim 768: 'KEY' is [64, 768]), but SDXL expects
/// cross-attention dim 2048" when the file reads text of another width than the model's UNet;
/// empty otherwise.
std::string other_family(const std::vector<io::WeightShape>& file, const std::string& kind, int64_t expected_dim,
                         const Names& names) {
  const auto guess = model::unet::guess_sd_family(file);
  if (!guess || guess->cross_attention_dim == expected_dim) return "";
  const std::string what = guess->family.empty() ? "a " + kind : "an " + guess->family + " " + kind;
  return what + " (" + model::unet::evidence(*guess) + "), but " + names.model + " expects cross-attention dim " +
         std::to_string(expected_dim);
}

/// A LoRA file attached to a meta-device UNet of `config`, as the loader would attach it: every
/// key mapped to a layer, every shape fitting it. Only the `.alpha` scalars are read.
std::string check_lora(const std::string& path, const io::WeightShapes& shapes, const model::unet::UNetConfig& config) {
  if (!path.ends_with(".safetensors")) return "the LoRA loader reads .safetensors files only";
  const auto meta = at::TensorOptions().device(at::kMeta);
  model::unet::UNet2DConditionModel unet(config, meta);
  const auto file = io::SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& t : shapes.tensors)
    tensors[t.name] = t.name.ends_with(".alpha") ? file->get(t.name) : at::empty(t.shape, meta.dtype(t.dtype));
  try {
    model::nn::attach_lora(*unet, tensors, shapes.metadata, "check", std::make_shared<model::nn::LoraScale>(), path);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

}  // namespace

std::vector<std::string> check_weights(const TrainConfig& c, const c10::Device& device) {
  const ModelConfig& m = c.model;
  if (m.unet_weights.empty() && m.ip_adapter.empty() && m.lcm_lora.empty() && m.taesd.empty() && m.arcface.empty())
    return {};
  // Shapes only: the networks of the run, without a byte of weights.
  const model::LookaheadModelConfig config = model_config(c, device);
  model::LookaheadModel net(config, at::kMeta);
  const Names names = names_of(c);
  const int64_t cross_dim = config.unet.cross_attention_dim.empty() ? 0 : config.unet.cross_attention_dim[0];

  std::vector<std::string> problems;
  auto check = [&](const char* key, const std::string& path,
                   const std::function<std::string(const io::WeightShapes&)>& against) {
    std::error_code ec;
    if (path.empty() || !std::filesystem::is_regular_file(path, ec)) return;  // missing_inputs says so
    std::string what;
    try {
      what = against(io::load_shapes(path));
    } catch (const c10::Error& e) {
      what = e.what_without_backtrace();
    }
    if (!what.empty()) problems.push_back(std::string(key) + " = " + path + ": " + what);
  };
  // A UNet or IP-Adapter of another generation: say which first, then the first tensor that shows it.
  auto with_family = [&](const io::WeightShapes& f, const std::string& kind, const std::string& mismatch) {
    const std::string family = other_family(f.tensors, kind, cross_dim, names);
    if (family.empty() || mismatch.empty()) return mismatch;
    return family + "; " + mismatch;
  };

  check("model.unet_weights", m.unet_weights, [&](const io::WeightShapes& f) {
    return with_family(f, "UNet",
                       compare(f.tensors, module_shapes(*net.unet()), names.owner + " UNet", m.unet_weights));
  });
  check("model.ip_adapter", m.ip_adapter, [&](const io::WeightShapes& f) {
    return with_family(f, "IP-Adapter",
                       compare(f.tensors, module_shapes(*net.ip_adapter()), names.owner + " IP-Adapter", m.ip_adapter));
  });
  check("model.lcm_lora", m.lcm_lora, [&](const io::WeightShapes& f) {
    const std::string family = other_family(f.tensors, lora_kind(f.tensors), cross_dim, names);
    return family.empty() ? check_lora(m.lcm_lora, f, config.unet) : family;
  });
  check("model.taesd", m.taesd, [&](const io::WeightShapes& f) {
    // Only the decoder is part of the model (as LookaheadModel loads it).
    std::vector<io::WeightShape> decoder;
    for (const auto& t : f.tensors)
      if (t.name.rfind("decoder.", 0) == 0)
        decoder.push_back(io::WeightShape{t.name.substr(8), t.dtype, t.shape, t.file});
    return compare(decoder, module_shapes(*net.taesd_decoder()), names.owner + " TAESD decoder", m.taesd);
  });
  check("model.arcface", m.arcface, [&](const io::WeightShapes& f) {
    const std::string arcface =
        names.owner + " ArcFace " + config.arcface +
        (config.arcface_layers.empty() ? "" : " (stage depths " + io::shape_text(config.arcface_layers) + ")");
    return compare(f.tensors, module_shapes(*net.arcface_module()), arcface, m.arcface);
  });
  return problems;
}

}  // namespace lookahead::trainer
