// `data encode` in process: encode_training_set against direct Conditioner calls (records copied
// unchanged, latents / prompt embeddings / CLIP features / clip_uncond equal to the encoders'
// outputs) at any rank count, float16 latents, the batch source reading globals/clip_uncond, and
// build_conditioner (fixed tiny encoders, the caller's random stream untouched, config errors).
// EncodedFiles.* compares two encoded files bit for bit (run by encode_e2e.sh on the np1 and np2
// outputs of the CLI, named by LA_ENCODED_A / LA_ENCODED_B).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

#include "data/image_io.h"
#include "data/tools.h"
#include "data/training_set.h"
#include "model/vision/clip_vision.h"
#include "tests/test_main.h"
#include "trainer/conditioning.h"
#include "trainer/encode_set.h"
#include "trainer/hdf5_batch_source.h"

namespace lookahead::trainer {
namespace {

namespace fs = std::filesystem;

/// A scratch folder shared by every rank (rank 0's pid names it), removed at the end.
struct SharedScratch {
  fs::path dir;
  SharedScratch() {
    auto& world = test::world();
    at::Tensor pid = at::tensor({static_cast<int64_t>(::getpid())}, at::kLong);
    world.comm()->broadcast(pid, 0)->wait();
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path() /
          ("la_encode_" + std::to_string(pid.item<int64_t>()) + "_" + info->name() + "_np" + std::to_string(world.size()));
    if (world.is_root()) {
      fs::remove_all(dir);
      fs::create_directories(dir);
    }
    world.comm()->barrier()->wait();
  }
  ~SharedScratch() {
    test::world().comm()->barrier()->wait();
    if (test::world().is_root()) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  }
  std::string path(const std::string& name) const { return (dir / name).string(); }
};

TrainConfig tiny_config(const std::string& train_set) {
  TrainConfig c;
  c.model.preset = trainer::Preset::kTiny;
  c.model.dtype = trainer::ModelDtype::kFp32;
  c.data.train_set = train_set;
  c.data.resolution = 64;
  c.data.loader_threads = 0;
  c.train.batch_per_rank = 2;
  return c;
}

/// 7 identities x 2 records of 48x64 faces (non-square: the crop matters), written by rank 0.
std::string synth(const SharedScratch& s, bool extras) {
  data::SynthOptions o;
  o.out = s.path(extras ? "synth_extras.h5" : "synth.h5");
  o.identities = 7;
  o.per_identity = 2;
  o.size = 48;
  o.seed = 11;
  if (extras) {
    o.latent_size = 2;
    o.prompt_embeds = {3, 24};
    o.pooled = 16;
    o.clip_features = {5, 12};
  }
  if (test::world().is_root()) data::write_synthetic(o);
  test::world().comm()->barrier()->wait();
  return o.out;
}

void expect_encoded(model::Conditioner& cond, const data::TrainingSet& in, const data::TrainingSet& out,
                    int64_t resolution) {
  ASSERT_EQ(out.size(), in.size());
  EXPECT_EQ(out.extra_shape(data::kLatents), (std::vector<int64_t>{4, resolution / 8, resolution / 8}));
  EXPECT_EQ(out.extra_shape(data::kPromptEmbeds), (std::vector<int64_t>{77, 24}));
  EXPECT_EQ(out.extra_shape(data::kPooledPromptEmbeds), (std::vector<int64_t>{16}));
  EXPECT_EQ(out.extra_shape(data::kClipFeatures), (std::vector<int64_t>{5, 12}));
  EXPECT_TRUE(at::equal(out.global(data::kClipUncond), cond.clip_uncond()));
  for (int64_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out.image_bytes(i), in.image_bytes(i)) << i;
    EXPECT_EQ(out.identity(i), in.identity(i)) << i;
    EXPECT_EQ(out.prompt(i), in.prompt(i)) << i;
    EXPECT_EQ(out.photo(i), in.photo(i)) << i;
    EXPECT_TRUE(at::allclose(out.landmarks(i), in.landmarks(i), 0, 0, /*equal_nan=*/true)) << i;
    const data::Record r = in.get(i);
    const at::Tensor image = data::resize_center_crop(r.image, resolution).unsqueeze(0);
    const at::Tensor latents = cond.encode_latents(image)[0];
    const at::Tensor stored = out.extra(data::kLatents, i);
    if (stored.scalar_type() == at::kHalf) {
      // float16 rounding (a value near a rounding boundary may land one half-ulp away).
      EXPECT_TRUE(at::allclose(stored.to(at::kFloat), latents.to(at::kHalf).to(at::kFloat), 1e-3, 1e-4)) << i;
    } else {
      EXPECT_TRUE(at::allclose(stored, latents, 1e-4, 1e-5)) << i;
    }
    const auto p = cond.encode_prompts({r.prompt});
    EXPECT_TRUE(at::allclose(out.extra(data::kPromptEmbeds, i), p.context[0], 1e-4, 1e-5)) << i;
    EXPECT_TRUE(at::allclose(out.extra(data::kPooledPromptEmbeds, i), p.pooled[0], 1e-4, 1e-5)) << i;
    const at::Tensor unit = r.image.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat) / 255.0;
    const at::Tensor clip = cond.clip_features(unit)[0];
    EXPECT_TRUE(at::allclose(out.extra(data::kClipFeatures, i), clip, 1e-4, 1e-5)) << i;
  }
}

