// File-level ("global") tensors of the training-set format: round trip of float32 and float16,
// replacement, absence (a version-1 file without the group), and bad names / dtypes.
#include <gtest/gtest.h>
#include <hdf5.h>

#include "common/h5_handle.h"
#include "data/image_io.h"
#include "data/training_set.h"
#include "data/training_set_writer.h"
#include "tests/data/data_test_util.h"

namespace lookahead::data {
namespace {

using test::ScratchDir;

RecordData one_record() {
  RecordData r;
  r.image = encode_png(at::full({4, 4, 3}, 100, at::kByte));
  r.identity = 1;
  r.prompt = "a photo of a face";
  r.photo = true;
  return r;
}

TEST(DataGlobals, RoundTripFloatAndHalf) {
  ScratchDir d;
  const std::string path = d.path("g.h5");
  at::manual_seed(3);
  const at::Tensor uncond = at::randn({1, 5, 12});
  const at::Tensor half = at::randn({2, 3}).to(at::kHalf);
  {
    TrainingSetWriter w(path);
    w.add(one_record());
    w.set_global(kClipUncond, at::zeros({1, 5, 12}));
    w.set_global(kClipUncond, uncond);  // replaces the first
    w.set_global("scale", half);
    w.set_global("scalar", at::tensor(2.5f).reshape({}));
    EXPECT_EQ(w.finish(), 1);
  }
  auto set = TrainingSet::open(path);
  EXPECT_EQ(set->global_names(), (std::vector<std::string>{"clip_uncond", "scalar", "scale"}));
  const at::Tensor u = set->global(kClipUncond);
  ASSERT_TRUE(u.defined());
  EXPECT_EQ(u.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(u, uncond));
  const at::Tensor h = set->global("scale");
  EXPECT_EQ(h.scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(h, half));
  const at::Tensor s = set->global("scalar");
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item<float>(), 2.5f);
  EXPECT_FALSE(set->global("missing").defined());
  // The globals do not disturb the records.
  EXPECT_EQ(set->get(0).prompt, "a photo of a face");
}

TEST(DataGlobals, FileWithoutGroupHasNone) {
  ScratchDir d;
  const std::string path = test::make_synth(d, 2, 2, 16, /*extras=*/true);
  {
    common::H5Handle f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "H5Fopen", path);
    EXPECT_FALSE(common::h5_exists(f.get(), kGlobalsGroup)) << "no globals given: no group written";
  }
  auto set = TrainingSet::open(path);
  EXPECT_TRUE(set->global_names().empty());
  EXPECT_FALSE(set->global(kClipUncond).defined());
  EXPECT_EQ(set->size(), 4);
}

TEST(DataGlobals, RejectsBadNamesAndTypes) {
  ScratchDir d;
  TrainingSetWriter w(d.path("bad.h5"));
  EXPECT_THROW(w.set_global("", at::zeros({1})), c10::Error);
  EXPECT_THROW(w.set_global("a/b", at::zeros({1})), c10::Error);
  EXPECT_THROW(w.set_global("ints", at::zeros({1}, at::kInt)), c10::Error);
  EXPECT_THROW(w.set_global("undefined", at::Tensor()), c10::Error);
}

TEST(DataGlobals, RejectsNonFloatGlobalInFile) {
  ScratchDir d;
  const std::string path = d.path("int.h5");
  {
    TrainingSetWriter w(path);
    w.add(one_record());
    w.finish();
  }
  {
    // A foreign writer puts an int32 dataset under /globals.
    common::H5Handle f(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), "H5Fopen", path);
    common::H5Handle g(H5Gcreate2(f.get(), kGlobalsGroup, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2", path);
    const int32_t v[2] = {1, 2};
    const hsize_t n = 2;
    common::H5Handle space(H5Screate_simple(1, &n, nullptr), "H5Screate_simple", path);
    common::H5Handle ds(H5Dcreate2(g.get(), "ids", H5T_STD_I32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                        "H5Dcreate2", path);
    LA_H5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), path);
  }
  try {
    TrainingSet::open(path);
    FAIL() << "an int32 global was accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("globals/ids"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lookahead::data
