// Consistent self-attention across a batch (nn::BatchSharing, UNetInputs::batch_sharing) on tiny
// random UNets in fp32 on the CPU: rate 0 and singleton groups are plain attention, sharing
// changes every row of a group reproducibly per seed, groups never influence each other, the
// per-row K/V and the attention match a hand computation, only the up blocks share, and a
// sharding unit's recompute (after the forward has returned) still shares.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "model/nn/attention.h"
#include "model/nn/batch_sharing.h"
#include "model/unet/unet_2d_condition.h"

namespace lookahead::model {
namespace {

using nn::BatchSharing;

// Up block 0 has cross-attention (4 transformer blocks at 4x4 tokens for an 8x8 latent); so do
// both down blocks and the mid block.
unet::UNetConfig tiny_config(const std::string& up_block_0 = "CrossAttnUpBlock2D") {
  auto c = unet::UNetConfig::from_json(R"({
    "block_out_channels": [16, 32], "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1,
    "transformer_layers_per_block": [1, 2], "attention_head_dim": [2, 4], "cross_attention_dim": 24,
    "norm_num_groups": 4, "use_linear_projection": true, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 4, "projection_class_embeddings_input_dim": 40})",
                                       "tiny");
  c.up_block_types[0] = up_block_0;
  return c;
}

unet::UNetInputs tiny_inputs(int64_t b) {
  unet::UNetInputs in;
  in.sample = at::randn({b, 4, 8, 8});
  in.timestep = at::randint(0, 1000, {b}, at::kLong);
  in.encoder_hidden_states = at::randn({b, 3, 24});
  in.text_embeds = at::randn({b, 16});
  in.time_ids = at::randn({b, 6}) * 100;
  return in;
}

/// The given rows of every per-row input.
unet::UNetInputs rows_of(const unet::UNetInputs& in, const std::vector<int64_t>& rows) {
  at::Tensor index = at::tensor(rows, at::kLong);
  unet::UNetInputs out = in;
  for (at::Tensor* t : {&out.sample, &out.timestep, &out.encoder_hidden_states, &out.text_embeds, &out.time_ids})
    *t = t->index_select(0, index);
  return out;
}

std::shared_ptr<BatchSharing> sharing(std::vector<int64_t> groups, double rate, uint64_t seed) {
  auto s = std::make_shared<BatchSharing>();
  s->groups = std::move(groups);
  s->rate = rate;
  s->seed = seed;
  return s;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }
double row_diff(const at::Tensor& a, const at::Tensor& b, int64_t row) { return max_diff(a[row], b[row]); }

unet::UNet2DConditionModel random_unet(const std::string& up_block_0 = "CrossAttnUpBlock2D") {
  at::manual_seed(0);
  return unet::UNet2DConditionModel(tiny_config(up_block_0));
}

class BatchSharingUNet : public ::testing::Test {
 protected:
  BatchSharingUNet() : unet(random_unet()) {}
  at::Tensor run(unet::UNetInputs in, std::shared_ptr<BatchSharing> s = nullptr) {
    at::NoGradGuard no_grad;
    in.batch_sharing = std::move(s);
    return unet->forward(in);
  }
  unet::UNet2DConditionModel unet;
};

TEST_F(BatchSharingUNet, RateZeroIsPlainAttentionBitForBit) {
  auto in = tiny_inputs(3);
  at::Tensor plain = run(in);
  EXPECT_TRUE(at::equal(run(in, sharing({0, 0, 0}, 0.0, 1)), plain));
}

