// JPEG/PNG codecs and resize/crop with its landmark mapping.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "data/error.h"
#include "data/image_io.h"
#include "tests/data/data_test_util.h"

namespace lookahead::data {
namespace {

// A smooth image (JPEG-friendly), uint8 [h,w,3].
at::Tensor gradient(int64_t h, int64_t w) {
  auto y = at::linspace(0, 1, h).view({h, 1, 1}), x = at::linspace(0, 1, w).view({1, w, 1});
  auto c = at::tensor({0.9f, 0.5f, 0.2f}).view({1, 1, 3});
  return ((x * c + y * (1 - c)) * 255).round().to(at::kByte);
}

TEST(DataImage, PngRoundTripIsExact) {
  at::Tensor img = at::randint(0, 256, {17, 23, 3}).to(at::kByte);
  auto bytes = encode_png(img);
  EXPECT_EQ(sniff_codec(bytes.data(), bytes.size()), ImageCodec::kPng);
  EXPECT_TRUE(at::equal(decode_image(bytes.data(), bytes.size()), img));
}

TEST(DataImage, JpegRoundTripWithinTolerance) {
  at::Tensor img = gradient(48, 64);
  auto bytes = encode_jpeg(img, 95);
  EXPECT_EQ(sniff_codec(bytes.data(), bytes.size()), ImageCodec::kJpeg);
  at::Tensor back = decode_image(bytes.data(), bytes.size());
  ASSERT_EQ(back.sizes(), img.sizes());
  auto diff = (back.to(at::kFloat) - img.to(at::kFloat)).abs();
  EXPECT_LT(diff.mean().item<float>(), 1.5f);
  EXPECT_LE(diff.max().item<float>(), 12.0f);
}

// Decodes a JPEG written by PIL and compares with PIL's own decode (both are libjpeg-turbo with
// the default islow IDCT and fancy upsampling). Needs the test Python (LA_TEST_PYTHON) with PIL.
TEST(DataImage, JpegMatchesPillow) {
  const char* py = std::getenv("LA_TEST_PYTHON");
  if (!py || !*py) GTEST_SKIP() << "LA_TEST_PYTHON not set";
  test::ScratchDir d;
  const std::string jpg = d.path("pil.jpg"), raw = d.path("pil.rgb");
  const std::string script =
      "import sys\n"
      "from PIL import Image\n"
      "import numpy as np\n"
      "h, w = 37, 53\n"
      "y, x = np.mgrid[0:h, 0:w]\n"
      "a = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 7) % 256], -1).astype(np.uint8)\n"
      "Image.fromarray(a).save(sys.argv[1], quality=90)\n"
      "open(sys.argv[2], 'wb').write(np.asarray(Image.open(sys.argv[1]).convert('RGB')).tobytes())\n";
  const std::string script_path = d.path("w.py");
  std::ofstream(script_path) << script;
  const std::string cmd = std::string(py) + " " + script_path + " " + jpg + " " + raw + " 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "Python with PIL and numpy is not available";
  auto bytes = test::slurp(jpg);
  auto expect = test::slurp(raw);
  at::Tensor ours = decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ASSERT_EQ(ours.sizes(), (at::IntArrayRef{37, 53, 3}));
  at::Tensor theirs = at::from_blob(expect.data(), {37, 53, 3}, at::kByte).clone();
  auto diff = (ours.to(at::kInt) - theirs.to(at::kInt)).abs();
  EXPECT_LE(diff.max().item<int>(), 1) << "libjpeg-turbo versions may differ by rounding only";
}

TEST(DataImage, TruncatedAndJunkBytesThrowDataError) {
  auto bytes = encode_jpeg(gradient(64, 64), 90);
  std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(bytes.size() / 2));
  try {
    decode_image(cut.data(), cut.size(), "f.h5", 9);
    FAIL() << "a truncated JPEG decoded";
  } catch (const DataError& e) {
    EXPECT_EQ(e.record(), 9);
    EXPECT_NE(std::string(e.what()).find("f.h5: record 9: bad JPEG"), std::string::npos) << e.what();
  }
  auto png = encode_png(gradient(8, 8));
  png.resize(png.size() - 20);
  EXPECT_THROW(decode_image(png.data(), png.size()), DataError);
  std::vector<uint8_t> junk{1, 2, 3, 4};
  EXPECT_THROW(decode_image(junk.data(), junk.size()), DataError);
}

TEST(DataImage, ResizeCenterCropShapeRangeAndLandmarks) {
  at::Tensor img = gradient(60, 90);  // landscape: the width is cropped
  CropTransform t;
  at::Tensor x = resize_center_crop(img, 30, &t);
  EXPECT_EQ(x.sizes(), (at::IntArrayRef{3, 30, 30}));
  EXPECT_GE(x.min().item<float>(), -1.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
  EXPECT_DOUBLE_EQ(t.scale_x, 0.5);
  EXPECT_DOUBLE_EQ(t.scale_y, 0.5);
  // Width 90 -> 45, crop 7 columns on the left; half-pixel centers: x' = (x + 0.5) * 0.5 - 0.5 - 7.
  at::Tensor lm = at::tensor({20.f, 10.f, 45.f, 30.f}).reshape({2, 2});
  at::Tensor out = transform_landmarks(lm, t);
  EXPECT_FLOAT_EQ(out[0][0].item<float>(), 20.5f * 0.5f - 0.5f - 7.f);
  EXPECT_FLOAT_EQ(out[0][1].item<float>(), 10.5f * 0.5f - 0.5f);
  EXPECT_FLOAT_EQ(out[1][0].item<float>(), 45.5f * 0.5f - 0.5f - 7.f);
  // No resize: the crop alone shifts landmarks by whole pixels, and the pixels are copied.
  at::Tensor same = resize_center_crop(img, 60, &t);
  EXPECT_DOUBLE_EQ(t.shift_x, -15.0);
  EXPECT_TRUE(at::allclose(same, img.slice(1, 15, 75).permute({2, 0, 1}).to(at::kFloat) / 127.5 - 1));
  // NaN (unknown) stays NaN.
  at::Tensor nan = transform_landmarks(at::full({5, 2}, NAN), t);
  EXPECT_TRUE(at::isnan(nan).all().item<bool>());
}

// A bright dot lands where the landmark mapping says, after shrinking.
TEST(DataImage, LandmarkMappingFollowsPixels) {
  at::Tensor img = at::zeros({64, 128, 3}, at::kByte);
  img.slice(0, 20, 24).slice(1, 80, 84).fill_(255);  // a 4x4 block centered at (81.5, 21.5)
  CropTransform t;
  at::Tensor x = resize_center_crop(img, 32, &t).mean(0);  // [32,32]
  at::Tensor p = transform_landmarks(at::tensor({81.5f, 21.5f}).reshape({1, 2}), t);
  // Intensity-weighted centroid of the resized block.
  at::Tensor w = (x + 1).clamp_min(0);
  auto ys = at::arange(32, at::kFloat).view({32, 1}), xs = at::arange(32, at::kFloat).view({1, 32});
  float cx = ((w * xs).sum() / w.sum()).item<float>(), cy = ((w * ys).sum() / w.sum()).item<float>();
  EXPECT_NEAR(cx, p[0][0].item<float>(), 0.05);
  EXPECT_NEAR(cy, p[0][1].item<float>(), 0.05);
}

}  // namespace
}  // namespace lookahead::data
