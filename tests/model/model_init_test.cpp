// model/init: random_weight draws by (seed, name) alone with the init rules of its header, and the
// key tables of the public files have the published tensor and element counts at SDXL size
// (architecture-spec.md §1.6, §3.1, Appendix E), without allocating a tensor.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "model/init/random_weights.h"
#include "model/init/weight_tables.h"
#include "model/lookahead/lookahead_model.h"

namespace lookahead::model::init {
namespace {

io::TensorInfo decl(std::string name, at::ScalarType dtype, std::vector<int64_t> shape) {
  io::TensorInfo e;
  e.name = std::move(name);
  e.dtype = dtype;
  e.shape = std::move(shape);
  return e;
}

int64_t elements(const Entries& entries, const std::string& skip_suffix = "") {
  int64_t n = 0;
  for (const auto& e : entries)
    if (skip_suffix.empty() || !e.name.ends_with(skip_suffix)) n += e.numel();
  return n;
}

TEST(RandomWeight, DependsOnSeedAndNameOnly) {
  const auto w = decl("down_blocks.0.resnets.0.conv1.weight", at::kFloat, {320, 320, 3, 3});
  const at::Tensor a = random_weight(5, w), b = random_weight(5, w);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, random_weight(6, w)));
  auto other = w;
  other.name = "down_blocks.0.resnets.0.conv2.weight";
  EXPECT_FALSE(at::equal(a, random_weight(5, other)));
  EXPECT_NE(name_seed(0, "a"), name_seed(0, "b"));
  EXPECT_NEAR(a.std().item<double>(), kInitStd, 5e-4);
  EXPECT_NEAR(a.mean().item<double>(), 0.0, 5e-4);
  // Stored in the declared dtype: the float16 draw is the float32 draw rounded.
  auto half = w;
  half.dtype = at::kHalf;
  const at::Tensor h = random_weight(5, half);
  EXPECT_EQ(h.scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(h, a.to(at::kHalf)));
}

TEST(RandomWeight, NormsBiasesAndBuffersHaveTheirNeutralValues) {
  EXPECT_TRUE(at::equal(random_weight(1, decl("conv_in.bias", at::kHalf, {320})), at::zeros({320}, at::kHalf)));
  EXPECT_TRUE(at::equal(random_weight(1, decl("conv_norm_out.weight", at::kFloat, {320})), at::ones({320})));
  EXPECT_TRUE(at::equal(random_weight(1, decl("bn.running_var", at::kFloat, {64})), at::ones({64})));
  EXPECT_TRUE(at::equal(random_weight(1, decl("bn.running_mean", at::kFloat, {64})), at::zeros({64})));
  EXPECT_EQ(random_weight(1, decl("bn.num_batches_tracked", at::kLong, {})).item<int64_t>(), 0);
  const at::Tensor ids = random_weight(1, decl("vision_model.embeddings.position_ids", at::kLong, {1, 257}));
  EXPECT_TRUE(at::equal(ids, at::arange(257, at::kLong).view({1, 257})));
  // A 1-D tensor not named weight (CLIP's class embedding) is drawn.
  EXPECT_GT(
      random_weight(1, decl("vision_model.embeddings.class_embedding", at::kFloat, {1280})).abs().sum().item<double>(),
      1.0);
}

TEST(WeightTables, SdxlUNetAndTextEncodersHaveThePublishedCounts) {
  const Entries unet = unet_entries(unet::UNetConfig::sdxl_base(), at::kHalf);
  EXPECT_EQ(unet.size(), 1680u);
  EXPECT_EQ(elements(unet), 2'567'463'684);
  for (const auto& e : unet) EXPECT_EQ(e.dtype, at::kHalf) << e.name;
  const Entries te1 = clip_text_entries(text::ClipTextConfig::clip_l(), false, at::kHalf);
  const Entries te2 = clip_text_entries(text::ClipTextConfig::clip_bigg(), true, at::kHalf);
  EXPECT_EQ(te1.size(), 196u);
  EXPECT_EQ(elements(te1), 123'060'480);
  EXPECT_EQ(te2.size(), 517u);
  EXPECT_EQ(elements(te2), 694'659'840);
  const Entries vision = clip_vision_entries(vision::ClipVisionConfig::vit_h14(), at::kFloat);
  EXPECT_EQ(vision.size(), 521u);  // 520 weights + position_ids
  EXPECT_EQ(elements(vision, "position_ids"), 632'076'800);
  EXPECT_EQ(vision.back().name, "vision_model.embeddings.position_ids");
  EXPECT_EQ(vision.back().dtype, at::kLong);
  EXPECT_EQ(vision.back().shape, (std::vector<int64_t>{1, 257}));
}

TEST(WeightTables, LcmLoraIsTheKohyaLayoutOf788Layers) {
  const Entries lora = lcm_lora_entries(unet::UNetConfig::sdxl_base(), 64, at::kHalf);
  EXPECT_EQ(lora.size(), 3u * 788u);
  EXPECT_EQ(elements(lora, ".alpha"), 196'751'360);
  std::set<std::string> names;
  for (const auto& e : lora) names.insert(e.name);
  for (const char* key : {"lora_unet_down_blocks_0_downsamplers_0_conv.lora_down.weight",
                          "lora_unet_mid_block_attentions_0_transformer_blocks_9_ff_net_0_proj.lora_up.weight",
                          "lora_unet_up_blocks_0_resnets_2_time_emb_proj.alpha"})
    EXPECT_TRUE(names.count(key)) << key;
  EXPECT_FALSE(names.count("lora_unet_conv_in.lora_down.weight"));  // not a target
  for (const auto& e : lora) {
    if (e.name == "lora_unet_down_blocks_0_downsamplers_0_conv.lora_down.weight") {
      EXPECT_EQ(e.shape, (std::vector<int64_t>{64, 320, 3, 3}));
    } else if (e.name == "lora_unet_down_blocks_0_downsamplers_0_conv.lora_up.weight") {
      EXPECT_EQ(e.shape, (std::vector<int64_t>{320, 64, 1, 1}));
    } else if (e.name.ends_with(".alpha")) {
      EXPECT_TRUE(e.shape.empty()) << e.name;
    }
  }
}

TEST(WeightTables, IpAdapterPlusFaceHasTheResamplerAnd70CrossAttentionPairs) {
  const Entries ip =
      ip_adapter_entries(unet::UNetConfig::sdxl_base(), LookaheadModelConfig::sdxl().resampler, at::kHalf);
  int64_t kv = 0;
  bool latents = false;
  for (const auto& e : ip) {
    kv += e.name.rfind("ip_adapter.", 0) == 0;
    if (e.name == "image_proj.latents") latents = e.shape == std::vector<int64_t>{1, 16, 1280};
  }
  EXPECT_EQ(kv, 140);
  EXPECT_TRUE(latents);
}

}  // namespace
}  // namespace lookahead::model::init
