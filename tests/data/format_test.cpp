// The training-set file: synth -> open -> get round trip, explicit writer round trip, per-record
// columns and attributes, and the errors a user meets (corrupt record, out-of-range index,
// truncated or foreign file, a column of the wrong length).
#include <gtest/gtest.h>

#include <cmath>
#include <hdf5.h>

#include <filesystem>

#include "data/image_io.h"
#include "data/tools.h"
#include "data/training_set.h"
#include "data/training_set_writer.h"
#include "tests/data/data_test_util.h"

namespace lookahead::data {
namespace {

using test::ScratchDir;

TEST(DataFormat, SynthRoundTrip) {
  ScratchDir d;
  const std::string path = test::make_synth(d, 3, 2, 32, /*extras=*/true);
  auto set = TrainingSet::open(path);
  ASSERT_EQ(set->size(), 6);
  EXPECT_EQ(set->extra_shape(kLatents), (std::vector<int64_t>{4, 4, 4}));
  EXPECT_EQ(set->extra_shape(kPromptEmbeds), (std::vector<int64_t>{3, 24}));
  EXPECT_EQ(set->extra_shape(kPooledPromptEmbeds), (std::vector<int64_t>{16}));
  EXPECT_EQ(set->extra_shape(kClipFeatures), (std::vector<int64_t>{5, 12}));
  for (int64_t i = 0; i < 6; ++i) {
    Record r = set->get(i);
    EXPECT_EQ(r.index, i);
    EXPECT_EQ(r.identity, i / 2);
    if (i % 2 == 0) {
      EXPECT_TRUE(r.photo) << "the first record of an identity is a photo";
    }
    EXPECT_FALSE(r.prompt.empty());
    SynthFace face = draw_synthetic_face(i / 2, i % 2, 32, 7, r.photo);
    EXPECT_TRUE(at::equal(r.image, face.image)) << "PNG is lossless: record " << i;
    EXPECT_TRUE(at::equal(r.landmarks, face.landmarks)) << "record " << i;
    EXPECT_EQ(r.latents.sizes(), (at::IntArrayRef{4, 4, 4}));
    EXPECT_EQ(r.clip_features.sizes(), (at::IntArrayRef{5, 12}));
    EXPECT_EQ(set->image_size(i), (std::array<int64_t, 2>{32, 32}));
  }
  // Landmarks sit on the drawn features: the iris color at each eye landmark differs from skin.
  SynthFace f = draw_synthetic_face(0, 0, 64, 7, true);
  auto at_px = [&](int k) {
    auto x = std::lround(f.landmarks[k][0].item<float>()), y = std::lround(f.landmarks[k][1].item<float>());
    return f.image[y][x];
  };
  EXPECT_FALSE(at::equal(at_px(0), at_px(2)));
}

TEST(DataFormat, WriterRoundTripJpegUnicodeHalf) {
  ScratchDir d;
  const std::string path = d.path("w.h5");
  at::Tensor img = at::arange(0, 20 * 30 * 3, at::kInt).remainder(251).to(at::kByte).reshape({20, 30, 3});
  {
    TrainingSetWriter w(path);
    RecordData a;
    a.image = encode_jpeg(img, 95);
    a.identity = 42;
    a.prompt = "ein Gesicht, \xC3\xBC \xF0\x9F\x98\x80";  // UTF-8 survives
    a.photo = true;
    a.latents = at::randn({4, 2, 3}).to(at::kHalf);
    RecordData b = a;
    b.image = encode_png(img);
    b.identity = -5;
    b.prompt = "";
    b.photo = false;
    b.landmarks = at::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, 8.f, 9.f, 10.f}).reshape({5, 2});
    b.latents = at::randn({4, 2, 3}).to(at::kHalf);
    w.add(a);
    w.add(b);
    EXPECT_EQ(w.finish(), 2);
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  }
  auto set = TrainingSet::open(path);
  Record a = set->get(0), b = set->get(1);
  EXPECT_EQ(a.identity, 42);
  EXPECT_EQ(b.identity, -5);
  EXPECT_EQ(a.prompt, "ein Gesicht, \xC3\xBC \xF0\x9F\x98\x80");
  EXPECT_EQ(b.prompt, "");
  EXPECT_TRUE(a.photo);
  EXPECT_FALSE(b.photo);
  EXPECT_TRUE(at::isnan(a.landmarks).all().item<bool>()) << "unknown landmarks are NaN";
  EXPECT_TRUE(at::equal(b.landmarks, at::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, 8.f, 9.f, 10.f}).reshape({5, 2})));
  EXPECT_EQ(a.latents.scalar_type(), at::kHalf);
  EXPECT_EQ(a.image.sizes(), (at::IntArrayRef{20, 30, 3}));
  EXPECT_TRUE(at::equal(b.image, img));
  EXPECT_LT((a.image.to(at::kFloat) - img.to(at::kFloat)).abs().mean().item<float>(), 6.0f);
  EXPECT_FALSE(set->has_extra(kClipFeatures));
  EXPECT_FALSE(a.clip_features.defined());
}

