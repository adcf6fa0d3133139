// LoRA layers and loaders: the unfused update equals the fused weight, the run-time scale acts
// without re-attaching, kohya (diffusers or SGM names), PEFT and diffusers files map onto diffusers
// paths as diffusers maps them, bad files are rejected whole naming the key, and trainable adapters
// start as the identity and receive gradients.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "model/io/safetensors.h"
#include "model/nn/lora_loader.h"
#include "model/unet/unet_2d_condition.h"

namespace lookahead::model::nn {
namespace {

TEST(LoraLayers, UnfusedEqualsFusedLinearAndConv) {
  at::manual_seed(1);
  LoraLinear lin(LinearOptions(6, 5));
  auto scale = std::make_shared<LoraScale>();
  scale->value = 0.7;
  LoraAdapter a{"x", at::randn({3, 6}), at::randn({5, 3}), 1.5, scale};
  lin->add_adapter(a);
  at::Tensor x = at::randn({4, 6});
  at::Tensor fused_w = lin->weight + 0.7 * (1.5 / 3) * at::matmul(a.up, a.down);
  EXPECT_TRUE(at::allclose(lin->forward(x), at::linear(x, fused_w, lin->bias), 1e-5, 1e-5));

  LoraConv2d conv(Conv2dOptions(3, 4, 3).stride(2).padding(1));
  LoraAdapter c{"x", at::randn({2, 3, 3, 3}), at::randn({4, 2, 1, 1}), 2.0, scale};
  conv->add_adapter(c);
  at::Tensor img = at::randn({2, 3, 9, 9});
  at::Tensor delta = at::matmul(c.up.view({4, 2}), c.down.view({2, -1})).view({4, 3, 3, 3});
  at::Tensor want = at::conv2d(img, conv->weight + 0.7 * (2.0 / 2) * delta, conv->bias, {2, 2}, {1, 1});
  EXPECT_TRUE(at::allclose(conv->forward(img), want, 1e-4, 1e-4));
}

TEST(LoraLayers, ScaleChangesTakeEffectImmediately) {
  LoraLinear lin(LinearOptions(4, 4));
  auto scale = std::make_shared<LoraScale>();
  lin->add_adapter({"lcm", at::randn({2, 4}), at::randn({4, 2}), 2.0, scale});
  at::Tensor x = at::randn({3, 4});
  scale->value = 0.0;
  at::Tensor base = lin->forward(x);
  EXPECT_TRUE(at::allclose(base, at::linear(x, lin->weight, lin->bias)));
  scale->value = 1.0;
  at::Tensor full = lin->forward(x);
  scale->value = 0.25;
  at::Tensor quarter = lin->forward(x);
  EXPECT_TRUE(at::allclose(quarter - base, (full - base) * 0.25, 1e-5, 1e-5));
  EXPECT_GT((full - base).abs().max().item<float>(), 1e-3);
}

TEST(LoraLayers, ShapesAreChecked) {
  LoraLinear lin(LinearOptions(4, 5));
  auto s = std::make_shared<LoraScale>();
  EXPECT_THROW(lin->add_adapter({"a", at::randn({2, 3}), at::randn({5, 2}), 1, s}), c10::Error);
  EXPECT_THROW(lin->add_adapter({"a", at::randn({2, 4}), at::randn({4, 2}), 1, s}), c10::Error);
  lin->add_adapter({"a", at::randn({2, 4}), at::randn({5, 2}), 1, s});
  EXPECT_THROW(lin->add_adapter({"a", at::randn({2, 4}), at::randn({5, 2}), 1, s}), c10::Error);  // same name
  EXPECT_EQ(lin->remove_adapter("a"), 1);
}

unet::UNetConfig tiny() {
  return unet::UNetConfig::from_json(R"({"block_out_channels": [16, 32],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1, "attention_head_dim": 2, "cross_attention_dim": 8, "norm_num_groups": 4,
    "use_linear_projection": true})",
                                     "tiny");
}

