// KV encoder and extended self-attention: the SDXL layout (70 blocks, encoder LoRAs on all but the
// last block), one shared set of base weights, the no-reference mode, token dropout, the IP K/V
// equal to the decoder's own image branch, and gradients reaching every trainable tensor.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "model/adapters/ip_adapter.h"
#include "model/adapters/kv_encoder.h"

namespace lookahead::model::adapters {
namespace {

const at::TensorOptions kMeta = at::TensorOptions().device(at::kMeta);

TEST(KvEncoder, SdxlLayout) {
  unet::UNet2DConditionModel unet(unet::UNetConfig::sdxl_base(), kMeta);
  const auto before = unet::count_parameters(*unet);
  KvEncoder encoder(unet, KvEncoderOptions());
  EXPECT_EQ(encoder.last_up_block(), 1);
  const auto& blocks = encoder.block_paths();
  ASSERT_EQ(blocks.size(), 70u);
  EXPECT_EQ(blocks.front(), "down_blocks.1.attentions.0.transformer_blocks.0");
  EXPECT_EQ(blocks[24], "mid_block.attentions.0.transformer_blocks.0");
  EXPECT_EQ(blocks[34], "up_blocks.0.attentions.0.transformer_blocks.0");
  EXPECT_EQ(blocks.back(), "up_blocks.1.attentions.2.transformer_blocks.1");
  // 8 LoRA layers per block, except the last block.
  auto layers = encoder.lora_layer_paths();
  EXPECT_EQ(layers.size(), 69u * 8u);
  for (const auto& p : layers) EXPECT_EQ(p.rfind(blocks.back(), 0), std::string::npos) << p;
  // The base UNet gained no parameter: the encoder is adapters on the same weights.
  EXPECT_EQ(unet::count_parameters(*unet), before);
  // Trainable elements, from the architecture: per block of C channels, encoder LoRA rank 4 on
  // attn1 q/k/v/out (C->C), attn2 q/out (C->C) and k/v (2048->C); KV heads 2 x rank 4 x (C + C).
  int64_t expected = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const int64_t c = (blocks[i].rfind("down_blocks.1", 0) == 0 || blocks[i].rfind("up_blocks.1", 0) == 0) ? 640 : 1280;
    if (i + 1 < blocks.size()) expected += 4 * (6 * 2 * c + 2 * (2048 + c));
    expected += 2 * 4 * 2 * c;
  }
  int64_t actual = 0;
  for (const auto& [key, t] : encoder.trainable_parameters()) {
    EXPECT_TRUE(t.requires_grad()) << key;
    actual += t.numel();
  }
  EXPECT_EQ(actual, expected);
  EXPECT_TRUE(encoder.trainable_parameters().contains(
      "up_blocks.1.attentions.2.transformer_blocks.1.extract_kv1.to_v.lora_up.weight"));
}

unet::UNetConfig tiny_config() {
  // Same shape of stages as SDXL: the last up block has no attention.
  return unet::UNetConfig::from_json(R"({"block_out_channels": [16, 32, 32],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1, "transformer_layers_per_block": [1, 1, 2], "attention_head_dim": 2,
    "cross_attention_dim": 24, "norm_num_groups": 4, "use_linear_projection": true,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 4, "projection_class_embeddings_input_dim": 40})",
                                     "tiny");
}

unet::UNetInputs tiny_inputs(int64_t b) {
  unet::UNetInputs in;
  in.sample = at::randn({b, 4, 8, 8});
  in.timestep = at::tensor({10, 500}).narrow(0, 0, b);
  in.encoder_hidden_states = at::randn({b, 3, 24});
  in.text_embeds = at::randn({b, 16});
  in.time_ids = at::randn({b, 6});
  return in;
}

/// Sets every trainable tensor to random values so that each LoRA changes its output.
void randomize(KvEncoder& encoder, IpAdapter& ip) {
  at::NoGradGuard no_grad;
  for (auto& [key, t] : encoder.trainable_parameters()) {
    at::Tensor v = t;
    v.normal_(0.0, 0.2);
  }
  for (auto& p : ip->parameters()) p.normal_(0.0, 0.2);
}

struct Fixture {
  Fixture() : unet(tiny_config()), ip(*unet, ResamplerOptions().dim(16).heads(1).depth(1).num_queries(4).embedding_dim(12).output_dim(24)) {
    ip->attach(*unet);
  }
  unet::UNet2DConditionModel unet;
  IpAdapter ip;
};