TEST(DataFormat, EmptySetOpens) {
  ScratchDir d;
  TrainingSetWriter w(d.path("e.h5"));
  w.finish();
  auto set = TrainingSet::open(d.path("e.h5"));
  EXPECT_EQ(set->size(), 0);
}

TEST(DataFormat, OutOfRangeNamesIndexAndFile) {
  ScratchDir d;
  const std::string path = test::make_synth(d, 2, 2, 16);
  auto set = TrainingSet::open(path);
  for (int64_t bad : {int64_t{-1}, int64_t{4}, int64_t{100}}) {
    try {
      set->get(bad);
      FAIL() << "no error for index " << bad;
    } catch (const DataError& e) {
      EXPECT_EQ(e.record(), bad);
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
    }
  }
}

TEST(DataFormat, CorruptRecordNamesIndex) {
  ScratchDir d;
  const std::string path = test::make_synth(d, 2, 3, 32);
  test::corrupt_record(path, 4);
  auto set = TrainingSet::open(path);  // metadata is intact: the file opens
  for (int64_t i : {0, 1, 2, 3, 5}) EXPECT_NO_THROW(set->get(i)) << i;
  try {
    set->get(4);
    FAIL() << "corrupt record 4 decoded";
  } catch (const DataError& e) {
    EXPECT_EQ(e.record(), 4);
    EXPECT_EQ(e.file(), path);
    EXPECT_NE(std::string(e.what()).find("record 4: image checksum mismatch"), std::string::npos) << e.what();
  }
}

TEST(DataFormat, UndecodableBytesNameIndex) {
  ScratchDir d;
  const std::string path = d.path("u.h5");
  {
    TrainingSetWriter w(path);
    RecordData r;
    r.image = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3, 4, 5};  // a PNG signature and junk
    r.height = r.width = 8;  // given, so the writer does not decode
    w.add(r);
    // Without a size, the writer decodes and refuses the junk up front.
    r.height = r.width = 0;
    EXPECT_THROW(w.add(r), DataError);
    w.finish();
  }
  auto set = TrainingSet::open(path);
  try {
    set->get(0);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_EQ(e.record(), 0);
    EXPECT_NE(std::string(e.what()).find("bad PNG"), std::string::npos) << e.what();
  }
}

TEST(DataFormat, TruncatedAndForeignFilesGiveClearErrors) {
  ScratchDir d;
  const std::string path = test::make_synth(d, 2, 3, 32);
  std::vector<char> bytes = test::slurp(path);
  const std::string cut = d.path("cut.h5");
  test::spit(cut, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<long>(bytes.size() / 2)));
  try {
    TrainingSet::open(cut);
    FAIL() << "a truncated file opened";
  } catch (const DataError& e) {
    EXPECT_EQ(e.file(), cut);
    EXPECT_NE(std::string(e.what()).find(cut), std::string::npos) << e.what();
  }
  const std::string text = d.path("text.h5");
  test::spit(text, {'h', 'e', 'l', 'l', 'o'});
  try {
    TrainingSet::open(text);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("not an HDF5 file"), std::string::npos) << e.what();
  }
  EXPECT_THROW(TrainingSet::open(d.path("missing.h5")), DataError);
}