std::map<std::string, at::Tensor> kohya_for(torch::nn::Module& m, int64_t rank) {
  std::map<std::string, at::Tensor> sd;
  for (auto& [path, layer] : lora_layers(m)) {
    std::string key = "lora_unet_" + path;
    std::replace(key.begin(), key.end(), '.', '_');
    if (auto* lin = dynamic_cast<LoraLinearImpl*>(layer.get())) {
      sd[key + ".lora_down.weight"] = at::randn({rank, lin->options.in_features()});
      sd[key + ".lora_up.weight"] = at::randn({lin->options.out_features(), rank});
    } else if (auto* conv = dynamic_cast<LoraConv2dImpl*>(layer.get())) {
      const auto& o = conv->options;
      sd[key + ".lora_down.weight"] = at::randn({rank, o.in_channels(), o.kernel_size(), o.kernel_size()});
      sd[key + ".lora_up.weight"] = at::randn({o.out_channels(), rank, 1, 1});
    }
    sd[key + ".alpha"] = at::scalar_tensor(1.0, at::kHalf);
  }
  return sd;
}

TEST(KohyaLora, AttachesToEveryNamedLayer) {
  unet::UNet2DConditionModel net(tiny());
  auto sd = kohya_for(*net, 2);
  sd["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = at::randn({2, 8});
  auto r = attach_lora(*net, sd, {}, "lcm", std::make_shared<LoraScale>(), "lcm.safetensors");
  EXPECT_EQ(r.format, LoraFormat::kKohya);
  EXPECT_EQ(static_cast<size_t>(r.layers), lora_layers(*net).size());
  EXPECT_EQ(r.alphas, std::vector<double>{1.0});
  EXPECT_EQ(r.ignored.size(), 1u);
  auto to_k = net->named_modules()["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k"];
  EXPECT_EQ(std::dynamic_pointer_cast<LoraLinearImpl>(to_k)->adapters().size(), 1u);
  EXPECT_EQ(detach_lora(*net, "lcm"), r.layers);
}

void expect_rejected(std::map<std::string, at::Tensor> sd, const std::string& fragment,
                     const std::map<std::string, std::string>& metadata = {}) {
  unet::UNet2DConditionModel net(tiny());
  try {
    attach_lora(*net, sd, metadata, "lcm", std::make_shared<LoraScale>(), "bad_lora.safetensors");
    ADD_FAILURE() << "expected an error mentioning " << fragment;
  } catch (const c10::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("bad_lora.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
  }
  for (auto& [path, layer] : lora_layers(*net)) {  // all or nothing
    if (auto* lin = dynamic_cast<LoraLinearImpl*>(layer.get())) {
      EXPECT_TRUE(lin->adapters().empty()) << path;
    }
    if (auto* conv = dynamic_cast<LoraConv2dImpl*>(layer.get())) {
      EXPECT_TRUE(conv->adapters().empty()) << path;
    }
  }
}

TEST(KohyaLora, BadFilesAreRejectedWhole) {
  unet::UNet2DConditionModel net(tiny());
  auto good = kohya_for(*net, 2);
  auto unknown = good;
  unknown["lora_unet_down_blocks_9_resnets_0_conv1.lora_down.weight"] = at::randn({2, 4, 3, 3});
  expect_rejected(unknown, "lora_unet_down_blocks_9_resnets_0_conv1");
  auto no_up = good;
  no_up.erase("lora_unet_conv_in.lora_up.weight");
  expect_rejected(no_up, "'lora_unet_conv_in.lora_down.weight' has a down matrix but no up matrix");
  auto no_down = good;
  no_down.erase("lora_unet_conv_in.lora_down.weight");
  expect_rejected(no_down, "'lora_unet_conv_in.lora_up.weight' has no matching down matrix");
  auto wrong = good;
  wrong["lora_unet_conv_out.lora_down.weight"] = at::randn({2, 16, 1, 1});
  expect_rejected(wrong, "lora_down must be");
  auto peft = good;
  peft["unet.conv_in.lora_A.weight"] = at::randn({2, 4});
  expect_rejected(peft, "mixes kohya keys");
  auto stray = good;
  stray["model.diffusion_model.conv_in.weight"] = at::randn({2});
  expect_rejected(stray, "'model.diffusion_model.conv_in.weight' is in no layout this loader reads");
  auto dora = good;
  dora["lora_unet_conv_in.dora_scale"] = at::randn({16});
  expect_rejected(dora, "'lora_unet_conv_in.dora_scale' is a DoRA magnitude");
  expect_rejected({}, "no UNet LoRA entries");
  expect_rejected({{"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", at::randn({2, 8})}},
                  "no UNet LoRA entries");
}

// A kohya file of `net` with SGM block names instead of diffusers paths, for the tiny config
// (layers_per_block 1: input_blocks 1 = down 0 layer 0, 2 = down 0 downsampler, 3 = down 1 layer 0;
// output_blocks 0-1 = up 0, 2-3 = up 1; the upsampler after up 0's attention is output_blocks_1_2).
std::map<std::string, at::Tensor> sgm_renamed(const std::map<std::string, at::Tensor>& kohya) {
  const std::vector<std::pair<std::string, std::string>> renames = {
      {"conv_in", "input_blocks_0_0"},
      {"conv_out", "out_2"},
      {"time_embedding_linear_1", "time_embed_0"},
      {"time_embedding_linear_2", "time_embed_2"},
      {"down_blocks_0_resnets_0_conv1", "input_blocks_1_0_in_layers_2"},
      {"down_blocks_0_resnets_0_conv2", "input_blocks_1_0_out_layers_3"},
      {"down_blocks_0_resnets_0_time_emb_proj", "input_blocks_1_0_emb_layers_1"},
      {"down_blocks_0_downsamplers_0_conv", "input_blocks_2_0_op"},
      {"down_blocks_1_resnets_0_conv_shortcut", "input_blocks_3_0_skip_connection"},
      {"down_blocks_1_resnets_0_conv1", "input_blocks_3_0_in_layers_2"},
      {"down_blocks_1_resnets_0_conv2", "input_blocks_3_0_out_layers_3"},
      {"down_blocks_1_resnets_0_time_emb_proj", "input_blocks_3_0_emb_layers_1"},
      {"down_blocks_1_attentions_0_", "input_blocks_3_1_"},
      {"mid_block_resnets_0_conv1", "middle_block_0_in_layers_2"},
      {"mid_block_resnets_0_conv2", "middle_block_0_out_layers_3"},
      {"mid_block_resnets_0_time_emb_proj", "middle_block_0_emb_layers_1"},
      {"mid_block_attentions_0_", "middle_block_1_"},
      {"mid_block_resnets_1_conv1", "middle_block_2_in_layers_2"},
      {"mid_block_resnets_1_conv2", "middle_block_2_out_layers_3"},
      {"mid_block_resnets_1_time_emb_proj", "middle_block_2_emb_layers_1"},
  };
  std::map<std::string, at::Tensor> out;
  for (const auto& [key, t] : kohya) {
    std::string name = key.substr(10);  // after lora_unet_
    bool renamed = false;
    for (const auto& [from, to] : renames) {
      if (name.rfind(from, 0) == 0 && (from.back() == '_' || name[from.size()] == '.')) {
        name = to + name.substr(from.size());
        renamed = true;
        break;
      }
    }
    for (int b = 0; b < 2 && !renamed; ++b)  // up blocks: resnets r at output_blocks_{2b + r}_0
      for (int r = 0; r < 2 && !renamed; ++r)
        for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
                 {"conv1", "in_layers_2"}, {"conv2", "out_layers_3"}, {"time_emb_proj", "emb_layers_1"},
                 {"conv_shortcut", "skip_connection"}}) {
          std::string path = "up_blocks_" + std::to_string(b) + "_resnets_" + std::to_string(r) + "_" + from + ".";
          if (name.rfind(path, 0) == 0) {
            name = "output_blocks_" + std::to_string(2 * b + r) + "_0_" + to + name.substr(path.size() - 1);
            renamed = true;
            break;
          }
          std::string attn = "up_blocks_" + std::to_string(b) + "_attentions_" + std::to_string(r) + "_";
          if (name.rfind(attn, 0) == 0) {
            name = "output_blocks_" + std::to_string(2 * b + r) + "_1_" + name.substr(attn.size());
            renamed = true;
            break;
          }
        }
    if (name.rfind("up_blocks_0_upsamplers_0_conv.", 0) == 0) {
      name = "output_blocks_1_2_conv" + name.substr(std::string("up_blocks_0_upsamplers_0_conv").size());
      renamed = true;
    }
    EXPECT_TRUE(renamed) << "no SGM name for " << key;
    out["lora_unet_" + name] = t;
  }
  return out;
}