TEST(KvEncoder, ReferenceKvShapesAndEarlyStop) {
  at::manual_seed(1);
  Fixture f;
  KvEncoder encoder(f.unet, KvEncoderOptions());
  // down_blocks.1: 1 block; down_blocks.2: 1 layer x depth 2; mid: 2; up_blocks.0: 2 layers x 2;
  // up_blocks.1: 2 layers x 1.
  EXPECT_EQ(encoder.block_paths().size(), 11u);
  at::Tensor tokens = f.ip->image_tokens(at::randn({2, 5, 12}));
  at::NoGradGuard no_grad;
  nn::ReferenceKv kv = encoder.forward(tiny_inputs(2), tokens);
  ASSERT_EQ(kv.blocks.size(), encoder.block_paths().size());
  for (size_t i = 0; i < kv.blocks.size(); ++i) {
    const auto& b = kv.blocks[i];
    ASSERT_TRUE(b.k.defined() && b.ip_k.defined()) << encoder.block_paths()[i];
    EXPECT_EQ(b.k.sizes(), b.v.sizes());
    EXPECT_EQ(b.ip_k.sizes()[1], 4);
  }
  // down_blocks.1 runs at 4x4 with 32 channels; down_blocks.2 and mid at 2x2.
  EXPECT_EQ(kv.blocks[0].k.sizes(), (std::vector<int64_t>{2, 16, 32}));
  EXPECT_EQ(kv.blocks[1].k.sizes(), (std::vector<int64_t>{2, 4, 32}));
}

TEST(KvEncoder, InitialKvIsAttn1OfTheReferenceStream) {
  // At creation the LoRAs are zero, so the reference K/V of every block are attn1.to_k / to_v of
  // norm1 of the plain UNet's own stream on the same inputs.
  at::manual_seed(2);
  Fixture f;
  auto in = tiny_inputs(2);
  at::NoGradGuard no_grad;
  KvEncoder encoder(f.unet, KvEncoderOptions());
  nn::ReferenceKv kv = encoder.forward(in, {});
  EXPECT_FALSE(kv.blocks[0].ip_k.defined());
  // Feeding the reference back as its own K/V doubles every self-attention key: softmax over
  // [K; K] with V duplicated equals softmax over K, so the decoder output equals the plain one.
  auto dec = in;
  dec.reference = std::make_shared<nn::ReferenceKv>(kv);
  // Block 0 sees its own K/V twice, so its output is unchanged; then block 1 receives the same
  // input as in the encoder run, and so on by induction.
  at::Tensor plain = f.unet->forward(in);
  at::Tensor extended = f.unet->forward(dec);
  EXPECT_TRUE(at::allclose(plain, extended, 1e-5, 1e-5)) << (plain - extended).abs().max();
}

TEST(KvEncoder, NoReferenceModeDropoutAndIpKv) {
  at::manual_seed(3);
  Fixture f;
  KvEncoder encoder(f.unet, KvEncoderOptions());
  randomize(encoder, f.ip);
  at::NoGradGuard no_grad;
  at::Tensor tokens = f.ip->image_tokens(at::randn({2, 5, 12}));
  auto ref = tiny_inputs(2);
  auto tgt = tiny_inputs(2);
  nn::ReferenceKv kv = encoder.forward(ref, tokens);

  // IP K/V from the encoder == the decoder's own image branch on the same tokens.
  auto own = tgt;
  own.ip_tokens = tokens;
  at::Tensor own_ip = f.unet->forward(own);
  auto nokv = tgt;
  nokv.reference = std::make_shared<nn::ReferenceKv>(kv.without_reference());
  at::Tensor no_reference = f.unet->forward(nokv);
  EXPECT_TRUE(at::allclose(own_ip, no_reference, 1e-5, 1e-5)) << (own_ip - no_reference).abs().max();

  // The reference changes the output; dropping every token is the no-reference mode.
  auto full = tgt;
  full.reference = std::make_shared<nn::ReferenceKv>(kv);
  at::Tensor with_reference = f.unet->forward(full);
  EXPECT_GT((with_reference - no_reference).abs().max().item<double>(), 1e-3);
  auto all_dropped = tgt;
  all_dropped.reference = std::make_shared<nn::ReferenceKv>(kv.drop_tokens(1.0));
  EXPECT_TRUE(at::allclose(f.unet->forward(all_dropped), no_reference, 1e-5, 1e-5));
  EXPECT_TRUE(at::equal(kv.drop_tokens(0.0).blocks[0].k, kv.blocks[0].k));

  // Dropout: the same token subset for every sample, reproducible from the generator's seed.
  auto gen = [] { return at::make_generator<at::CPUGeneratorImpl>(42); };
  nn::ReferenceKv dropped = kv.drop_tokens(0.5, gen());
  nn::ReferenceKv again = kv.drop_tokens(0.5, gen());
  int64_t kept = 0, total = 0;
  for (size_t i = 0; i < kv.blocks.size(); ++i) {
    const auto& d = dropped.blocks[i];
    EXPECT_TRUE(at::equal(d.k, again.blocks[i].k));
    EXPECT_TRUE(at::equal(d.ip_k, kv.blocks[i].ip_k));
    // Every kept token is a whole column of the original, for both samples at once.
    for (int64_t j = 0; j < d.k.size(1); ++j) {
      at::Tensor col = d.k.select(1, j);                                                   // [B, C]
      at::Tensor match = (kv.blocks[i].k - col.unsqueeze(1)).abs().amax({0, 2}).eq(0);  // [M]
      EXPECT_TRUE(match.any().item<bool>());
    }
    kept += d.k.size(1);
    total += kv.blocks[i].k.size(1);
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, total);
  EXPECT_THROW(kv.drop_tokens(1.5), c10::Error);
}

