// The config key walk: tests/parity/config_keys_oracle.py enumerates every key of every
// reference config class our readers take (diffusers UNet2DConditionModel, AutoencoderKL,
// AutoencoderTiny, the schedulers; transformers CLIPTextConfig / CLIPVisionConfig / CLIPConfig)
// and writes a tiny config per (key, non-default value) into LA_CONFIG_KEYS_DIR. Here every
// reference key must be in the reader's table (io::ConfigKey), every default-only key must be
// refused naming it, and every other key must load and give the reference's outputs at that value
// (1e-4, float32: the models' forward passes, the schedulers' 4-step chains, DDPM's add_noise), so
// no key is accepted and then ignored or misapplied.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "model/io/config_keys.h"
#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/sched/ddim.h"
#include "model/sched/dpm_solver.h"
#include "model/sched/euler.h"
#include "model/sched/euler_ancestral.h"
#include "model/sched/lcm_sampler.h"
#include "model/sched/noise_schedule.h"
#include "model/text/clip_text.h"
#include "model/unet/unet_2d_condition.h"
#include "model/vae/autoencoder_kl.h"
#include "model/vae/autoencoder_tiny.h"
#include "model/vision/clip_vision.h"

namespace lookahead::model {
namespace {

using json = nlohmann::json;
using Tensors = std::map<std::string, at::Tensor>;
constexpr double kTol = 1e-4;

struct Case {
  std::string reader, name, key, dir, ours, error;
  json value;
  bool accepted = false, parity = false;
};

json load_manifest() {
  const char* dir = std::getenv("LA_CONFIG_KEYS_DIR");
  if (!dir) return {};
  std::ifstream in(std::string(dir) + "/manifest.json");
  return in ? json::parse(in) : json();
}

std::vector<Case> cases_of(const json& manifest) {
  std::vector<Case> out;
  for (const auto& c : manifest["cases"]) {
    Case k;
    k.reader = c["reader"];
    k.name = c["name"];
    k.key = c["key"].is_null() ? "" : c["key"].get<std::string>();
    k.value = c["value"];
    k.dir = c["dir"];
    k.ours = c["ours"];
    k.error = c["error"];
    k.accepted = c["accepted"];
    k.parity = c["parity"];
    out.push_back(k);
  }
  return out;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

io::ConfigKeyTable table_of(const std::string& reader) {
  static const std::map<std::string, io::ConfigKeyTable> tables{
      {"unet", unet::UNetConfig::keys()},
      {"vae_kl", vae::KLConfig::keys()},
      {"vae_tiny", vae::TinyConfig::keys()},
      {"clip_text", text::ClipTextConfig::keys()},
      {"clip_vision", vision::ClipVisionConfig::keys()},
      {"clip_model", vision::clip_model_config_keys()},
      {"sched_ddpm", sched::NoiseScheduleConfig::keys()},
      {"sched_ddim", sched::DdimOptions::keys()},
      {"sched_euler", sched::EulerDiscreteOptions::keys()},
      {"sched_euler_ancestral", sched::EulerAncestralOptions::keys()},
      {"sched_dpm", sched::DpmSolverOptions::keys()},
      {"sched_lcm", sched::LcmOptions::keys()},
  };
  auto it = tables.find(reader);
  TORCH_CHECK(it != tables.end(), "no table for reader ", reader);
  return it->second;
}

void expect_close(const std::string& what, const at::Tensor& ours, const at::Tensor& expected) {
  ASSERT_TRUE(ours.defined()) << what;
  ASSERT_EQ(ours.sizes(), expected.sizes()) << what;
  // The reference itself gives NaN for some configs it accepts (Euler-ancestral with the cosine
  // schedule: σ_max ≈ 2e4 rounds σ_to² − σ_up² below zero); a faithful port gives NaN there too.
  const at::Tensor a = ours.to(at::kDouble);
  const at::Tensor b = expected.to(at::kDouble);
  EXPECT_TRUE(at::equal(a.isnan(), b.isnan())) << what << ": NaN where the reference has a number or vice versa";
  const double err = (a - b).abs().masked_fill(a.isnan() & b.isnan(), 0.0).max().item<double>();
  EXPECT_LE(err, kTol) << what << ": max |err| " << err;
}

// Loads the case's config with our reader; with `parity`, also its weights, and compares outputs.
void load_case(const Case& c, bool parity) {
  at::NoGradGuard no_grad;
  const std::string config = c.dir + "/config.json";
  if (c.reader == "unet") {
    unet::UNet2DConditionModel net(unet::UNetConfig::from_file(config));
    if (!parity) return;
    io::load_state_dict(*net, io::load_file(c.dir + "/diffusion_pytorch_model.safetensors"), c.name);
    net->eval();
    Tensors t = io::load_file(c.dir + "/io.safetensors");
    unet::UNetInputs in;
    in.sample = t["sample"];
    in.timestep = t["timestep"];
    in.encoder_hidden_states = t["encoder_hidden_states"];
    if (t.count("text_embeds")) {
      in.text_embeds = t["text_embeds"];
      in.time_ids = t["time_ids"];
    }
    expect_close(c.name + " UNet output", net->forward(in), t["expected"]);
  } else if (c.reader == "vae_kl") {
    vae::AutoencoderKL net(vae::KLConfig::from_file(config));
    if (!parity) return;
    io::load_state_dict(*net, io::load_file(c.dir + "/diffusion_pytorch_model.safetensors"), c.name);
    net->eval();
    Tensors t = io::load_file(c.dir + "/io.safetensors");
    vae::LatentDistribution d = net->encode(t["image"]);
    expect_close(c.name + " latent_dist.mean", d.mean, t["mean"]);
    expect_close(c.name + " mean * scaling_factor", net->to_unet_latents(d), t["unet_latents"]);
    expect_close(c.name + " decode", net->decode(t["latents"]), t["decoded"]);
  } else if (c.reader == "vae_tiny") {
    vae::AutoencoderTiny net(vae::TinyConfig::from_file(config));
    if (!parity) return;
    io::load_state_dict(*net, io::load_file(c.dir + "/diffusion_pytorch_model.safetensors"), c.name);
    net->eval();
    Tensors t = io::load_file(c.dir + "/io.safetensors");
    expect_close(c.name + " encode", net->encode(t["image"]), t["encoded"]);
    expect_close(c.name + " decode", net->decode(t["latents"]), t["decoded"]);
    expect_close(c.name + " scale_latents", net->scale_latents(t["latents"]), t["scaled"]);
  } else if (c.reader == "clip_text") {
    if (!parity) {
      text::ClipTextModel net(text::ClipTextConfig::from_file(config), true, at::TensorOptions().device(at::kMeta));
      return;
    }
    text::ClipTextModel net = text::clip_text_from_pretrained(c.dir);
    Tensors t = io::load_file(c.dir + "/io.safetensors");
    text::ClipTextOutput o = net->forward(t["input_ids"]);
    expect_close(c.name + " last_hidden_state", o.last_hidden_state, t["last_hidden_state"]);
    expect_close(c.name + " hidden_states[-2]", o.penultimate_hidden_state, t["penultimate"]);
    if (t.count("text_embeds")) expect_close(c.name + " text_embeds", o.text_embeds, t["text_embeds"]);
    if (t.count("pooler_output")) expect_close(c.name + " pooler_output", o.pooler_output, t["pooler_output"]);
  } else if (c.reader == "clip_vision") {
    if (!parity) {
      vision::ClipVisionModel net(vision::ClipVisionConfig::from_file(config), true,
                                  at::TensorOptions().device(at::kMeta));
      return;
    }
    vision::ClipVisionModel net = vision::clip_vision_from_pretrained(c.dir);
    Tensors t = io::load_file(c.dir + "/io.safetensors");
    vision::ClipVisionOutput o = net->forward(t["pixel_values"]);
    expect_close(c.name + " last_hidden_state", o.last_hidden_state, t["last_hidden_state"]);
    expect_close(c.name + " hidden_states[-2]", o.penultimate_hidden_state, t["penultimate"]);
    if (t.count("image_embeds")) expect_close(c.name + " image_embeds", o.image_embeds, t["image_embeds"]);
    if (t.count("pooler_output")) expect_close(c.name + " pooler_output", o.pooler_output, t["pooler_output"]);
  } else if (c.reader == "clip_model") {
    vision::ClipModel net = vision::clip_model_from_pretrained(c.dir);
    if (!parity) return;
    Tensors t = io::load_file(c.dir + "/io.safetensors");
    vision::ClipModelOutput o = net->forward(t["input_ids"], t["pixel_values"]);
    expect_close(c.name + " logits_per_image", o.logits_per_image, t["logits_per_image"]);
    expect_close(c.name + " text_embeds", o.text_embeds, t["text_embeds"]);
    expect_close(c.name + " image_embeds", o.image_embeds, t["image_embeds"]);
  } else if (c.reader == "sched_ddpm") {
    sched::NoiseSchedule schedule(sched::NoiseScheduleConfig::from_config(read_json(config)));
    if (!parity) return;
    Tensors t = io::load_file(c.dir + "/io.safetensors");
    expect_close(c.name + " add_noise", schedule.add_noise(t["x0"], t["noise"], t["t"]), t["noisy"]);
  } else {
    const json j = read_json(config);
    std::unique_ptr<sched::Sampler> sampler;
    if (c.reader == "sched_ddim") {
      sampler = std::make_unique<sched::DdimSampler>(sched::DdimOptions::from_config(j));
    } else if (c.reader == "sched_euler") {
      sampler = std::make_unique<sched::EulerDiscreteSampler>(sched::EulerDiscreteOptions::from_config(j));
    } else if (c.reader == "sched_euler_ancestral") {
      sampler = std::make_unique<sched::EulerAncestralSampler>(sched::EulerAncestralOptions::from_config(j));
    } else if (c.reader == "sched_dpm") {
      sampler = std::make_unique<sched::DpmSolverSampler>(sched::DpmSolverOptions::from_config(j));
    } else if (c.reader == "sched_lcm") {
      sampler = std::make_unique<sched::LcmSampler>(sched::LcmOptions::from_config(j));
    } else {
      FAIL() << "unknown reader " << c.reader;
    }
    sampler->set_timesteps(4);
    if (!parity) return;
    // The chain diffusers ran: same timesteps, initial sigma and every step's prev_sample.
    Tensors t = io::load_file(c.dir + "/io.safetensors");
    expect_close(c.name + " timesteps", sampler->timesteps().to(at::kDouble), t["timesteps"]);
    EXPECT_NEAR(sampler->init_noise_sigma(), t["init_noise_sigma"].item<double>(), 1e-6) << c.name;
    at::Tensor x = t["sample0"];
    for (int64_t i = 0; i < 4; ++i) {
      const std::string s = std::to_string(i);
      const at::Tensor noise = t.count("noise" + s) ? t["noise" + s] : at::Tensor();
      x = sampler->step(t["model_output" + s], i, x, noise).prev_sample;
      expect_close(c.name + " prev_sample " + s, x, t["prev_sample" + s]);
    }
  }
}

class ConfigKeys : public ::testing::Test {
 protected:
  void SetUp() override {
    manifest_ = load_manifest();
    if (manifest_.is_null()) GTEST_SKIP() << "LA_CONFIG_KEYS_DIR does not name a config_keys_oracle.py output folder";
  }
  json manifest_;
};

// A key the reference has and our table lacks would be silently ignored (or read unchecked): the
// table must name every one, and only keys the reference has.
TEST_F(ConfigKeys, EveryReferenceKeyIsInTheTable) {
  for (const auto& [reader, keys] : manifest_["readers"].items()) {
    const io::ConfigKeyTable table = table_of(reader);
    std::set<std::string> reference;
    for (const auto& k : keys) {
      reference.insert(k.get<std::string>());
      EXPECT_NE(io::find_config_key(table, k.get<std::string>()), nullptr)
          << reader << ": reference key '" << k.get<std::string>() << "' is not in our table";
    }
    for (const io::ConfigKey& row : table)
      EXPECT_TRUE(reference.count(row.name)) << reader << ": table row '" << row.name << "' is no reference key";
    std::cout << reader << ": " << reference.size() << " reference keys, all classified\n";
  }
}

TEST_F(ConfigKeys, EveryKeyIsHonouredOrRefusedByName) {
  std::map<std::string, int> counts;
  for (const Case& c : cases_of(manifest_)) {
    SCOPED_TRACE(c.reader + "/" + c.name);
    const io::ConfigKey* row = c.key.empty() ? nullptr : io::find_config_key(table_of(c.reader), c.key);
    if (!c.key.empty() && row == nullptr) continue;  // reported by EveryReferenceKeyIsInTheTable
    const bool refuse = c.ours == "refuse" || (row && row->use == io::KeyUse::kDefaultOnly);
    std::string error;
    try {
      load_case(c, /*parity=*/!refuse && c.parity && c.ours == "load");
    } catch (const c10::Error& e) {
      error = e.what_without_backtrace();
    }
    if (refuse) {
      ++counts["refused"];
      EXPECT_FALSE(error.empty()) << c.key << " = " << c.value.dump() << " loaded; it must be refused";
      EXPECT_NE(error.find(c.key), std::string::npos) << "the refusal does not name '" << c.key << "': " << error;
    } else if (c.ours == "any" || !c.accepted) {
      ++counts["reference refuses"];
      std::cout << "  " << c.reader << "/" << c.name << ": the reference refuses (" << c.error << "); ours "
                << (error.empty() ? "loads" : "refuses") << "\n";
    } else {
      ++counts[c.parity ? "loaded, outputs match" : "loaded"];
      EXPECT_TRUE(error.empty()) << c.key << " = " << c.value.dump() << " must load: " << error;
    }
  }
  for (const auto& [what, n] : counts) std::cout << what << ": " << n << " cases\n";
}

}  // namespace
}  // namespace lookahead::model