at::Tensor run_tiny(unet::UNet2DConditionModel& net) {
  unet::UNetInputs in;
  in.sample = at::ones({1, 4, 8, 8}) * 0.3;
  in.timestep = at::tensor({10});
  in.encoder_hidden_states = at::ones({1, 3, 8}) * 0.1;
  at::NoGradGuard no_grad;
  return net->forward(in);
}

TEST(KohyaSgmLora, SameWeightsSameNetworkAsDiffusersNames) {
  at::manual_seed(5);
  unet::UNet2DConditionModel a(tiny());
  at::manual_seed(5);
  unet::UNet2DConditionModel b(tiny());  // same base weights
  auto kohya = kohya_for(*a, 2);
  for (auto& [key, t] : kohya)
    if (key.ends_with(".alpha")) t = at::scalar_tensor(3.0);
  auto sgm = sgm_renamed(kohya);
  ASSERT_EQ(sgm.size(), kohya.size());
  auto ra = attach_lora(*a, kohya, {}, "x", std::make_shared<LoraScale>(), "kohya.safetensors");
  auto rb = attach_lora(*b, sgm, {}, "x", std::make_shared<LoraScale>(), "sgm.safetensors");
  EXPECT_EQ(rb.format, LoraFormat::kKohyaSgm);
  EXPECT_EQ(rb.layers, ra.layers);
  EXPECT_EQ(rb.alphas, std::vector<double>{3.0});
  EXPECT_TRUE(at::equal(run_tiny(a), run_tiny(b)));
}

