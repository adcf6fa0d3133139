// Parity of model/vae with diffusers: replays every case tests/parity/vae_oracle.py wrote to the
// folder named by LA_VAE_PARITY_DIR (AutoencoderTiny with the real TAESDXL layout and small random
// configs, AutoencoderKL small configs), through the modules directly and through the
// `lookahead model run` runner, and checks every output within 1e-4 (float32).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "model/run/model_runners.h"
#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/unet/unet_2d_condition.h"
#include "model/vae/autoencoder_kl.h"
#include "model/vae/autoencoder_tiny.h"

namespace lookahead::model::vae {
namespace {

constexpr double kTol = 1e-4;

struct Case {
  std::string name, kind, dir;
  int64_t params = 0, tensors = 0;
};

std::vector<Case> load_cases() {
  const char* dir = std::getenv("LA_VAE_PARITY_DIR");
  if (!dir) return {};
  std::ifstream in(std::string(dir) + "/cases.json");
  if (!in) return {};
  auto j = nlohmann::json::parse(in);
  std::cout << "vae parity: oracle seed " << j["seed"] << "\n";
  std::vector<Case> cases;
  for (const auto& c : j["cases"])
    cases.push_back({c["name"].get<std::string>(), c["kind"].get<std::string>(), c["dir"].get<std::string>(),
                     c["params"].get<int64_t>(), c["tensors"].get<int64_t>()});
  return cases;
}

double max_error(const at::Tensor& ours, const at::Tensor& expected) {
  EXPECT_EQ(ours.sizes(), expected.sizes());
  if (ours.sizes() != expected.sizes()) return 1e30;
  return (ours.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>();
}

void expect_close(const std::string& what, const at::Tensor& ours, const at::Tensor& expected) {
  double err = max_error(ours, expected);
  std::cout << "  " << what << ": max |err| " << err << "\n";
  EXPECT_LE(err, kTol) << what;
}

class VaeParity : public ::testing::Test {
 protected:
  void SetUp() override {
    cases_ = load_cases();
    if (cases_.empty()) GTEST_SKIP() << "LA_VAE_PARITY_DIR does not name an oracle output folder";
  }
  std::vector<Case> cases_;
};

TEST_F(VaeParity, ModulesMatchDiffusers) {
  at::NoGradGuard no_grad;
  for (const auto& c : cases_) {
    SCOPED_TRACE(c.name);
    std::cout << c.name << "\n";
    auto weights = io::load_file(c.dir + "/model/diffusion_pytorch_model.safetensors");
    auto in = io::load_file(c.dir + "/inputs.safetensors");
    auto expected = io::load_file(c.dir + "/expected.safetensors");
    const std::string config = c.dir + "/model/config.json";
    std::shared_ptr<torch::nn::Module> module;
    if (c.kind == "tiny") {
      AutoencoderTiny taesd(TinyConfig::from_file(config));
      io::load_state_dict(*taesd, weights, c.name);
      taesd->eval();
      expect_close(c.name + " decode", taesd->decode(in["latents"]), expected["image"]);
      expect_close(c.name + " encode", taesd->encode(in["image"]), expected["latents"]);
      module = taesd.ptr();
    } else {
      AutoencoderKL vae(KLConfig::from_file(config));
      io::load_state_dict(*vae, weights, c.name);
      vae->eval();
      LatentDistribution d = vae->encode(in["image"]);
      expect_close(c.name + " latent_dist.mean", d.mean, expected["latent_mean"]);
      expect_close(c.name + " latent_dist.std", d.std, expected["latent_std"]);
      expect_close(c.name + " sample * scaling_factor", vae->to_unet_latents(d, in["noise"]), expected["latents"]);
      expect_close(c.name + " decode", vae->decode(in["latents"]), expected["raw_image"]);
      expect_close(c.name + " decode(latents / scaling_factor)", vae->decode(vae->from_unet_latents(in["latents"])),
                   expected["image"]);
      module = vae.ptr();
    }
    auto [tensors, elements] = unet::count_parameters(*module);
    EXPECT_EQ(tensors, c.tensors);
    EXPECT_EQ(elements, c.params);
  }
}

TEST_F(VaeParity, RunnerMatchesDiffusers) {
  for (const auto& c : cases_) {
    SCOPED_TRACE(c.name);
    std::cout << c.name << " (runner)\n";
    model::run::NetworkRun run;
    run.model = c.kind == "tiny" ? (c.name.starts_with("taesdxl") ? "taesdxl" : "taesd") : "vae";
    run.config = c.dir + "/model/config.json";
    run.weights = c.dir + "/model/diffusion_pytorch_model.safetensors";
    run.inputs = c.dir + "/inputs.safetensors";
    run.out = c.dir + "/runner_out.safetensors";
    ASSERT_EQ(model::run::run_vae_network(run), 0);
    auto out = io::load_file(run.out);
    auto expected = io::load_file(c.dir + "/expected.safetensors");
    std::vector<std::string> names{"image", "latents"};
    if (c.kind == "kl") names.insert(names.end(), {"latent_mean", "latent_std"});
    EXPECT_EQ(out.size(), names.size());
    for (const auto& n : names) {
      ASSERT_TRUE(out.contains(n)) << n;
      expect_close(c.name + " runner " + n, out[n], expected[n]);
    }
  }
}

// diffusers' pipelines run any VAE whose config sets force_upcast in float32 when asked for
// float16, AutoencoderTiny included: asked for float16, the runner must still match float32.
TEST_F(VaeParity, RunnerUpcastsForceUpcastToFloat32) {
  for (const auto& c : cases_) {
    SCOPED_TRACE(c.name);
    auto config = nlohmann::json::parse(std::ifstream(c.dir + "/model/config.json"));
    config["force_upcast"] = true;
    const std::string upcast_config = c.dir + "/upcast_config.json";
    std::ofstream(upcast_config) << config.dump();
    model::run::NetworkRun run;
    run.model = c.kind == "tiny" ? "taesd" : "vae";
    run.config = upcast_config;
    run.weights = c.dir + "/model/diffusion_pytorch_model.safetensors";
    run.inputs = c.dir + "/inputs.safetensors";
    run.out = c.dir + "/runner_upcast_out.safetensors";
    run.dtype = at::kHalf;
    ASSERT_EQ(model::run::run_vae_network(run), 0);
    auto out = io::load_file(run.out);
    auto expected = io::load_file(c.dir + "/expected.safetensors");
    for (const char* n : {"image", "latents"}) expect_close(c.name + " upcast runner " + n, out[n], expected[n]);
  }
}

TEST(VaeRunner, RejectsUnknownModel) {
  model::run::NetworkRun run;
  run.model = "vqgan";
  EXPECT_THROW(model::run::run_vae_network(run), c10::Error);
}

}  // namespace
}  // namespace lookahead::model::vae
