// Parity of model/pipeline/sdxl_text_to_image with diffusers' StableDiffusionXLPipeline on the small
// random SDXL-family pipelines tests/parity/text_to_image_oracle.py saved (both tokenizers the real
// CLIP vocabulary), folder named by LA_T2I_PARITY_DIR: per case (1 and 4 steps of sdxl-turbo's
// scheduler at batch 1 and 3, 3 steps of SDXL base's with guidance 5) the initial latents are
// bit-exact, the prompt conditioning and the first UNet output within 1e-4, the final latents
// within 1e-4, and the uint8 images equal on >= 99.9 % of values and never more than 1 apart.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "model/io/safetensors.h"
#include "model/pipeline/sdxl_text_to_image.h"

namespace lookahead::model::pipeline {
namespace {

constexpr double kTol = 1e-4;

std::string oracle_dir() {
  const char* dir = std::getenv("LA_T2I_PARITY_DIR");
  return dir ? dir : "";
}

double max_error(const at::Tensor& ours, const at::Tensor& expected) {
  EXPECT_EQ(ours.sizes(), expected.sizes());
  if (ours.sizes() != expected.sizes()) return 1e30;
  return (ours.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>();
}

void expect_close(const std::string& what, const at::Tensor& ours, const at::Tensor& expected, double tol = kTol) {
  const double err = max_error(ours, expected);
  std::cout << "  " << what << ": max |err| " << err << "\n";
  EXPECT_LE(err, tol) << what;
}

TEST(TextToImageParity, MatchesDiffusersPipeline) {
  const std::string dir = oracle_dir();
  ASSERT_FALSE(dir.empty()) << "LA_T2I_PARITY_DIR is not set (the oracle writes it)";
  std::ifstream in(dir + "/cases.json");
  ASSERT_TRUE(in) << dir << "/cases.json";
  const auto cases = nlohmann::json::parse(in)["cases"];
  ASSERT_EQ(cases.size(), 5u);
  for (const auto& c : cases) {
    const std::string name = c["name"];
    std::cout << name << "\n";
    SdxlTextToImage pipe =
        SdxlTextToImage::from_pretrained(dir + "/" + c["folder"].get<std::string>(), at::kCPU, at::kFloat);
    const auto ref = io::load_file(dir + "/" + name + ".safetensors");
    const std::vector<std::string> prompts = c["prompts"];
    const std::vector<uint64_t> seeds = c["seeds"];
    TextToImageOptions options;
    options.steps = c["steps"];
    options.guidance_scale = c["guidance"];

    // The first UNet call on diffusers' own inputs, and our conditioning against those inputs.
    const text::SdxlPromptEmbeds cond = pipe.encode_prompts(prompts);
    const int64_t b = static_cast<int64_t>(prompts.size());
    const at::Tensor ref_context = ref.at("encoder_hidden_states"), ref_pooled = ref.at("text_embeds");
    expect_close(name + " prompt_embeds", cond.context, ref_context.slice(0, ref_context.size(0) - b));
    expect_close(name + " pooled", cond.pooled, ref_pooled.slice(0, ref_pooled.size(0) - b));
    unet::UNetInputs u;
    u.sample = ref.at("sample");
    u.timestep = ref.at("timestep").reshape({});
    u.encoder_hidden_states = ref_context;
    u.text_embeds = ref_pooled;
    u.time_ids = ref.at("time_ids");
    at::Tensor eps;
    {
      at::NoGradGuard no_grad;
      eps = pipe.unet()->forward(u);
    }
    expect_close(name + " unet output", eps, ref.at("unet_out"));

    const TextToImageOutput out = pipe.generate(prompts, seeds, options);
    EXPECT_TRUE(at::equal(out.initial_latents, ref.at("initial_latents"))) << name << ": initial latents not bit-exact";
    expect_close(name + " final latents", out.final_latents, ref.at("final_latents"));
    const at::Tensor expected = ref.at("images");
    ASSERT_EQ(out.images.sizes(), expected.sizes()) << name;
    ASSERT_EQ(out.images.scalar_type(), at::kByte);
    const at::Tensor diff = (out.images.to(at::kInt) - expected.to(at::kInt)).abs();
    const double equal = diff.eq(0).to(at::kDouble).mean().item<double>();
    const int64_t worst = diff.max().item<int>();
    std::cout << "  images: " << 100 * equal << " % of values equal, max |diff| " << worst << "\n";
    EXPECT_GE(equal, 0.999) << name;
    EXPECT_LE(worst, 1) << name;
  }
}

}  // namespace
}  // namespace lookahead::model::pipeline