TEST_F(BatchSharingUNet, SharingChangesEveryRowOfTheGroupReproduciblyPerSeed) {
  auto in = tiny_inputs(3);
  at::Tensor plain = run(in);
  at::Tensor a = run(in, sharing({4, 4, 4}, 0.5, 1));
  at::Tensor again = run(in, sharing({4, 4, 4}, 0.5, 1));
  at::Tensor other_seed = run(in, sharing({4, 4, 4}, 0.5, 2));
  EXPECT_TRUE(at::equal(a, again));
  for (int64_t row = 0; row < 3; ++row) {
    EXPECT_GT(row_diff(a, plain, row), 1e-3) << "row " << row;
    EXPECT_GT(row_diff(a, other_seed, row), 1e-4) << "row " << row;
  }
  // The forward clears the sharing: a later plain call is plain again.
  EXPECT_TRUE(at::equal(run(in), plain));
}

TEST_F(BatchSharingUNet, GroupsDoNotInfluenceEachOther) {
  // Two groups interleaved in one batch, each against the group run alone. The plain UNet's rows
  // already differ by about 7e-7 between batches of 5 and 3 rows (the batched convolutions and
  // matmuls block differently), so this is as close as "alone" can be.
  auto in = tiny_inputs(5);
  at::Tensor mixed = run(in, sharing({5, 8, 5, 8, 5}, 0.5, 3));
  const std::vector<int64_t> rows5{0, 2, 4}, rows8{1, 3};
  at::Tensor alone5 = run(rows_of(in, rows5), sharing({5, 5, 5}, 0.5, 3));
  at::Tensor alone8 = run(rows_of(in, rows8), sharing({8, 8}, 0.5, 3));
  at::Tensor plain = run(in);
  for (size_t i = 0; i < rows5.size(); ++i) {
    EXPECT_LE(max_diff(mixed[rows5[i]], alone5[static_cast<int64_t>(i)]), 1e-5) << "row " << rows5[i];
    EXPECT_GT(row_diff(mixed, plain, rows5[i]), 1e-3) << "row " << rows5[i];
  }
  for (size_t i = 0; i < rows8.size(); ++i) {
    EXPECT_LE(max_diff(mixed[rows8[i]], alone8[static_cast<int64_t>(i)]), 1e-5) << "row " << rows8[i];
    EXPECT_GT(row_diff(mixed, plain, rows8[i]), 1e-3) << "row " << rows8[i];
  }
  // In a batch of the same shape, to the bit: other rows with other inputs, another group id and
  // another sharing leave group 5 exactly as it was.
  auto other = in;
  at::Tensor rows_1_3 = at::tensor({int64_t{1}, int64_t{3}});
  for (at::Tensor* t : {&other.sample, &other.encoder_hidden_states, &other.text_embeds, &other.time_ids})
    *t = t->index_copy(0, rows_1_3, at::randn_like(t->index_select(0, rows_1_3)));  // not in place: shared with `in`
  at::Tensor changed = run(other, sharing({5, 6, 5, 6, 5}, 0.5, 3));
  for (int64_t row : rows5) EXPECT_TRUE(at::equal(changed[row], mixed[row])) << "row " << row;
  EXPECT_GT(row_diff(changed, mixed, 1), 1e-3);
}

TEST_F(BatchSharingUNet, SingletonGroupsArePlainAttention) {
  auto in = tiny_inputs(3);
  at::Tensor plain = run(in);
  // Nobody shares: the plain path, to the bit.
  EXPECT_TRUE(at::equal(run(in, sharing({1, 2, 3}, 1.0, 1)), plain));
  // A singleton next to a sharing group: its own per-row attention, equal up to rounding.
  at::Tensor mixed = run(in, sharing({0, 0, 1}, 1.0, 1));
  EXPECT_LE(row_diff(mixed, plain, 2), 1e-6);
  EXPECT_GT(row_diff(mixed, plain, 0), 1e-3);
  EXPECT_GT(row_diff(mixed, plain, 1), 1e-3);
}

