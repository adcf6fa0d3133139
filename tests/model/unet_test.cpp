// UNet2DConditionModel structure: the SDXL base config builds on the meta device with exactly
// diffusers' 1680 tensors and 2,567,463,684 parameters and its key names; small configs run
// forward/backward; sharding units cover every parameter once; configs are validated.
#include <gtest/gtest.h>

#include <set>

#include "model/io/state_dict.h"
#include "model/unet/unet_2d_condition.h"

namespace lookahead::model::unet {
namespace {

const at::TensorOptions kMeta = at::TensorOptions().device(at::kMeta);

TEST(UNet, SdxlBaseHasDiffusersCountsWithoutAllocating) {
  UNet2DConditionModel unet(UNetConfig::sdxl_base(), kMeta);
  auto [tensors, elements] = count_parameters(*unet);
  EXPECT_EQ(tensors, 1680);
  EXPECT_EQ(elements, 2567463684LL);
  auto params = unet->named_parameters();
  // Spot checks of names and shapes from the diffusers state dict.
  auto shape = [&](const std::string& k) { return params[k].sizes().vec(); };
  EXPECT_EQ(shape("conv_in.weight"), (std::vector<int64_t>{320, 4, 3, 3}));
  EXPECT_EQ(shape("add_embedding.linear_1.weight"), (std::vector<int64_t>{1280, 2816}));
  EXPECT_EQ(shape("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"), (std::vector<int64_t>{640, 640}));
  EXPECT_EQ(shape("mid_block.attentions.0.transformer_blocks.9.attn2.to_k.weight"), (std::vector<int64_t>{1280, 2048}));
  EXPECT_EQ(shape("down_blocks.0.downsamplers.0.conv.weight"), (std::vector<int64_t>{320, 320, 3, 3}));
  EXPECT_EQ(shape("up_blocks.0.resnets.2.conv_shortcut.weight"), (std::vector<int64_t>{1280, 1920, 1, 1}));
  EXPECT_EQ(shape("up_blocks.2.resnets.0.conv1.weight"), (std::vector<int64_t>{320, 960, 3, 3}));
  EXPECT_EQ(shape("up_blocks.1.attentions.2.transformer_blocks.1.ff.net.0.proj.weight"),
            (std::vector<int64_t>{5120, 640}));
  EXPECT_EQ(shape("up_blocks.1.attentions.2.transformer_blocks.1.ff.net.2.weight"), (std::vector<int64_t>{640, 2560}));
  EXPECT_EQ(shape("down_blocks.2.attentions.1.proj_in.weight"), (std::vector<int64_t>{1280, 1280}));
  EXPECT_FALSE(params.contains("down_blocks.0.resnets.0.conv_shortcut.weight"));
  EXPECT_FALSE(params.contains("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.bias"));
  EXPECT_FALSE(params.contains("down_blocks.2.downsamplers.0.conv.weight"));
  EXPECT_TRUE(params["conv_out.weight"].is_meta());
}

TEST(UNet, UnitsCoverEveryParameterOnce) {
  UNet2DConditionModel unet(UNetConfig::sdxl_base(), kMeta);
  auto units = unet->units();
  std::multiset<std::string> covered;
  for (const auto& u : units) {
    if (u.module) {
      for (const auto& p : u.module->named_parameters()) covered.insert(u.name + "." + p.key());
    } else {
      auto children = unet->named_children();
      for (const auto& m : u.members)
        for (const auto& p : children[m]->named_parameters()) covered.insert(m + "." + p.key());
    }
  }
  std::multiset<std::string> all;
  for (const auto& p : unet->named_parameters()) all.insert(p.key());
  EXPECT_EQ(covered, all);
  // 17 resnets + 11 transformers + 2 down + 2 up samplers + 2 stems (diffusers' SDXL structure).
  EXPECT_EQ(units.size(), 34u);
  EXPECT_EQ(units.front().name, "stem_in");
  EXPECT_EQ(units[1].name, "down_blocks.0.resnets.0");
  EXPECT_EQ(units[3].name, "down_blocks.0.downsamplers.0");
  EXPECT_EQ(units.back().name, "stem_out");
}

UNetConfig tiny_config() {
  auto c = UNetConfig::from_json(R"({
    "_class_name": "UNet2DConditionModel", "in_channels": 4, "out_channels": 4,
    "block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1,
    "transformer_layers_per_block": [1, 2], "attention_head_dim": [2, 4], "cross_attention_dim": 48,
    "norm_num_groups": 8, "use_linear_projection": true, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 64})",
                                 "tiny");
  return c;
}

