// Augmentation: Resize + RandomCrop at a drawn offset and the horizontal flip (image_io), and the
// loader's draws, which must depend on (seed, epoch, sample) only.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "data/image_io.h"
#include "data/loader.h"
#include "data/tools.h"
#include "data_test_util.h"

namespace lookahead::data {
namespace {

using test::ScratchDir;

at::Tensor ramp_image(int64_t h, int64_t w) {  // uint8 [h, w, 3], every pixel distinct enough to locate
  at::Tensor y = at::arange(h, at::kFloat).view({h, 1}).expand({h, w});
  at::Tensor x = at::arange(w, at::kFloat).view({1, w}).expand({h, w});
  return at::stack({x * 3, y * 5, (x + y) * 2}, 2).remainder(256).to(at::kByte).contiguous();
}

TEST(Augment, CenteredPlacementIsTheCenterCrop) {
  at::Tensor img = ramp_image(40, 64);
  CropTransform a, b;
  at::Tensor x = resize_center_crop(img, 20, &a);
  at::Tensor y = resize_crop(img, 20, CropPlacement{}, &b);
  EXPECT_TRUE(at::equal(x, y));
  EXPECT_EQ(a.shift_x, b.shift_x);
  EXPECT_FALSE(b.flipped);
}

TEST(Augment, CropOffsetsSpanTheSlack) {
  at::Tensor img = ramp_image(32, 48);  // no resize at size 32: crops are plain slices
  at::Tensor full = img.permute({2, 0, 1}).to(at::kFloat).div(127.5).sub(1.0);  // [3, 32, 48]
  EXPECT_TRUE(at::equal(resize_crop(img, 32, {0.0, 0.5, false}), full.slice(2, 0, 32)));
  EXPECT_TRUE(at::equal(resize_crop(img, 32, {1.0, 0.5, false}), full.slice(2, 16, 48)));
  EXPECT_TRUE(at::equal(resize_crop(img, 32, {0.25, 0.5, false}), full.slice(2, 4, 36)));
  EXPECT_THROW(resize_crop(img, 32, {1.5, 0.5, false}), c10::Error);
}

TEST(Augment, FlipMirrorsPixelsAndLandmarks) {
  SynthFace f = draw_synthetic_face(2, 1, 48, 7, true);
  CropTransform t, tf;
  at::Tensor x = resize_crop(f.image, 24, {0.5, 0.5, false}, &t);
  at::Tensor xf = resize_crop(f.image, 24, {0.5, 0.5, true}, &tf);
  EXPECT_TRUE(at::equal(xf, x.flip({2})));
  EXPECT_TRUE(tf.flipped);
  at::Tensor lm = transform_landmarks(f.landmarks, t);
  at::Tensor lmf = flip_landmark_order(transform_landmarks(f.landmarks, tf));
  // Mirrored x, and the roles swap: the flipped image's left eye is the original's right eye.
  for (int64_t k : {0, 1, 2, 3, 4}) {
    const int64_t src = std::vector<int64_t>{1, 0, 2, 4, 3}[static_cast<size_t>(k)];
    EXPECT_NEAR(lmf[k][0].item<double>(), 23.0 - lm[src][0].item<double>(), 1e-5);
    EXPECT_NEAR(lmf[k][1].item<double>(), lm[src][1].item<double>(), 1e-5);
  }
  // The left eye (smaller x) stays left of the right eye after the flip.
  EXPECT_LT(lmf[0][0].item<double>(), lmf[1][0].item<double>());
}

/// A set of non-square images (so that random crops differ), two identities x three records.
std::string write_wide_set(const ScratchDir& d) {
  TrainingSetWriter w(d.path("wide.h5"));
  for (int64_t id = 0; id < 2; ++id)
    for (int64_t k = 0; k < 3; ++k) {
      RecordData r;
      at::Tensor img = (ramp_image(24, 40).to(at::kInt) + 17 * (3 * id + k)).remainder(256).to(at::kByte).contiguous();
      r.image = encode_png(img);
      r.identity = id;
      r.photo = true;
      r.landmarks = at::tensor({10.f, 8.f, 30.f, 8.f, 20.f, 12.f, 12.f, 18.f, 28.f, 18.f}).view({5, 2});
      w.add(r);
    }
  w.finish();
  return d.path("wide.h5");
}

LoaderOptions aug_options(int threads, int rank = 0, int world = 1) {
  LoaderOptions o;
  o.resolution = 16;
  o.global_batch = 4;
  o.rank = rank;
  o.world_size = world;
  o.seed = 5;
  o.threads = threads;
  o.prefetch = 2;
  o.random_crop = true;
  o.hflip_p = 0.5;
  return o;
}

TEST(Augment, LoaderDrawsDependOnTheSampleOnly) {
  ScratchDir d;
  auto set = TrainingSet::open(write_wide_set(d));
  std::vector<LoadedBatch> one;
  {
    Loader l(set, aug_options(0));
    for (int k = 0; k < 6; ++k) one.push_back(l.next());
  }
  {
    Loader l(set, aug_options(3));
    for (int k = 0; k < 6; ++k) EXPECT_TRUE(at::equal(l.next().target_images, one[k].target_images)) << k;
  }
  // Two ranks: each half of the global batch equals the same rows of the one-rank batch.
  Loader r0(set, aug_options(1, 0, 2)), r1(set, aug_options(1, 1, 2));
  for (int k = 0; k < 6; ++k) {
    LoadedBatch a = r0.next(), b = r1.next();
    EXPECT_TRUE(at::equal(at::cat({a.target_images, b.target_images}), one[k].target_images)) << k;
    EXPECT_TRUE(at::equal(at::cat({a.reference_landmarks, b.reference_landmarks}), one[k].reference_landmarks)) << k;
  }
  // Random crops move the window: most samples differ from their center crop.
  LoaderOptions plain = aug_options(0), crop_only = aug_options(0), flip_only = aug_options(0);
  plain.random_crop = false;
  plain.hflip_p = 0;
  crop_only.hflip_p = 0;
  flip_only.random_crop = false;
  Loader p(set, plain), c(set, crop_only), f(set, flip_only);
  int differ = 0, flipped = 0, total = 0;
  for (int k = 0; k < 6; ++k) {
    LoadedBatch a = p.next(), b = c.next(), e = f.next();
    for (int64_t i = 0; i < a.size(); ++i, ++total) {
      differ += !at::equal(a.target_images[i], b.target_images[i]);
      // Every flip-only sample is the center crop or its mirror image, with landmark roles swapped.
      const bool mirrored = at::equal(e.target_images[i], a.target_images[i].flip({2}));
      EXPECT_TRUE(mirrored || at::equal(e.target_images[i], a.target_images[i])) << k << " " << i;
      if (mirrored) {
        EXPECT_NEAR(e.target_landmarks[i][0][0].item<double>(), 15.0 - a.target_landmarks[i][1][0].item<double>(), 1e-4);
        ++flipped;
      }
    }
  }
  EXPECT_GT(differ, total / 2);
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, total);
}

}  // namespace
}  // namespace lookahead::data
