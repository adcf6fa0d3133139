// trainer/flop_counter against PyTorch's own FLOP counter (torch.utils.flop_counter, run by
// tests/trainer/flop_oracle.py) on diffusers' SDXL UNet: the same configuration and input shapes,
// both on the meta device. The forward's count and the backward's (every weight trainable, the
// sample not) must agree to 1e-6 (they count the same operators: element-wise ones are in neither).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>

#include "model/unet/unet_2d_condition.h"
#include "trainer/activation_estimate.h"
#include "trainer/flop_counter.h"

namespace lookahead::trainer {
namespace {

/// Runs the oracle; returns {forward, backward}.
std::pair<double, double> oracle(int64_t batch, int64_t latent) {
  const char* python = std::getenv("LA_PYTHON");
  const char* script = std::getenv("LA_FLOP_ORACLE");
  if (python == nullptr || script == nullptr) throw std::runtime_error("LA_PYTHON and LA_FLOP_ORACLE must be set");
  const std::string cmd =
      std::string(python) + " " + script + " " + std::to_string(batch) + " " + std::to_string(latent);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) throw std::runtime_error("cannot run " + cmd);
  std::string text;
  std::array<char, 256> buf{};
  while (fgets(buf.data(), buf.size(), pipe.get()) != nullptr) text += buf.data();
  std::istringstream in(text);
  double forward = 0, backward = 0;
  if (!(in >> forward >> backward)) throw std::runtime_error("the oracle printed '" + text + "' (" + cmd + ")");
  return {forward, backward};
}

TEST(FlopParity, SdxlUnetMatchesTorchFlopCounterOnDiffusers) {
  register_meta_kernels();
  const auto meta = at::TensorOptions().device(at::kMeta);
  model::unet::UNet2DConditionModel unet(model::unet::UNetConfig::sdxl_base(), meta);
  for (auto& p : unet->parameters()) p.set_requires_grad(true);
  for (const auto& [batch, latent] : {std::pair<int64_t, int64_t>{1, 128}, {2, 32}}) {
    model::unet::UNetInputs in;
    in.sample = at::empty({batch, 4, latent, latent}, meta);
    in.timestep = at::full({batch}, 10, meta.dtype(at::kLong));
    in.encoder_hidden_states = at::empty({batch, 77, 2048}, meta);
    in.text_embeds = at::empty({batch, 1280}, meta);
    in.time_ids = at::empty({batch, 6}, meta);
    FlopCounter counter;
    (void)unet->forward(in);
    const auto [forward, backward] = oracle(batch, latent);
    std::printf("batch %lld, %lldx%lld latents: forward %.6g (torch %.6g), backward %.6g (torch %.6g)\n",
                static_cast<long long>(batch), static_cast<long long>(latent), static_cast<long long>(latent),
                counter.flops().forward, forward, counter.flops().backward, backward);
    EXPECT_NEAR(counter.flops().forward / forward, 1.0, 1e-6);
    EXPECT_NEAR(counter.flops().backward / backward, 1.0, 1e-6);
  }
}

}  // namespace
}  // namespace lookahead::trainer