TEST(KohyaSgmLora, NamesMapAsDiffusersMapsThem) {
  // Pairs printed by diffusers' own converter (_maybe_map_sgm_blocks_to_diffusers with
  // layers_per_block 2, then _convert_unet_lora_key), '.' -> '_' and processor names undone.
  const std::vector<std::pair<std::string, std::string>> sdxl = {
      {"input_blocks_0_0", "conv_in"},
      {"out_2", "conv_out"},
      {"time_embed_0", "time_embedding_linear_1"},
      {"time_embed_2", "time_embedding_linear_2"},
      {"label_emb_0_0", "add_embedding_linear_1"},
      {"label_emb_0_2", "add_embedding_linear_2"},
      {"input_blocks_1_0_in_layers_2", "down_blocks_0_resnets_0_conv1"},
      {"input_blocks_2_0_emb_layers_1", "down_blocks_0_resnets_1_time_emb_proj"},
      {"input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv"},
      {"input_blocks_4_0_skip_connection", "down_blocks_1_resnets_0_conv_shortcut"},
      {"input_blocks_4_1_proj_in", "down_blocks_1_attentions_0_proj_in"},
      {"input_blocks_5_1_transformer_blocks_1_attn2_to_out_0", "down_blocks_1_attentions_1_transformer_blocks_1_attn2_to_out_0"},
      {"input_blocks_6_0_op", "down_blocks_1_downsamplers_0_conv"},
      {"input_blocks_8_1_transformer_blocks_9_ff_net_0_proj", "down_blocks_2_attentions_1_transformer_blocks_9_ff_net_0_proj"},
      {"middle_block_0_out_layers_3", "mid_block_resnets_0_conv2"},
      {"middle_block_1_transformer_blocks_0_attn1_to_q", "mid_block_attentions_0_transformer_blocks_0_attn1_to_q"},
      {"middle_block_2_emb_layers_1", "mid_block_resnets_1_time_emb_proj"},
      {"output_blocks_0_0_skip_connection", "up_blocks_0_resnets_0_conv_shortcut"},
      {"output_blocks_8_0_in_layers_2", "up_blocks_2_resnets_2_conv1"},
      {"output_blocks_2_1_proj_out", "up_blocks_0_attentions_2_proj_out"},
      {"output_blocks_2_2_conv", "up_blocks_0_upsamplers_0_conv"},
      {"output_blocks_5_2_conv", "up_blocks_1_upsamplers_0_conv"},
  };
  std::map<std::string, at::Tensor> file;
  for (const auto& [sgm, diffusers] : sdxl) {
    EXPECT_EQ(sgm_to_diffusers(sgm, 2, "f", sgm), diffusers);
    file["lora_unet_" + sgm + ".lora_down.weight"] = at::empty({1, 1}, at::TensorOptions().device(at::kMeta));
    file["lora_unet_" + sgm + ".lora_up.weight"] = at::empty({1, 1}, at::TensorOptions().device(at::kMeta));
  }
  EXPECT_EQ(sgm_to_diffusers("down_blocks_0_resnets_0_conv1", 2, "f", "k"), "");  // not an SGM name
  // Every pair names a layer of the real SDXL UNet, whose layers_per_block (2) is read off its tree.
  unet::UNet2DConditionModel sdxl_unet(unet::UNetConfig::sdxl_base(), at::TensorOptions().device(at::kMeta));
  std::vector<std::string> paths;
  for (auto& [path, layer] : lora_layers(*sdxl_unet)) paths.push_back(path);
  auto m = map_lora_file(file, {}, paths, "sdxl_sgm.safetensors");
  EXPECT_EQ(m.format, LoraFormat::kKohyaSgm);
  EXPECT_EQ(m.entries.size(), sdxl.size());
}