// Per-record columns and file attributes: every dtype, strings with non-ASCII text, a long
// attribute (a settings JSON is not bound by HDF5's 64 KiB object-header limit), absence.
TEST(DataFormat, ColumnsAndAttributesRoundTrip) {
  ScratchDir d;
  const std::string path = d.path("c.h5");
  const at::Tensor seeds = at::tensor({int64_t{1} << 40, int64_t{-3}, int64_t{7}}, at::kLong);
  const at::Tensor scores = at::tensor({0.25f, -1.5f, 3.f, 1e-7f, 2.f, 0.f}).reshape({3, 2});
  const at::Tensor kept = at::tensor({1, 0, 255}, at::kByte);
  const at::Tensor steps = at::arange(6, at::kInt).reshape({3, 1, 2});
  const std::vector<std::string> styles{"vanilla", "\xC3\xB6lgem\xC3\xA4lde \xF0\x9F\x8E\xA8", ""};
  std::string settings = "{\"model\": \"sdxl-turbo\", \"pad\": \"";
  settings += std::string(100000, 'x') + "\"}";
  {
    TrainingSetWriter w(path);
    w.set_column("seed", at::zeros({3}, at::kLong));  // replaced below
    for (int i = 0; i < 3; ++i) {
      RecordData r;
      r.image = encode_png(at::full({4, 4, 3}, 10 * i, at::kByte));
      r.identity = i;
      w.add(r);
    }
    w.set_column("seed", seeds);
    w.set_column("score", scores);
    w.set_column("kept", kept);
    w.set_column("steps", steps);
    w.set_string_column("style", styles);
    w.set_attribute("generation", settings);
    w.set_attribute("note", "caf\xC3\xA9");
    EXPECT_EQ(w.finish(), 3);
  }
  auto set = TrainingSet::open(path);
  EXPECT_EQ(set->column_names(), (std::vector<std::string>{"kept", "score", "seed", "steps", "style"}));
  const at::Tensor s = set->column("seed");
  EXPECT_EQ(s.scalar_type(), at::kLong);
  EXPECT_EQ(s.sizes(), (at::IntArrayRef{3}));
  EXPECT_EQ(s[0].item<int64_t>(), int64_t{1} << 40);
  EXPECT_TRUE(at::equal(s, seeds));
  EXPECT_EQ(set->column("score").scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(set->column("score"), scores));
  EXPECT_EQ(set->column("kept").scalar_type(), at::kByte);
  EXPECT_TRUE(at::equal(set->column("kept"), kept));
  EXPECT_EQ(set->column("steps").scalar_type(), at::kInt);
  EXPECT_TRUE(at::equal(set->column("steps"), steps));
  EXPECT_EQ(set->string_column("style"), styles);
  EXPECT_TRUE(set->has_column("style"));
  EXPECT_FALSE(set->column("style").defined()) << "a string column is not a tensor";
  EXPECT_TRUE(set->string_column("seed").empty()) << "a numeric column has no strings";
  EXPECT_FALSE(set->column("absent").defined());
  EXPECT_TRUE(set->string_column("absent").empty());
  EXPECT_FALSE(set->has_column("absent"));
  EXPECT_EQ(set->attribute("generation"), settings);
  EXPECT_EQ(set->attribute("note"), "caf\xC3\xA9");
  EXPECT_EQ(set->attribute("absent"), "");
  EXPECT_EQ(set->attribute_names(), (std::vector<std::string>{"generation", "note"}));
  // The records themselves are untouched, and a file without columns has none.
  EXPECT_EQ(set->get(2).identity, 2);
  auto plain = TrainingSet::open(test::make_synth(d, 2, 2, 16));
  EXPECT_TRUE(plain->column_names().empty());
  EXPECT_TRUE(plain->attribute_names().empty());
}