TEST(KvEncoder, EncoderLorasRunOnlyInTheEncoder) {
  at::manual_seed(4);
  Fixture f;
  auto in = tiny_inputs(2);
  at::NoGradGuard no_grad;
  at::Tensor plain = f.unet->forward(in);
  nn::ReferenceKv before = [&] {
    KvEncoder probe(f.unet, KvEncoderOptions());
    return probe.forward(in, {});
  }();
  KvEncoder encoder(f.unet, KvEncoderOptions());
  randomize(encoder, f.ip);
  // The decoder and LCM runs never see the encoder's LoRAs...
  EXPECT_TRUE(at::equal(f.unet->forward(in), plain));
  // ...but the encoder's own run does (its K/V change).
  nn::ReferenceKv after = encoder.forward(in, {});
  EXPECT_GT((after.blocks[1].k - before.blocks[1].k).abs().max().item<double>(), 1e-3);
  // Selecting the adapter explicitly turns it on in a full run.
  auto with_lora = in;
  with_lora.adapters = std::vector<std::string>{KvEncoder::kAdapterName};
  EXPECT_GT((f.unet->forward(with_lora) - plain).abs().max().item<double>(), 1e-3);
}

TEST(KvEncoder, GradientsReachEveryTrainableTensor) {
  at::manual_seed(5);
  Fixture f;
  KvEncoder encoder(f.unet, KvEncoderOptions());
  randomize(encoder, f.ip);
  for (auto& p : f.unet->parameters()) p.set_requires_grad(false);
  at::Tensor tokens = f.ip->image_tokens(at::randn({2, 5, 12}));
  auto tgt = tiny_inputs(2);
  tgt.reference = std::make_shared<nn::ReferenceKv>(encoder.forward(tiny_inputs(2), tokens));
  f.unet->forward(tgt).square().mean().backward();
  for (const auto& [key, t] : encoder.trainable_parameters()) {
    ASSERT_TRUE(t.grad().defined()) << key;
    EXPECT_GT(t.grad().abs().max().item<double>(), 0.0) << key;
  }
  for (const auto& item : f.ip->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().max().item<double>(), 0.0) << item.key();
  }
}

TEST(KvEncoder, LoadTrainableChecksKeysAndShapes) {
  at::manual_seed(6);
  Fixture f;
  KvEncoder a(f.unet, KvEncoderOptions());
  auto values = a.trainable_parameters();
  std::map<std::string, at::Tensor> copy;
  for (auto& [k, t] : values) copy[k] = at::randn(t.sizes());
  a.load_trainable(copy, "ckpt.h5");
  for (auto& [k, t] : a.trainable_parameters()) EXPECT_TRUE(at::equal(t, copy[k])) << k;
  copy.erase(copy.begin());
  EXPECT_THROW(a.load_trainable(copy, "ckpt.h5"), c10::Error);
}

}  // namespace
}  // namespace lookahead::model::adapters