TEST(KohyaSgmLora, UnmappableKeysAreNamed) {
  unet::UNet2DConditionModel net(tiny());
  auto sgm = sgm_renamed(kohya_for(*net, 2));
  auto truncated = sgm;
  truncated["lora_unet_input_blocks_4.lora_down.weight"] = at::randn({2, 4});
  expect_rejected(truncated, "'lora_unet_input_blocks_4.lora_down.weight' has an SGM block name without");
  auto middle = sgm;
  middle["lora_unet_middle_block_3_proj_in.lora_down.weight"] = at::randn({2, 4});
  expect_rejected(middle, "'lora_unet_middle_block_3_proj_in.lora_down.weight': middle_block has layers 0 to 2");
  auto norm = sgm;  // diffusers maps no SGM name onto a norm; nor can a GroupNorm take a LoRA
  norm["lora_unet_input_blocks_1_0_in_layers_0.lora_down.weight"] = at::randn({2, 4});
  expect_rejected(norm, "'lora_unet_input_blocks_1_0_in_layers_0' matches no layer of the network (read as "
                        "'down_blocks_0_resnets_0_in_layers_0')");
  auto mixed = sgm;
  mixed["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"] = at::randn({2, 16, 3, 3});
  expect_rejected(mixed, "mixes SGM block names");
  auto beyond = sgm;
  beyond["lora_unet_output_blocks_9_0_in_layers_2.lora_down.weight"] = at::randn({2, 16, 3, 3});
  expect_rejected(beyond, "'lora_unet_output_blocks_9_0_in_layers_2' matches no layer");
}

/// A PEFT file of `net` as diffusers' save_lora_weights writes it: `unet.<path>.lora_A.weight`.
std::map<std::string, at::Tensor> peft_for(torch::nn::Module& m, int64_t rank) {
  std::map<std::string, at::Tensor> sd;
  for (auto& [key, t] : kohya_for(m, rank)) {
    if (key.ends_with(".alpha")) continue;
    std::string base = key.substr(0, key.find('.'));
    std::string path;
    for (auto& [p, layer] : lora_layers(m)) {
      std::string u = "lora_unet_" + p;
      std::replace(u.begin(), u.end(), '.', '_');
      if (u == base) path = p;
    }
    sd["unet." + path + (key.ends_with(".lora_down.weight") ? ".lora_A.weight" : ".lora_B.weight")] = t;
  }
  return sd;
}