UNetInputs tiny_inputs(int64_t b, int64_t h, int64_t w) {
  UNetInputs in;
  in.sample = at::randn({b, 4, h, w});
  in.timestep = at::tensor({999, 10}, at::kLong).narrow(0, 0, b);
  in.encoder_hidden_states = at::randn({b, 7, 48});
  in.text_embeds = at::randn({b, 16});
  in.time_ids = at::randn({b, 6}) * 100;
  return in;
}

TEST(UNet, TinyForwardBackwardShapesAndGradients) {
  at::manual_seed(0);
  UNet2DConditionModel unet(tiny_config());
  auto out = unet->forward(tiny_inputs(2, 16, 16));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 4, 16, 16}));
  out.square().mean().backward();
  for (const auto& p : unet->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
  }
  // Odd latent sizes go through the upsample_size path.
  auto odd = unet->forward(tiny_inputs(1, 9, 11));
  EXPECT_EQ(odd.sizes(), (std::vector<int64_t>{1, 4, 9, 11}));
}

TEST(UNet, ConfigErrorsNameTheKey) {
  auto expect_error = [](const std::string& json, const std::string& fragment) {
    try {
      UNetConfig::from_json(json, "bad.json");
      ADD_FAILURE() << "expected an error mentioning " << fragment;
    } catch (const c10::Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("bad.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    }
  };
  expect_error(R"({"block_out_channels": [32], "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"],
                  "layers_per_block": 1, "attention_head_dim": 1, "cross_attention_dim": 8, "norm_eps": "small"})",
               "norm_eps = \"small\" has the wrong type");
  expect_error("{not json", "not valid JSON");
  expect_error(R"({"block_out_channels": [32], "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"],
                  "layers_per_block": 1, "attention_head_dim": 3, "cross_attention_dim": 8, "norm_num_groups": 8})",
               "does not split into 3 heads");
  expect_error(R"({"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"],
                  "layers_per_block": 1, "attention_head_dim": 2, "cross_attention_dim": 8})",
               "same length");
  expect_error(R"({"block_out_channels": [32], "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"],
                  "layers_per_block": 1, "attention_head_dim": 2, "cross_attention_dim": 8, "norm_num_groups": 8,
                  "time_cond_proj_dim": 256})",
               "time_cond_proj_dim");
  expect_error(R"({"block_out_channels": [32], "down_block_types": ["AttnDownBlock2D"], "up_block_types": ["UpBlock2D"],
                  "layers_per_block": 1, "attention_head_dim": 2, "cross_attention_dim": 8})",
               "AttnDownBlock2D");
  expect_error(R"({"block_out_channels": [32], "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"],
                  "layers_per_block": [1, 2], "attention_head_dim": 2, "cross_attention_dim": 8})",
               "layers_per_block");
}

TEST(UNet, ConfigRoundTripsThroughJson) {
  UNetConfig a = UNetConfig::sdxl_base();
  UNetConfig b = UNetConfig::from_json(a.to_json(), "roundtrip");
  // Loadable by diffusers, which raises for num_attention_heads (heads go in attention_head_dim).
  EXPECT_EQ(a.to_json().find("num_attention_heads"), std::string::npos);
  EXPECT_EQ(a.block_out_channels, b.block_out_channels);
  EXPECT_EQ(a.transformer_layers_per_block, b.transformer_layers_per_block);
  EXPECT_EQ(a.reverse_transformer_layers_per_block, b.reverse_transformer_layers_per_block);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.projection_class_embeddings_input_dim, b.projection_class_embeddings_input_dim);
  UNet2DConditionModel unet(b, kMeta);
  EXPECT_EQ(count_parameters(*unet).second, 2567463684LL);
}

TEST(StateDict, ReportsMissingUnexpectedAndMismatched) {
  UNet2DConditionModel unet(tiny_config());
  std::map<std::string, at::Tensor> sd;
  for (const auto& p : unet->named_parameters()) sd[p.key()] = at::zeros_like(p.value());
  sd.erase("conv_in.weight");
  sd["conv_out.bias"] = at::zeros({5});
  sd["not.a.key"] = at::zeros({1});
  auto report = io::load_state_dict(*unet, sd, "weights.safetensors", /*strict=*/false);
  EXPECT_EQ(report.missing, std::vector<std::string>{"conv_in.weight"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"not.a.key"});
  ASSERT_EQ(report.mismatched.size(), 1u);
  EXPECT_NE(report.mismatched[0].find("conv_out.bias"), std::string::npos);
  EXPECT_EQ(unet->named_parameters()["conv_out.weight"].abs().sum().item<float>(), 0.0f);  // others loaded
  try {
    io::load_state_dict(*unet, sd, "weights.safetensors");
    ADD_FAILURE() << "strict load must throw";
  } catch (const c10::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("weights.safetensors does not match the network"), std::string::npos) << msg;
    EXPECT_NE(msg.find("not.a.key"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace lookahead::model::unet