TEST(DataFormat, ColumnOfTheWrongLengthIsRefusedNamingIt) {
  ScratchDir d;
  RecordData r;
  r.image = encode_png(at::full({4, 4, 3}, 1, at::kByte));
  for (const bool strings : {false, true}) {
    const std::string path = d.path(strings ? "s.h5" : "n.h5");
    TrainingSetWriter w(path);
    w.add(r);
    w.add(r);
    w.set_column("ok", at::zeros({2}, at::kLong));
    if (strings)
      w.set_string_column("aesthetic", {"a", "b", "c"});
    else
      w.set_column("aesthetic", at::zeros({3, 2}, at::kFloat));
    try {
      w.finish();
      FAIL() << "a 3-row column in a 2-record file was written";
    } catch (const DataError& e) {
      EXPECT_EQ(e.file(), path);
      EXPECT_NE(std::string(e.what()).find("column 'aesthetic' has 3 "), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("2 records"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(path));
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  }
  TrainingSetWriter w(d.path("t.h5"));
  EXPECT_THROW(w.set_column("f64", at::zeros({1}, at::kDouble)), c10::Error);
  EXPECT_THROW(w.set_column("scalar", at::tensor(1, at::kLong).reshape({})), c10::Error);
  EXPECT_THROW(w.set_column("a/b", at::zeros({1}, at::kLong)), c10::Error);
  EXPECT_THROW(w.set_string_column("", {"x"}), c10::Error);
}

// Generation may write a shard of rejected images that ends up empty: a 0-record file with its
// columns (0 rows) and attributes must write and open.
TEST(DataFormat, ZeroRecordFileWithColumns) {
  ScratchDir d;
  const std::string path = d.path("z.h5");
  {
    TrainingSetWriter w(path);
    w.set_column("seed", at::zeros({0}, at::kLong));
    w.set_column("score", at::zeros({0, 2}, at::kFloat));
    w.set_string_column("style", {});
    w.set_attribute("generation", "{}");
    EXPECT_EQ(w.finish(), 0);
  }
  auto set = TrainingSet::open(path);
  EXPECT_EQ(set->size(), 0);
  EXPECT_EQ(set->column("seed").sizes(), (at::IntArrayRef{0}));
  EXPECT_EQ(set->column("score").sizes(), (at::IntArrayRef{0, 2}));
  EXPECT_TRUE(set->has_column("style"));
  EXPECT_TRUE(set->string_column("style").empty());
  EXPECT_EQ(set->attribute("generation"), "{}");
  EXPECT_TRUE(set->identities().empty());
  EXPECT_THROW(set->get(0), DataError);
  EXPECT_FALSE(set->has_extra(kLatents));
}

// A column written by another tool with a first dimension that is not the record count.
TEST(DataFormat, ReaderRefusesAColumnOfTheWrongLength) {
  ScratchDir d;
  const std::string path = test::make_synth(d, 2, 2, 16);
  {
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    hid_t g = H5Gcreate2(f, kColumnsGroup, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t n = 5;
    hid_t space = H5Screate_simple(1, &n, nullptr);
    hid_t ds = H5Dcreate2(g, "quality", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const int64_t v[5] = {1, 2, 3, 4, 5};
    ASSERT_GE(H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    H5Dclose(ds);
    H5Sclose(space);
    H5Gclose(g);
    H5Fclose(f);
  }
  try {
    TrainingSet::open(path);
    FAIL() << "a 5-row column in a 4-record file opened";
  } catch (const DataError& e) {
    EXPECT_EQ(e.file(), path);
    EXPECT_NE(std::string(e.what()).find("column 'quality' has shape [5]"), std::string::npos) << e.what();
  }
}

TEST(DataFormat, ForeignHdf5FileNamesAttribute) {
  ScratchDir d;
  const std::string path = d.path("other.h5");
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  H5Fclose(f);
  try {
    TrainingSet::open(path);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("missing attribute 'format'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lookahead::data