TEST(BatchSharing, OnlyUpBlocksShare) {
  // The same UNet without attention in its up blocks: sharing at rate 1 must change nothing, so any
  // leak into the down or mid blocks (which do have self-attention) fails.
  auto unet = random_unet("UpBlock2D");
  auto blocks = unet->transformer_blocks();
  EXPECT_EQ(blocks.size(), 5u);  // down 1 + 2, mid 2
  for (const auto& [path, block] : blocks) EXPECT_EQ(path.rfind("up_blocks", 0), std::string::npos) << path;
  auto in = tiny_inputs(3);
  at::NoGradGuard no_grad;
  at::Tensor plain = unet->forward(in);
  in.batch_sharing = sharing({0, 0, 0}, 1.0, 1);
  EXPECT_TRUE(at::equal(unet->forward(in), plain));
}

TEST(BatchSharing, ExtendedKvIsOwnTokensThenTheOtherRowsKeptTokens) {
  at::manual_seed(1);
  const int64_t n = 6, c = 4;
  at::Tensor k = at::randn({4, n, c}), v = at::randn({4, n, c});
  // Rate 1: each row of group 7 sees all tokens of its group, own first, then the others in order.
  BatchSharing all;
  all.groups = {7, 3, 7, 7};
  all.rate = 1.0;
  auto rows = nn::extend_kv(all, k, v, 2);
  ASSERT_EQ(rows.size(), 4u);
  auto r = [&](const at::Tensor& t, int64_t i) { return t.narrow(0, i, 1); };
  EXPECT_TRUE(at::equal(rows[0].k, at::cat({r(k, 0), r(k, 2), r(k, 3)}, 1)));
  EXPECT_TRUE(at::equal(rows[2].k, at::cat({r(k, 2), r(k, 0), r(k, 3)}, 1)));
  EXPECT_TRUE(at::equal(rows[3].v, at::cat({r(v, 3), r(v, 0), r(v, 2)}, 1)));
  EXPECT_TRUE(at::equal(rows[1].k, r(k, 1)));  // alone in group 3
  EXPECT_TRUE(at::equal(rows[1].v, r(v, 1)));

  // Rate 0.5: the kept tokens are the keep mask's, drawn per (seed, group, block).
  BatchSharing half = all;
  half.rate = 0.5;
  half.seed = 11;
  at::Tensor mask = half.keep_mask(7, 2, 3, n);  // [3, N] for rows 0, 2, 3
  ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{3, n}));
  const int64_t kept = mask.sum().item<int64_t>();
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 3 * n);
  auto kept_of = [&](const at::Tensor& t, int64_t row, int64_t member) {
    return r(t, row).index_select(1, mask[member].nonzero().flatten());
  };
  rows = nn::extend_kv(half, k, v, 2);
  EXPECT_TRUE(at::equal(rows[2].k, at::cat({r(k, 2), kept_of(k, 0, 0), kept_of(k, 3, 2)}, 1)));
  EXPECT_TRUE(at::equal(rows[2].v, at::cat({r(v, 2), kept_of(v, 0, 0), kept_of(v, 3, 2)}, 1)));
  EXPECT_EQ(rows[0].k.size(1), n + mask[1].sum().item<int64_t>() + mask[2].sum().item<int64_t>());
  // The mask depends on the group, the block and the seed, and on nothing else.
  EXPECT_TRUE(at::equal(mask, half.keep_mask(7, 2, 3, n)));
  EXPECT_FALSE(at::equal(mask, half.keep_mask(7, 3, 3, n)));
  EXPECT_FALSE(at::equal(mask, half.keep_mask(8, 2, 3, n)));
  half.seed = 12;
  EXPECT_FALSE(at::equal(mask, half.keep_mask(7, 2, 3, n)));
}

