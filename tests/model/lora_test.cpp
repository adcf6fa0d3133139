// LoRA layers and loaders: the unfused update equals the fused weight, the run-time scale acts
// without re-attaching, kohya files map onto diffusers paths, bad files are rejected whole, and
// trainable adapters start as the identity and receive gradients.
#include <gtest/gtest.h>

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
  auto r = attach_kohya_lora(*net, sd, "lcm", std::make_shared<LoraScale>(), "lcm.safetensors");
  EXPECT_EQ(static_cast<size_t>(r.layers), lora_layers(*net).size());
  EXPECT_EQ(r.alphas, std::vector<double>{1.0});
  EXPECT_EQ(r.ignored.size(), 1u);
  auto to_k = net->named_modules()["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k"];
  EXPECT_EQ(std::dynamic_pointer_cast<LoraLinearImpl>(to_k)->adapters().size(), 1u);
  EXPECT_EQ(detach_lora(*net, "lcm"), r.layers);
}

void expect_rejected(std::map<std::string, at::Tensor> sd, const std::string& fragment) {
  unet::UNet2DConditionModel net(tiny());
  try {
    attach_kohya_lora(*net, sd, "lcm", std::make_shared<LoraScale>(), "bad_lora.safetensors");
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
  expect_rejected(no_up, "has lora_down but no lora_up");
  auto wrong = good;
  wrong["lora_unet_conv_out.lora_down.weight"] = at::randn({2, 16, 1, 1});
  expect_rejected(wrong, "lora_down must be");
  auto peft = good;
  peft["unet.conv_in.lora_A.weight"] = at::randn({2, 4});
  expect_rejected(peft, "not in the kohya format");
  expect_rejected({}, "no 'lora_unet_' LoRA entries");
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
