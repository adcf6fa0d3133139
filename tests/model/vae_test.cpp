// Autoencoder structure (model/vae): TAESDXL and the SDXL VAE build on the meta device with
// diffusers' tensor and parameter counts and key names; small configs run encode/decode with the
// expected shapes and gradients; configs round-trip and unsupported options are rejected by name.
#include <gtest/gtest.h>

#include "model/unet/unet_2d_condition.h"
#include "model/vae/autoencoder_kl.h"
#include "model/vae/autoencoder_tiny.h"

namespace lookahead::model::vae {
namespace {

const at::TensorOptions kMeta = at::TensorOptions().device(at::kMeta);

std::vector<int64_t> shape_of(torch::nn::Module& m, const std::string& key) {
  auto params = m.named_parameters();
  EXPECT_TRUE(params.contains(key)) << key;
  return params.contains(key) ? params[key].sizes().vec() : std::vector<int64_t>{};
}

void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Taesd, TaesdxlHasDiffusersCountsOnMeta) {
  AutoencoderTiny taesd(TinyConfig::taesdxl(), kMeta);
  auto [tensors, elements] = unet::count_parameters(*taesd);
  EXPECT_EQ(tensors, 134);
  EXPECT_EQ(elements, 2445063);
  EXPECT_EQ(unet::count_parameters(*taesd->decoder).second, 1222531);  // TAESDXL's published decoder size
  EXPECT_EQ(unet::count_parameters(*taesd->encoder).second, 1222532);
  EXPECT_EQ(shape_of(*taesd, "decoder.layers.0.weight"), (std::vector<int64_t>{64, 4, 3, 3}));
  EXPECT_EQ(shape_of(*taesd, "decoder.layers.2.conv.4.bias"), (std::vector<int64_t>{64}));
  EXPECT_EQ(shape_of(*taesd, "decoder.layers.6.weight"), (std::vector<int64_t>{64, 64, 3, 3}));
  EXPECT_EQ(shape_of(*taesd, "decoder.layers.16.weight"), (std::vector<int64_t>{64, 64, 3, 3}));
  EXPECT_EQ(shape_of(*taesd, "decoder.layers.17.conv.0.weight"), (std::vector<int64_t>{64, 64, 3, 3}));
  EXPECT_EQ(shape_of(*taesd, "decoder.layers.18.weight"), (std::vector<int64_t>{3, 64, 3, 3}));
  EXPECT_EQ(shape_of(*taesd, "decoder.layers.18.bias"), (std::vector<int64_t>{3}));
  EXPECT_EQ(shape_of(*taesd, "encoder.layers.0.weight"), (std::vector<int64_t>{64, 3, 3, 3}));
  EXPECT_EQ(shape_of(*taesd, "encoder.layers.14.weight"), (std::vector<int64_t>{4, 64, 3, 3}));
  auto params = taesd->named_parameters();
  EXPECT_FALSE(params.contains("decoder.layers.6.bias"));
  EXPECT_FALSE(params.contains("encoder.layers.2.bias"));
  EXPECT_FALSE(params.contains("decoder.layers.19.weight"));
  EXPECT_TRUE(params["decoder.layers.18.weight"].is_meta());
}

TEST(SdxlVae, SdxlConfigHasDiffusersCountsOnMeta) {
  AutoencoderKL vae(KLConfig::sdxl(), kMeta);
  auto [tensors, elements] = unet::count_parameters(*vae);
  EXPECT_EQ(tensors, 248);
  EXPECT_EQ(elements, 83653863);
  EXPECT_EQ(unet::count_parameters(*vae->encoder).second, 34163592);
  EXPECT_EQ(unet::count_parameters(*vae->decoder).second, 49490179);
  EXPECT_EQ(shape_of(*vae, "encoder.conv_in.weight"), (std::vector<int64_t>{128, 3, 3, 3}));
  EXPECT_EQ(shape_of(*vae, "encoder.down_blocks.1.resnets.0.conv_shortcut.weight"), (std::vector<int64_t>{256, 128, 1, 1}));
  EXPECT_EQ(shape_of(*vae, "encoder.down_blocks.2.downsamplers.0.conv.weight"), (std::vector<int64_t>{512, 512, 3, 3}));
  EXPECT_EQ(shape_of(*vae, "encoder.mid_block.attentions.0.to_q.bias"), (std::vector<int64_t>{512}));
  EXPECT_EQ(shape_of(*vae, "encoder.mid_block.attentions.0.to_out.0.weight"), (std::vector<int64_t>{512, 512}));
  EXPECT_EQ(shape_of(*vae, "encoder.mid_block.attentions.0.group_norm.weight"), (std::vector<int64_t>{512}));
  EXPECT_EQ(shape_of(*vae, "encoder.conv_out.weight"), (std::vector<int64_t>{8, 512, 3, 3}));
  EXPECT_EQ(shape_of(*vae, "quant_conv.weight"), (std::vector<int64_t>{8, 8, 1, 1}));
  EXPECT_EQ(shape_of(*vae, "post_quant_conv.weight"), (std::vector<int64_t>{4, 4, 1, 1}));
  EXPECT_EQ(shape_of(*vae, "decoder.conv_in.weight"), (std::vector<int64_t>{512, 4, 3, 3}));
  EXPECT_EQ(shape_of(*vae, "decoder.up_blocks.0.resnets.2.conv2.weight"), (std::vector<int64_t>{512, 512, 3, 3}));
  EXPECT_EQ(shape_of(*vae, "decoder.up_blocks.2.resnets.0.conv_shortcut.weight"), (std::vector<int64_t>{256, 512, 1, 1}));
  EXPECT_EQ(shape_of(*vae, "decoder.up_blocks.2.upsamplers.0.conv.weight"), (std::vector<int64_t>{256, 256, 3, 3}));
  EXPECT_EQ(shape_of(*vae, "decoder.conv_norm_out.weight"), (std::vector<int64_t>{128}));
  auto params = vae->named_parameters();
  EXPECT_FALSE(params.contains("encoder.down_blocks.3.downsamplers.0.conv.weight"));
  EXPECT_FALSE(params.contains("decoder.up_blocks.3.upsamplers.0.conv.weight"));
  EXPECT_FALSE(params.contains("decoder.up_blocks.0.resnets.0.conv_shortcut.weight"));
  EXPECT_EQ(vae->downscale_factor(), 8);
}

TEST(Taesd, SmallConfigShapesAndGradients) {
  TinyConfig c;
  c.encoder_block_out_channels = {8, 8, 8};
  c.num_encoder_blocks = {1, 2, 1};
  c.decoder_block_out_channels = {8, 8, 8};
  c.num_decoder_blocks = {1, 0, 2};
  AutoencoderTiny taesd(c);
  at::Tensor z = at::randn({2, 4, 3, 5}).requires_grad_();
  at::Tensor img = taesd->decode(z);  // [2, 3, 12, 20]
  EXPECT_EQ(img.sizes().vec(), (std::vector<int64_t>{2, 3, 12, 20}));
  img.square().sum().backward();
  EXPECT_TRUE(z.grad().defined());
  EXPECT_GT(z.grad().abs().sum().item<double>(), 0);
  EXPECT_EQ(taesd->encode(at::rand({1, 3, 16, 12})).sizes().vec(), (std::vector<int64_t>{1, 4, 4, 3}));
  at::Tensor packed = taesd->scale_latents(at::tensor({-9.0, 0.0, 3.0}));
  EXPECT_TRUE(at::allclose(packed, at::tensor({0.0, 0.5, 1.0})));
  EXPECT_TRUE(at::allclose(taesd->unscale_latents(at::tensor({0.0, 0.5, 1.0})), at::tensor({-3.0, 0.0, 3.0})));
}

TEST(SdxlVae, SmallConfigShapesAndLatentScaling) {
  KLConfig c;
  c.block_out_channels = {8, 16, 16};
  c.norm_num_groups = 4;
  c.layers_per_block = 1;
  AutoencoderKL vae(c);
  LatentDistribution d = vae->encode(at::rand({2, 3, 16, 20}) * 2 - 1);
  EXPECT_EQ(d.mean.sizes().vec(), (std::vector<int64_t>{2, 4, 4, 5}));
  EXPECT_TRUE(at::allclose(d.std, at::exp(0.5 * d.logvar)));
  at::Tensor noise = at::randn_like(d.mean);
  EXPECT_TRUE(at::allclose(vae->to_unet_latents(d, noise), (d.mean + d.std * noise) * 0.13025));
  EXPECT_TRUE(at::allclose(vae->to_unet_latents(d), d.mean * 0.13025));
  EXPECT_TRUE(at::allclose(vae->from_unet_latents(vae->to_unet_latents(d)), d.mean, 1e-5, 1e-6));
  EXPECT_EQ(vae->decode(d.mean).sizes().vec(), (std::vector<int64_t>{2, 3, 16, 20}));
  c.mid_block_add_attention = false;
  c.use_quant_conv = false;
  AutoencoderKL plain(c, kMeta);
  auto params = plain->named_parameters();
  EXPECT_FALSE(params.contains("encoder.mid_block.attentions.0.to_q.weight"));
  EXPECT_FALSE(params.contains("quant_conv.weight"));
  EXPECT_TRUE(params.contains("post_quant_conv.weight"));
}

TEST(VaeConfig, RoundTripsAndRejectsUnsupportedKeys) {
  KLConfig kl = KLConfig::from_json(KLConfig::sdxl().to_json(), "sdxl");
  EXPECT_EQ(kl.block_out_channels, (std::vector<int64_t>{128, 256, 512, 512}));
  EXPECT_DOUBLE_EQ(kl.scaling_factor, 0.13025);
  EXPECT_TRUE(kl.force_upcast);
  TinyConfig tiny = TinyConfig::from_json(TinyConfig::taesdxl().to_json(), "taesdxl");
  EXPECT_EQ(tiny.num_decoder_blocks, (std::vector<int64_t>{3, 3, 3, 1}));
  EXPECT_EQ(config_class_name(TinyConfig::taesdxl().to_json(), "t"), "AutoencoderTiny");

  expect_error([] { KLConfig::from_json(R"({"_class_name": "AutoencoderTiny"})", "cfg.json"); }, "_class_name");
  expect_error([] { KLConfig::from_json(R"({"latents_mean": [0.1, 0.2, 0.3, 0.4]})", "cfg.json"); }, "latents_mean");
  expect_error([] { KLConfig::from_json(R"({"down_block_types": ["AttnDownEncoderBlock2D"]})", "cfg.json"); },
               "down_block_types");
  expect_error([] { KLConfig::from_json(R"({"block_out_channels": [30], "norm_num_groups": 32})", "cfg.json"); },
               "norm_num_groups");
  expect_error([] { KLConfig::from_json(R"({"act_fn": "tanh"})", "cfg.json"); }, "act_fn");
  expect_error([] { KLConfig::from_json(R"({"norm_num_groups": "32"})", "cfg.json"); },
               "norm_num_groups = \"32\" must be an integer");
  expect_error([] { TinyConfig::from_json(R"({"latent_channels": 4.5})", "cfg.json"); }, "latent_channels");
  expect_error([] { TinyConfig::from_json(R"({"upsample_fn": "bilinear"})", "cfg.json"); }, "upsample_fn");
  expect_error([] { TinyConfig::from_json(R"({"decoder_block_out_channels": [64, 32]})", "cfg.json"); },
               "decoder_block_out_channels");
  expect_error([] { TinyConfig::from_json("[1, 2]", "cfg.json"); }, "cfg.json");
  expect_error([] { TinyConfig::from_file("/nonexistent/config.json"); }, "/nonexistent/config.json");
}

}  // namespace
}  // namespace lookahead::model::vae
