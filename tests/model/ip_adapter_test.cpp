// IP-Adapter Plus structure: the SDXL adapter has the published 191 tensors / 423,748,864
// parameters with diffusers' layer numbering; the image branch changes the output only while
// attached and given tokens; checkpoint shapes determine the Resampler settings.
#include <gtest/gtest.h>

#include "model/adapters/ip_adapter.h"

namespace lookahead::model::adapters {
namespace {

const at::TensorOptions kMeta = at::TensorOptions().device(at::kMeta);

TEST(IpAdapter, SdxlPlusFaceHasThePublishedLayout) {
  unet::UNet2DConditionModel unet(unet::UNetConfig::sdxl_base(), kMeta);
  IpAdapter ip(*unet, ResamplerOptions().tensor_options(kMeta));
  auto [tensors, elements] = unet::count_parameters(*ip);
  EXPECT_EQ(tensors, 191);
  EXPECT_EQ(elements, 423748864LL);
  EXPECT_EQ(unet::count_parameters(*ip->image_proj).second, 82961664LL);
  auto p = ip->named_parameters();
  EXPECT_EQ(p["image_proj.latents"].sizes(), (std::vector<int64_t>{1, 16, 1280}));
  EXPECT_EQ(p["image_proj.layers.3.0.to_kv.weight"].sizes(), (std::vector<int64_t>{2560, 1280}));
  EXPECT_EQ(p["image_proj.layers.3.1.3.weight"].sizes(), (std::vector<int64_t>{1280, 5120}));
  // Numbering: down_blocks.1 (640) -> 1..7, down_blocks.2 (1280) -> 9..47, up_blocks.0 (1280) ->
  // 49..107, up_blocks.1 (640) -> 109..119, mid_block (1280) -> 121..139.
  EXPECT_EQ(p["ip_adapter.1.to_k_ip.weight"].sizes(), (std::vector<int64_t>{640, 2048}));
  EXPECT_EQ(p["ip_adapter.9.to_v_ip.weight"].sizes(), (std::vector<int64_t>{1280, 2048}));
  EXPECT_EQ(p["ip_adapter.119.to_k_ip.weight"].sizes(), (std::vector<int64_t>{640, 2048}));
  EXPECT_EQ(p["ip_adapter.139.to_k_ip.weight"].sizes(), (std::vector<int64_t>{1280, 2048}));
  EXPECT_FALSE(p.contains("ip_adapter.141.to_k_ip.weight"));
  auto attns = unet->cross_attention_layers();
  ASSERT_EQ(attns.size(), 70u);
  EXPECT_EQ(attns[0].first, "down_blocks.1.attentions.0.transformer_blocks.0.attn2");
  EXPECT_EQ(attns[24].first, "up_blocks.0.attentions.0.transformer_blocks.0.attn2");
  EXPECT_EQ(attns[60].first, "mid_block.attentions.0.transformer_blocks.0.attn2");
}

TEST(IpAdapter, ResamplerSettingsComeFromShapes) {
  unet::UNet2DConditionModel unet(unet::UNetConfig::sdxl_base(), kMeta);
  IpAdapter ip(*unet, ResamplerOptions().tensor_options(kMeta));
  std::map<std::string, at::Tensor> sd;
  for (const auto& item : ip->named_parameters()) sd[item.key()] = item.value();
  auto o = infer_resampler_options(sd, "ip.safetensors");
  EXPECT_EQ(o.dim(), 1280);
  EXPECT_EQ(o.heads(), 20);
  EXPECT_EQ(o.depth(), 4);
  EXPECT_EQ(o.num_queries(), 16);
  EXPECT_EQ(o.output_dim(), 2048);
  EXPECT_EQ(o.ff_mult(), 4);
  sd.erase("image_proj.latents");
  EXPECT_THROW(infer_resampler_options(sd, "ip.safetensors"), c10::Error);
}

TEST(IpAdapter, ImageBranchActsOnlyWhenAttachedAndGiven) {
  at::manual_seed(5);
  auto cfg = unet::UNetConfig::from_json(R"({"block_out_channels": [16, 32],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1, "attention_head_dim": 2, "cross_attention_dim": 24, "norm_num_groups": 4,
    "use_linear_projection": true})",
                                         "tiny");
  unet::UNet2DConditionModel unet(cfg);
  IpAdapter ip(*unet, ResamplerOptions().dim(64).heads(1).depth(1).num_queries(4).embedding_dim(12).output_dim(24));
  unet::UNetInputs in;
  in.sample = at::randn({2, 4, 8, 8});
  in.timestep = at::tensor({10, 500});
  in.encoder_hidden_states = at::randn({2, 3, 24});
  at::NoGradGuard no_grad;
  at::Tensor plain = unet->forward(in);
  at::Tensor tokens = ip->image_tokens(at::randn({2, 7, 12}));
  EXPECT_EQ(tokens.sizes(), (std::vector<int64_t>{2, 4, 24}));
  in.ip_tokens = tokens;
  EXPECT_TRUE(at::equal(unet->forward(in), plain));  // not attached yet
  ip->attach(*unet);
  at::Tensor with_ip = unet->forward(in);
  EXPECT_GT((with_ip - plain).abs().max().item<float>(), 1e-4);
  in.ip_scale = 0.0;
  EXPECT_TRUE(at::allclose(unet->forward(in), plain, 1e-6, 1e-6));
  in.ip_tokens = at::Tensor();
  EXPECT_TRUE(at::equal(unet->forward(in), plain));  // no tokens, no branch
  IpAdapterImpl::detach(*unet);
  in.ip_tokens = tokens;
  in.ip_scale = 1.0;
  EXPECT_TRUE(at::equal(unet->forward(in), plain));
}

}  // namespace
}  // namespace lookahead::model::adapters
