// Loader: deterministic whatever the thread count, landmarks follow the crop, resume, corrupt
// records (error naming the index, or skipped and counted), precomputed tensors stacked.
#include <gtest/gtest.h>

#include <memory>

#include "data/image_io.h"
#include "data/loader.h"
#include "tests/data/data_test_util.h"

namespace lookahead::data {
namespace {

using test::ScratchDir;

LoaderOptions options(int threads, int64_t batch = 4) {
  LoaderOptions o;
  o.resolution = 16;
  o.global_batch = batch;
  o.seed = 3;
  o.threads = threads;
  o.prefetch = 3;
  return o;
}

void expect_same(const LoadedBatch& a, const LoadedBatch& b, const std::string& what) {
  EXPECT_EQ(a.pairs, b.pairs) << what;
  EXPECT_EQ(a.start, b.start) << what;
  EXPECT_TRUE(at::equal(a.target_images, b.target_images)) << what;
  EXPECT_TRUE(at::equal(a.reference_images, b.reference_images)) << what;
  EXPECT_TRUE(at::equal(a.target_landmarks, b.target_landmarks)) << what;
  EXPECT_EQ(a.target_prompts, b.target_prompts) << what;
}

TEST(DataLoader, DeterministicAcrossThreadCounts) {
  ScratchDir d;
  auto set = TrainingSet::open(test::make_synth(d, 5, 4, 32));
  std::vector<LoadedBatch> ref;
  {
    Loader l(set, options(0));
    for (int k = 0; k < 12; ++k) ref.push_back(l.next());  // 5 batches/epoch: crosses epochs
  }
  for (int threads : {1, 3, 5}) {
    Loader l(set, options(threads));
    for (int k = 0; k < 12; ++k) expect_same(l.next(), ref[k], "threads " + std::to_string(threads));
  }
  EXPECT_EQ(ref[0].target_images.sizes(), (at::IntArrayRef{4, 3, 16, 16}));
  EXPECT_EQ(ref[5].epoch, 1);
  for (const LoadedBatch& b : ref)
    for (size_t i = 0; i < b.pairs.size(); ++i) {
      EXPECT_NE(b.pairs[i].target, b.pairs[i].reference);
      EXPECT_EQ(set->identity(b.pairs[i].target), set->identity(b.pairs[i].reference));
    }
}

TEST(DataLoader, LandmarksFollowTheResize) {
  ScratchDir d;
  auto set = TrainingSet::open(test::make_synth(d, 3, 2, 32));
  Loader l(set, options(2));
  LoadedBatch b = l.next();
  for (int64_t i = 0; i < b.size(); ++i) {
    at::Tensor src = set->landmarks(b.pairs[i].target);
    EXPECT_TRUE(at::allclose(b.target_landmarks[i], (src + 0.5) * 0.5 - 0.5)) << i;  // 32 -> 16
  }
}

TEST(DataLoader, ResumeFromCursor) {
  ScratchDir d;
  auto set = TrainingSet::open(test::make_synth(d, 4, 3, 16));
  Loader a(set, options(2));
  for (int k = 0; k < 4; ++k) a.next();
  Cursor c = a.cursor();
  std::vector<LoadedBatch> more;
  for (int k = 0; k < 4; ++k) more.push_back(a.next());
  Loader b(set, options(3));
  b.next();
  b.set_cursor(c);
  EXPECT_EQ(b.cursor(), c);
  for (int k = 0; k < 4; ++k) expect_same(b.next(), more[k], "after resume, batch " + std::to_string(k));
}

TEST(DataLoader, CorruptRecordIsRethrownWithItsIndex) {
  ScratchDir d;
  const std::string path = test::make_synth(d, 4, 3, 32);
  test::corrupt_record(path, 5);
  auto set = TrainingSet::open(path);
  for (int threads : {0, 2}) {
    Loader l(set, options(threads));
    bool thrown = false;
    for (int k = 0; k < l.batches_per_epoch() && !thrown; ++k) {
      try {
        l.next();
      } catch (const DataError& e) {
        thrown = true;
        EXPECT_EQ(e.record(), 5) << e.what();
        EXPECT_NE(std::string(e.what()).find("record 5"), std::string::npos) << e.what();
      }
    }
    EXPECT_TRUE(thrown) << "record 5 is a target once per epoch; threads " << threads;
  }  // the destructor joins workers that are still decoding
}

TEST(DataLoader, SkipCorruptReplacesAndKeepsTheBatchSize) {
  ScratchDir d;
  const std::string path = test::make_synth(d, 4, 3, 32);
  test::corrupt_record(path, 5);
  auto set = TrainingSet::open(path);
  LoaderOptions o = options(2);
  o.skip_corrupt = true;
  Loader l(set, o);
  int64_t replaced = 0;
  for (int epoch = 0; epoch < 2; ++epoch)
    for (int k = 0; k < l.batches_per_epoch(); ++k) {
      LoadedBatch b = l.next();
      // The trainer's step draws are sized by the batch: a replaced sample keeps its place.
      EXPECT_EQ(b.size(), 4);
      EXPECT_EQ(b.target_images.size(0), 4);
      EXPECT_EQ(b.reference_landmarks.size(0), 4);
      replaced += b.skipped;
      for (const Pair& p : b.pairs) {
        EXPECT_NE(p.target, 5);
        EXPECT_NE(p.reference, 5);
      }
    }
  EXPECT_GE(replaced, 2) << "record 5 is a target once per epoch";
  EXPECT_EQ(l.skipped(), replaced);
}

TEST(DataLoader, SkipCorruptGivesEveryRankCountTheSameBatches) {
  // The replacement of a corrupt sample depends on (seed, epoch, sample) only: two ranks' slices
  // put together are the one-rank batch, replacements included.
  ScratchDir d;
  const std::string path = test::make_synth(d, 4, 3, 32);
  test::corrupt_record(path, 5);
  test::corrupt_record(path, 8);
  auto set = TrainingSet::open(path);
  LoaderOptions one = options(0);
  one.skip_corrupt = true;
  Loader whole(set, one);
  std::vector<std::unique_ptr<Loader>> halves;
  for (int r = 0; r < 2; ++r) {
    LoaderOptions o = one;
    o.rank = r;
    o.world_size = 2;
    halves.push_back(std::make_unique<Loader>(set, o));
  }
  int64_t replaced = 0;
  for (int k = 0; k < 2 * whole.batches_per_epoch(); ++k) {
    const LoadedBatch w = whole.next();
    const LoadedBatch a = halves[0]->next(), b = halves[1]->next();
    std::vector<Pair> joined = a.pairs;
    joined.insert(joined.end(), b.pairs.begin(), b.pairs.end());
    EXPECT_EQ(joined, w.pairs) << "batch " << k;
    EXPECT_EQ(a.skipped + b.skipped, w.skipped) << "batch " << k;
    EXPECT_TRUE(at::equal(at::cat({a.target_images, b.target_images}), w.target_images)) << "batch " << k;
    replaced += w.skipped;
  }
  EXPECT_GE(replaced, 4);
}

TEST(DataLoader, PrecomputedTensorsAreStacked) {
  ScratchDir d;
  auto set = TrainingSet::open(test::make_synth(d, 3, 2, 32, /*extras=*/true));
  Loader l(set, options(1, 2));
  LoadedBatch b = l.next();
  EXPECT_EQ(b.target_latents.sizes(), (at::IntArrayRef{2, 4, 4, 4}));
  EXPECT_EQ(b.reference_latents.sizes(), (at::IntArrayRef{2, 4, 4, 4}));
  EXPECT_EQ(b.target_prompt_embeds.sizes(), (at::IntArrayRef{2, 3, 24}));
  EXPECT_EQ(b.reference_pooled_prompt_embeds.sizes(), (at::IntArrayRef{2, 16}));
  EXPECT_EQ(b.reference_clip_features.sizes(), (at::IntArrayRef{2, 5, 12}));
  EXPECT_TRUE(at::equal(b.reference_latents[1], set->extra(kLatents, b.pairs[1].reference)));
}

TEST(DataLoader, SingleRecordIdentitiesAreExcluded) {
  ScratchDir d;
  const std::string path = d.path("x.h5");
  {
    TrainingSetWriter w(path);
    for (int64_t id : {0, 0, 1, 2, 2, 2}) {
      RecordData r;
      r.image = encode_png(at::zeros({8, 8, 3}, at::kByte));
      r.identity = id;
      r.photo = true;
      w.add(r);
    }
    w.finish();
  }
  Loader l(TrainingSet::open(path), options(1, 5));
  EXPECT_EQ(l.num_pairs(), 5);
  EXPECT_EQ(l.excluded_identities(), 1);
  EXPECT_EQ(l.excluded_records(), 1);
  EXPECT_THROW(Loader(TrainingSet::open(path), options(1, 6)), DataError);  // 5 pairs < batch 6
}

}  // namespace
}  // namespace lookahead::data