TEST(EncodeSet, MatchesDirectConditionerCalls) {
  at::set_num_threads(1);
  SharedScratch s;
  const std::string in = synth(s, /*extras=*/false);
  auto cond = build_conditioner(tiny_config(in), at::kCPU);
  EncodeOptions o;
  o.in = in;
  o.out = s.path("encoded.h5");
  o.resolution = 32;
  o.batch = 3;  // 14 records: 5 blocks, the last one partial
  const EncodeReport r = encode_training_set(test::world(), *cond, o);
  EXPECT_EQ(r.records, 14);
  EXPECT_EQ(r.latent_shape, (std::vector<int64_t>{4, 4, 4}));
  EXPECT_EQ(r.prompt_shape, (std::vector<int64_t>{77, 24}));
  EXPECT_EQ(r.pooled_dim, 16);
  EXPECT_EQ(r.clip_shape, (std::vector<int64_t>{5, 12}));
  test::world().comm()->barrier()->wait();
  if (!test::world().is_root()) return;
  auto src = data::TrainingSet::open(in), dst = data::TrainingSet::open(o.out);
  EXPECT_FALSE(src->has_extra(data::kLatents));
  expect_encoded(*cond, *src, *dst, 32);
  EXPECT_EQ(dst->extra(data::kLatents, 0).scalar_type(), at::kFloat);
}

TEST(EncodeSet, ReplacesExistingTensorsAndHalvesLatents) {
  at::set_num_threads(1);
  SharedScratch s;
  const std::string in = synth(s, /*extras=*/true);
  auto cond = build_conditioner(tiny_config(in), at::kCPU);
  EncodeOptions o;
  o.in = in;
  o.out = s.path("half.h5");
  o.resolution = 64;
  o.batch = 4;
  o.half_latents = true;
  encode_training_set(test::world(), *cond, o);
  test::world().comm()->barrier()->wait();
  if (test::world().is_root()) {
    auto src = data::TrainingSet::open(in), dst = data::TrainingSet::open(o.out);
    EXPECT_EQ(dst->extra(data::kLatents, 3).scalar_type(), at::kHalf);
    expect_encoded(*cond, *src, *dst, 64);
  }
  // The batch source reads the set's clip_uncond.
  auto source = open_hdf5_batch_source(tiny_config(o.out), test::world().rank(), test::world().size(),
                                       test::world().device());
  EXPECT_NE(source->describe().find("globals/clip_uncond"), std::string::npos) << source->describe();
  const RankBatch b = source->next();
  EXPECT_TRUE(at::equal(b.batch.clip_uncond, cond->clip_uncond()));
  EXPECT_EQ(b.batch.tgt_prompt.sizes(), (at::IntArrayRef{2, 77, 24}));
  EXPECT_EQ(b.batch.z_tgt.sizes(), (at::IntArrayRef{2, 4, 8, 8}));
  // A set without the global: zeros, and describe() says so.
  auto plain = open_hdf5_batch_source(tiny_config(in), test::world().rank(), test::world().size(),
                                      test::world().device());
  EXPECT_NE(plain->describe().find("zeros"), std::string::npos) << plain->describe();
  EXPECT_TRUE(at::equal(plain->next().batch.clip_uncond, at::zeros({1, 5, 12})));
}

