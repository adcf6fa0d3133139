// The lookahead loss's gradient path on a tiny configuration, in float64: ArcFace cosine loss ->
// differentiable face warp -> TAESD decoder -> one-step LCM preview -> UNet (α-scaled LCM-LoRA,
// extended self-attention over the KV encoder's reference K/V, IP K/V) -> KV encoder LoRAs,
// KV-head LoRAs, to_k_ip / to_v_ip and the Resampler. The analytic gradient must be finite,
// nonzero for every trainable group, and agree with a central finite difference.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "model/adapters/ip_adapter.h"
#include "model/adapters/kv_encoder.h"
#include "model/face/align.h"
#include "model/face/arcface_irse.h"
#include "model/face/layers.h"
#include "model/nn/lora_loader.h"
#include "model/sched/lcm_preview.h"
#include "model/vae/autoencoder_tiny.h"

namespace lookahead::model {
namespace {

const at::TensorOptions kF64 = at::TensorOptions().dtype(at::kDouble);

unet::UNetConfig tiny_unet() {
  return unet::UNetConfig::from_json(R"({"block_out_channels": [16, 32, 32],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1, "transformer_layers_per_block": [1, 1, 1], "attention_head_dim": 2,
    "cross_attention_dim": 24, "norm_num_groups": 4, "use_linear_projection": true,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 4, "projection_class_embeddings_input_dim": 40})",
                                     "tiny");
}

struct Pipeline {
  Pipeline()
      : unet(tiny_unet(), kF64),
        ip(*unet, adapters::ResamplerOptions().dim(16).heads(1).depth(1).num_queries(4).embedding_dim(12).output_dim(24).tensor_options(kF64)),
        taesd(vae::TinyConfig{.encoder_block_out_channels = {8, 8, 8, 8}, .decoder_block_out_channels = {8, 8, 8, 8}}, kF64),
        arcface(face::IRSEOptions().tensor_options(kF64)) {
    ip->attach(*unet);
    encoder = std::make_unique<adapters::KvEncoder>(unet, adapters::KvEncoderOptions());
    lcm = nn::create_trainable_lora(*unet, "lcm", 4, 4.0, [](const std::string& p) {
      return p.ends_with("to_q") || p.ends_with("to_out.0") || p.ends_with("proj_in") || p.ends_with("conv1");
    });
    lcm.scale->value = 0.7;  // α
    at::NoGradGuard no_grad;
    for (auto& [k, t] : lcm.parameters) t.normal_(0.0, 0.3);
    for (auto& [k, t] : encoder->trainable_parameters()) {
      at::Tensor v = t;
      v.normal_(0.0, 0.3);
    }
    for (auto& p : unet->parameters()) p.set_requires_grad(false);
    for (auto& [k, t] : lcm.parameters) t.set_requires_grad(false);
    for (auto& p : taesd->parameters()) p.set_requires_grad(false);
    for (auto& p : arcface->parameters()) p.set_requires_grad(false);
    arcface->eval();
    // A random IR-SE50 has millions of PReLU kinks with random slopes; a finite difference then
    // crosses kinks at any usable step and converges only as h -> 0. Slopes of 1 make it smooth
    // (the same operations run, and their gradients are what is checked).
    for (auto& m : arcface->modules())
      if (auto* prelu = dynamic_cast<face::PReluImpl*>(m.get())) prelu->weight.fill_(1.0);
    // Fixed inputs of one lookahead step (batch 2, 8x8 latents -> 64x64 previews).
    clip_features = at::randn({2, 5, 12}, kF64);
    z_tgt = at::randn({2, 4, 8, 8}, kF64);
    z_ref = at::randn({2, 4, 8, 8}, kF64);
    noise = at::randn({2, 4, 8, 8}, kF64);
    t = at::tensor({399, 759}, at::kLong);
    prompt = at::randn({2, 3, 24}, kF64);
    text_embeds = at::randn({2, 16}, kF64);
    time_ids = at::randn({2, 6}, kF64);
    // Five landmarks per preview (pixels of the 64x64 image) near the template's layout.
    landmarks = (face::arcface_template().to(at::kDouble) * (64.0 / 112.0)).unsqueeze(0).repeat({2, 1, 1}) +
                at::randn({2, 5, 2}, kF64);
    at::Tensor r = at::randn({2, 512}, kF64);
    reference_embedding = r / r.norm(2, {1}, true);
  }