TEST(PeftLora, KeysAndAlphaRules) {
  at::manual_seed(6);
  unet::UNet2DConditionModel a(tiny());
  at::manual_seed(6);
  unet::UNet2DConditionModel b(tiny());  // same base weights
  auto peft = peft_for(*a, 2);
  peft["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = at::randn({2, 8});
  peft["text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = at::randn({2, 8});
  // No adapter config in the header: factor 1 (alpha = rank), as diffusers and PEFT load it.
  auto r = attach_lora(*a, peft, {{"format", "pt"}}, "x", std::make_shared<LoraScale>(), "peft.safetensors");
  EXPECT_EQ(r.format, LoraFormat::kPeft);
  EXPECT_EQ(static_cast<size_t>(r.layers), lora_layers(*a).size());
  EXPECT_EQ(r.alphas, std::vector<double>{2.0});
  EXPECT_EQ(r.ignored.size(), 2u);
  // The same as kohya with alpha = rank.
  auto kohya = kohya_for(*b, 2);
  for (auto& [key, t] : peft) {
    if (key.rfind("unet.", 0) != 0) continue;
    std::string path = key.substr(5, key.rfind(".lora_") - 5);
    std::string k = "lora_unet_" + path;
    std::replace(k.begin(), k.end(), '.', '_');
    kohya[k + (key.ends_with("lora_A.weight") ? ".lora_down.weight" : ".lora_up.weight")] = t;
    kohya[k + ".alpha"] = at::scalar_tensor(2.0);
  }
  attach_lora(*b, kohya, {}, "x", std::make_shared<LoraScale>(), "kohya.safetensors");
  EXPECT_TRUE(at::allclose(run_tiny(a), run_tiny(b), 1e-6, 1e-6));

  // diffusers' header config: lora_alpha for all, alpha_pattern per module (PEFT's tail match).
  unet::UNet2DConditionModel c(tiny());
  const std::string config = R"({"unet.r": 2, "unet.lora_alpha": 1.0, "unet.rank_pattern": {},
    "unet.alpha_pattern": {"conv_in": 4.0, "^mid_block.attentions.0.proj_in": 8.0}, "unet.use_dora": false,
    "text_encoder.lora_alpha": 16})";
  auto rc = attach_lora(*c, peft, {{"lora_adapter_metadata", config}}, "x", std::make_shared<LoraScale>(), "meta.safetensors");
  EXPECT_EQ(rc.alphas, (std::vector<double>{1.0, 4.0, 8.0}));
  EXPECT_EQ(rc.alpha_source, "lora_adapter_metadata");
  auto alpha_of = [&](const std::string& path) {
    auto layer = c->named_modules()[path];
    if (auto lin = std::dynamic_pointer_cast<LoraLinearImpl>(layer)) return lin->adapters().at(0).alpha;
    return std::dynamic_pointer_cast<LoraConv2dImpl>(layer)->adapters().at(0).alpha;
  };
  EXPECT_EQ(alpha_of("conv_in"), 4.0);
  EXPECT_EQ(alpha_of("mid_block.attentions.0.proj_in"), 8.0);
  EXPECT_EQ(alpha_of("down_blocks.1.attentions.0.proj_in"), 1.0);  // '^' anchors the pattern
  EXPECT_EQ(alpha_of("conv_out"), 1.0);
}

TEST(PeftLora, FileHeaderConfigIsRead) {
  // attach_lora_file (every caller's path) reads the alpha from the safetensors header.
  unet::UNet2DConditionModel net(tiny());
  auto peft = peft_for(*net, 2);
  auto path = (std::filesystem::temp_directory_path() / ("lora_test_" + std::to_string(::getpid()) + ".safetensors"))
                  .string();
  io::save_file(path, {peft.begin(), peft.end()},
                {{"format", "pt"}, {"lora_adapter_metadata", R"({"unet.r": 2, "unet.lora_alpha": 0.5})"}});
  auto r = attach_lora_file(*net, path, "x", std::make_shared<LoraScale>());
  std::filesystem::remove(path);
  EXPECT_EQ(r.format, LoraFormat::kPeft);
  EXPECT_EQ(r.alphas, std::vector<double>{0.5});
  EXPECT_EQ(r.alpha_source, "lora_adapter_metadata");
}