TEST(BatchSharing, SharedSelfAttentionMatchesAHandComputation) {
  at::manual_seed(2);
  const int64_t n = 5, c = 8, heads = 2, d = 4;
  nn::Attention attn(nn::AttentionOptions(c, heads, d));
  at::Tensor x = at::randn({3, n, c});
  BatchSharing s;
  s.groups = {1, 1, 2};
  s.rate = 1.0;
  at::NoGradGuard no_grad;
  at::Tensor out = nn::shared_self_attention(*attn, x, s, 0);  // [3, N, C]
  ASSERT_EQ(out.sizes(), x.sizes());
  at::Tensor q = at::linear(x, attn->to_q->weight), k = at::linear(x, attn->to_k->weight),
             v = at::linear(x, attn->to_v->weight);  // [3, N, C]
  auto by_hand = [&](int64_t row, const at::Tensor& keys, const at::Tensor& values) {
    std::vector<at::Tensor> per_head;
    for (int64_t h = 0; h < heads; ++h) {
      at::Tensor qh = q[row].narrow(1, h * d, d), kh = keys.narrow(1, h * d, d), vh = values.narrow(1, h * d, d);
      per_head.push_back(at::softmax(at::matmul(qh, kh.t()) / std::sqrt(double(d)), -1).matmul(vh));  // [N, d]
    }
    return at::linear(at::cat(per_head, 1), attn->out_proj()->weight, attn->out_proj()->bias);  // [N, C]
  };
  EXPECT_TRUE(at::allclose(out[0], by_hand(0, at::cat({k[0], k[1]}), at::cat({v[0], v[1]})), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(out[1], by_hand(1, at::cat({k[1], k[0]}), at::cat({v[1], v[0]})), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(out[2], by_hand(2, k[2], v[2]), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(out[2], attn->forward(x)[2], 1e-5, 1e-6));
  EXPECT_GT(max_diff(out[0], attn->forward(x)[0]), 1e-3);
}

/// Runs every unit in place and keeps (fn, inputs, output) so the test can call them again later,
/// as the sharded engine does in backward.
struct RecordingRunner : dist::UnitRunner {
  struct Call {
    std::string unit;
    dist::UnitFn fn;
    std::vector<at::Tensor> inputs, outputs;
  };
  std::vector<Call> calls;
  std::vector<at::Tensor> run(const std::string& unit, const dist::UnitFn& fn,
                              const std::vector<at::Tensor>& inputs) override {
    auto out = fn(inputs);
    calls.push_back({unit, fn, inputs, out});
    return out;
  }
};

TEST_F(BatchSharingUNet, UnitRecomputeAfterTheForwardStillShares) {
  RecordingRunner runner;
  unet->set_unit_runner(&runner);
  auto in = tiny_inputs(3);
  at::Tensor with_runner = run(in, sharing({0, 0, 0}, 0.5, 5));
  unet->set_unit_runner(nullptr);
  EXPECT_TRUE(at::equal(with_runner, run(in, sharing({0, 0, 0}, 0.5, 5))));
  int64_t up_attentions = 0;
  at::NoGradGuard no_grad;
  for (const auto& call : runner.calls) {
    // The UNet's context is clear now; each unit must bring its own sharing.
    EXPECT_TRUE(at::equal(call.fn(call.inputs)[0], call.outputs[0])) << call.unit;
    if (call.unit.rfind("up_blocks.0.attentions.", 0) == 0) ++up_attentions;
  }
  EXPECT_EQ(up_attentions, 2);
}

TEST(BatchSharing, RejectsBadUse) {
  auto unet = random_unet();
  auto in = tiny_inputs(2);
  in.batch_sharing = sharing({0, 0, 0}, 0.5, 1);
  EXPECT_THROW(unet->forward(in), c10::Error);  // 3 group ids for 2 rows
  in.batch_sharing = sharing({0, 0}, 1.5, 1);
  EXPECT_THROW(unet->forward(in), c10::Error);  // rate outside [0, 1]
  in.batch_sharing = sharing({0, 0}, 0.5, 1);
  in.reference = std::make_shared<nn::ReferenceKv>();
  EXPECT_THROW(unet->forward(in), c10::Error);  // does not compose with reference K/V
}

}  // namespace
}  // namespace lookahead::model