  /// L_LH = mean over the batch of 1 - cos(ArcFace(align(TAESD(preview))), reference).
  at::Tensor loss() {
    sched::NoiseSchedule schedule;
    at::Tensor tokens = ip->image_tokens(clip_features);  // [2, 4, 24]
    unet::UNetInputs ref;
    ref.sample = schedule.add_noise(z_ref, noise, t);
    ref.timestep = t;
    ref.encoder_hidden_states = prompt;
    ref.text_embeds = text_embeds;
    ref.time_ids = time_ids;
    auto kv = std::make_shared<nn::ReferenceKv>(encoder->forward(ref, tokens));
    unet::UNetInputs in = ref;
    in.sample = schedule.add_noise(z_tgt, noise, t);
    in.reference = kv;
    in.adapters = std::vector<std::string>{"lcm"};
    at::Tensor eps = unet->forward(in);
    at::Tensor z0 = sched::lcm_preview(schedule, in.sample, eps, t);   // [2, 4, 8, 8]
    at::Tensor image = taesd->decode(z0);                              // [2, 3, 64, 64]
    at::Tensor faces = face::align_faces(image, landmarks);            // [2, 3, 112, 112]
    at::Tensor e = arcface->forward(faces);                            // [2, 512], unit norm
    return (1.0 - (e * reference_embedding).sum(1)).mean();
  }

  /// Trainable tensors by group.
  std::map<std::string, std::vector<at::Tensor>> groups() {
    std::map<std::string, std::vector<at::Tensor>> g;
    for (auto& [k, t] : encoder->trainable_parameters())
      g[k.find("extract_kv1") != std::string::npos ? "kv_heads" : "encoder_lora"].push_back(t);
    for (auto& item : ip->named_parameters())
      g[item.key().rfind("image_proj", 0) == 0 ? "resampler" : "to_kv_ip"].push_back(item.value());
    return g;
  }

  unet::UNet2DConditionModel unet;
  adapters::IpAdapter ip;
  vae::AutoencoderTiny taesd;
  face::IRSE arcface;
  std::unique_ptr<adapters::KvEncoder> encoder;
  nn::TrainableLora lcm;
  at::Tensor clip_features, z_tgt, z_ref, noise, t, prompt, text_embeds, time_ids, landmarks, reference_embedding;
};

TEST(GradientPath, ArcFaceLossReachesTheEncoderAndAgreesWithFiniteDifferences) {
  at::manual_seed(11);
  Pipeline p;
  at::Tensor l = p.loss();
  ASSERT_TRUE(std::isfinite(l.item<double>()));
  l.backward();
  auto groups = p.groups();
  ASSERT_EQ(groups.size(), 4u);
  for (auto& [name, tensors] : groups) {
    double norm = 0;
    for (auto& t : tensors) {
      ASSERT_TRUE(t.grad().defined()) << name;
      ASSERT_TRUE(at::isfinite(t.grad()).all().item<bool>()) << name;
      norm += t.grad().square().sum().item<double>();
    }
    EXPECT_GT(norm, 0.0) << name << ": no gradient reaches this group";
  }
  // Frozen networks receive no gradient.
  for (auto& q : p.unet->parameters()) EXPECT_FALSE(q.grad().defined());

  // Directional derivative along a random direction per group vs. a central difference.
  // The remaining ReLUs (TAESD, SE gates) still bend the loss: h = 1e-7 keeps the truncation error
  // near 1e-6 relative, while float64 round-off stays near 1e-16 / h = 1e-9.
  const double h = 1e-7;
  for (auto& [name, tensors] : groups) {
    std::vector<at::Tensor> dirs;
    double analytic = 0;
    for (auto& t : tensors) {
      dirs.push_back(at::randn(t.sizes(), kF64));
      analytic += (t.grad() * dirs.back()).sum().item<double>();
    }
    auto shifted = [&](double s) {
      at::NoGradGuard no_grad;
      for (size_t i = 0; i < tensors.size(); ++i) tensors[i].add_(dirs[i], s);
      double v = p.loss().item<double>();
      for (size_t i = 0; i < tensors.size(); ++i) tensors[i].sub_(dirs[i], s);
      return v;
    };
    const double numeric = (shifted(h) - shifted(-h)) / (2 * h);
    std::printf("%-12s analytic %+.12e  finite difference %+.12e\n", name.c_str(), analytic, numeric);
    EXPECT_NEAR(analytic, numeric, 1e-5 * std::abs(numeric) + 1e-8)
        << name << ": analytic " << analytic << " vs finite difference " << numeric;
    EXPECT_GT(std::abs(analytic), 1e-10) << name;
  }
}

}  // namespace
}  // namespace lookahead::model