TEST(PeftLora, DiffusersPrePeftKeys) {
  at::manual_seed(7);
  unet::UNet2DConditionModel a(tiny());
  at::manual_seed(7);
  unet::UNet2DConditionModel b(tiny());  // same base weights
  auto peft = peft_for(*a, 2);
  std::map<std::string, at::Tensor> old;
  for (auto& [key, t] : peft) {
    // Attention projections as attention-processor names, everything else `.lora.down/.up`.
    std::string k = key;
    bool down = k.ends_with(".lora_A.weight");
    k = k.substr(0, k.size() - std::string(".lora_A.weight").size());
    std::string proc;
    for (const char* p : {".attn1.", ".attn2."}) {
      auto at = k.find(p);
      if (at == std::string::npos) continue;
      std::string proj = k.substr(at + 7);
      if (proj == "to_out.0") proj = "to_out";
      proc = k.substr(0, at + 6) + ".processor." + proj + "_lora";
    }
    old[(proc.empty() ? k + ".lora" : proc) + (down ? ".down.weight" : ".up.weight")] = t;
  }
  ASSERT_TRUE(old.count("unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight"));
  auto ra = attach_lora(*a, peft, {}, "x", std::make_shared<LoraScale>(), "peft.safetensors");
  auto rb = attach_lora(*b, old, {}, "x", std::make_shared<LoraScale>(), "old.safetensors");
  EXPECT_EQ(rb.format, LoraFormat::kDiffusersOld);
  EXPECT_EQ(rb.layers, ra.layers);
  EXPECT_TRUE(at::equal(run_tiny(a), run_tiny(b)));
}

TEST(PeftLora, UnmappableKeysAreNamed) {
  unet::UNet2DConditionModel net(tiny());
  auto good = peft_for(*net, 2);
  auto alpha = good;
  alpha["unet.conv_in.alpha"] = at::scalar_tensor(1.0);
  expect_rejected(alpha, "'unet.conv_in.alpha': PEFT-format files keep alpha in the safetensors metadata");
  auto unknown = good;
  unknown["unet.down_blocks.7.resnets.0.conv1.lora_A.weight"] = at::randn({2, 4, 3, 3});
  expect_rejected(unknown, "'unet.down_blocks.7.resnets.0.conv1.lora_A.weight' matches no layer");
  auto truncated = good;
  truncated["unet.conv_in.lora_A"] = at::randn({2, 4, 3, 3});
  expect_rejected(truncated, "unexpected LoRA key 'unet.conv_in.lora_A'");
  auto no_b = good;
  no_b.erase("unet.conv_out.lora_B.weight");
  expect_rejected(no_b, "'unet.conv_out.lora_A.weight' has a down matrix but no up matrix");
  auto mixed = good;
  mixed["unet.conv_in.lora.down.weight"] = at::randn({2, 4, 3, 3});
  expect_rejected(mixed, "mixes PEFT keys");
  auto dora = good;
  dora["unet.conv_in.lora_magnitude_vector"] = at::randn({16});
  expect_rejected(dora, "'unet.conv_in.lora_magnitude_vector' is a DoRA magnitude");
  expect_rejected(good, "has rank 2, but lora_adapter_metadata gives rank 4", {{"lora_adapter_metadata", R"({"unet.r": 4})"}});
  expect_rejected(good, "rsLoRA", {{"lora_adapter_metadata", R"({"unet.r": 2, "unet.use_rslora": true})"}});
  expect_rejected(good, "'lora_adapter_metadata' is not valid JSON", {{"lora_adapter_metadata", "{"}});
}

TEST(TrainableLora, StartsAsIdentityAndLearns) {
  at::manual_seed(3);
  unet::UNet2DConditionModel net(tiny());
  unet::UNetInputs in;
  in.sample = at::randn({1, 4, 8, 8});
  in.timestep = at::tensor({10});
  in.encoder_hidden_states = at::randn({1, 3, 8});
  at::Tensor before = net->forward(in).detach();
  auto lora = create_trainable_lora(*net, "encoder", 4, 4.0, [](const std::string& p) {
    return p.find("attn1.to_") != std::string::npos;
  });
  // to_q/k/v/out.0 of 4 transformer blocks (1 down, 1 mid, 2 up), each a down and an up matrix.
  EXPECT_EQ(lora.parameters.size(), 4u * 4u * 2u);
  for (auto& [name, t] : lora.parameters) {
    EXPECT_TRUE(t.requires_grad()) << name;
    if (name.find("lora_down") != std::string::npos) {
      EXPECT_NEAR(t.std().item<double>(), 0.25, 0.15) << name;
    }
  }
  at::Tensor after = net->forward(in);
  EXPECT_TRUE(at::equal(before, after.detach()));  // lora_up = 0
  after.square().mean().backward();
  auto up = lora.parameters["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v.lora_up.weight"];
  ASSERT_TRUE(up.grad().defined());
  EXPECT_GT(up.grad().abs().sum().item<float>(), 0.f);
}

}  // namespace
}  // namespace lookahead::model::nn