TEST(EncodeSet, OnTheFlyEqualsPrecomputed) {
  at::set_num_threads(1);
  SharedScratch s;
  const std::string in = synth(s, /*extras=*/false);
  auto cond = build_conditioner(tiny_config(in), at::kCPU);
  EncodeOptions o;
  o.in = in;
  o.out = s.path("encoded.h5");
  o.resolution = 64;
  o.batch = 2;
  encode_training_set(test::world(), *cond, o);
  test::world().comm()->barrier()->wait();
  const int rank = test::world().rank(), size = test::world().size();
  auto fly = open_hdf5_batch_source(tiny_config(in), rank, size, test::world().device());
  auto pre = open_hdf5_batch_source(tiny_config(o.out), rank, size, test::world().device());
  EXPECT_NE(fly->describe().find("on the fly"), std::string::npos) << fly->describe();
  EXPECT_EQ(fly->latent_shape(), pre->latent_shape());
  for (int step = 0; step < 2; ++step) {
    const RankBatch a = fly->next(), b = pre->next();
    ASSERT_EQ(a.batch.size(), b.batch.size());
    EXPECT_TRUE(at::allclose(a.batch.z_tgt, b.batch.z_tgt, 1e-4, 1e-5)) << step;
    EXPECT_TRUE(at::allclose(a.batch.z_ref, b.batch.z_ref, 1e-4, 1e-5)) << step;
    EXPECT_TRUE(at::allclose(a.batch.tgt_prompt, b.batch.tgt_prompt, 1e-4, 1e-5)) << step;
    EXPECT_TRUE(at::allclose(a.batch.ref_pooled, b.batch.ref_pooled, 1e-4, 1e-5)) << step;
    EXPECT_TRUE(at::allclose(a.batch.clip_ref, b.batch.clip_ref, 1e-4, 1e-5)) << step;
    EXPECT_TRUE(at::equal(a.batch.clip_uncond, b.batch.clip_uncond)) << step;
    EXPECT_TRUE(at::equal(a.batch.time_ids, b.batch.time_ids)) << step;
  }
  // Without any way to encode, a raw set is refused with the original message.
  TrainConfig sdxl = tiny_config(in);
  sdxl.model.preset = trainer::Preset::kSdxl;
  try {
    open_hdf5_batch_source(sdxl, rank, size, test::world().device());
    FAIL() << "a raw set was accepted without encoders";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no precomputed 'latents'"), std::string::npos) << e.what();
  }
}

TEST(BuildConditioner, TinyIsFixedAndLeavesTheRandomStream) {
  const TrainConfig c = tiny_config("unused.h5");
  at::manual_seed(123);
  const at::Tensor expected_next = at::randn({4});
  at::manual_seed(123);
  auto a = build_conditioner(c, at::kCPU);
  EXPECT_TRUE(at::equal(at::randn({4}), expected_next)) << "build_conditioner moved the caller's CPU stream";
  at::manual_seed(999);
  auto b = build_conditioner(c, at::kCPU);
  const auto pb = b->vae()->named_parameters();
  for (const auto& item : a->vae()->named_parameters())
    EXPECT_TRUE(at::equal(item.value(), pb[item.key()])) << item.key();
  EXPECT_TRUE(at::equal(a->clip_uncond(), b->clip_uncond()));
  EXPECT_TRUE(at::equal(a->encode_prompts({"x"}).context, b->encode_prompts({"x"}).context));
  EXPECT_EQ(a->dtype(), at::kFloat);
  // Every rank holds the same encoders.
  at::Tensor u = a->clip_uncond().contiguous();
  at::Tensor max = u.clone(), min = u.clone();
  test::world().comm()->all_reduce(max, dist::ReduceOp::kMax)->wait();
  test::world().comm()->all_reduce(min, dist::ReduceOp::kMin)->wait();
  EXPECT_TRUE(at::equal(max, u) && at::equal(min, u));
}

TEST(BuildConditioner, SdxlNamesTheMissingKey) {
  TrainConfig c = tiny_config("unused.h5");
  c.model.preset = trainer::Preset::kSdxl;
  c.model.image_encoder = "/nowhere/image_encoder";
  try {
    build_conditioner(c, at::kCPU);
    FAIL() << "no error without model.sdxl_folder";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.sdxl_folder"), std::string::npos) << e.what();
  }
  c.model.sdxl_folder = "/nowhere/sdxl";
  c.model.image_encoder.clear();
  EXPECT_FALSE(can_build_conditioner(c));
  try {
    build_conditioner(c, at::kCPU);
    FAIL() << "no error without model.image_encoder";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.image_encoder"), std::string::npos) << e.what();
  }
}

/// Bit-for-bit equality of two encoded files (the CLI at np1 and np2), named by the environment.
TEST(EncodedFiles, Identical) {
  const char* a = std::getenv("LA_ENCODED_A");
  const char* b = std::getenv("LA_ENCODED_B");
  ASSERT_TRUE(a && b) << "LA_ENCODED_A and LA_ENCODED_B name the files to compare (encode_e2e.sh)";
  auto x = data::TrainingSet::open(a), y = data::TrainingSet::open(b);
  ASSERT_EQ(x->size(), y->size());
  ASSERT_GT(x->size(), 0);
  EXPECT_EQ(x->global_names(), y->global_names());
  EXPECT_TRUE(at::equal(x->global(data::kClipUncond), y->global(data::kClipUncond)));
  for (const char* name : {data::kLatents, data::kPromptEmbeds, data::kPooledPromptEmbeds, data::kClipFeatures}) {
    ASSERT_TRUE(x->has_extra(name)) << name;
    for (int64_t i = 0; i < x->size(); ++i) EXPECT_TRUE(at::equal(x->extra(name, i), y->extra(name, i))) << name << " " << i;
  }
  for (int64_t i = 0; i < x->size(); ++i) {
    EXPECT_EQ(x->image_bytes(i), y->image_bytes(i)) << i;
    EXPECT_EQ(x->prompt(i), y->prompt(i)) << i;
  }
}

}  // namespace
}  // namespace lookahead::trainer
