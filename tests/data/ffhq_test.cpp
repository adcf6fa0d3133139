// FFHQ conversion (data/ffhq.h) on a synthetic FFHQ-like tree: synthetic faces as PNGs in FFHQ's
// folder layout and a metadata JSON whose 68 points are built around each face's known 5 landmarks
// (with the other 63 points elsewhere, so a wrong index mapping shows), plus the errors a user meets.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <array>
#include <map>

#include "data/error.h"
#include "data/ffhq.h"
#include "data/image_io.h"
#include "data/tools.h"
#include "data/training_set.h"
#include "tests/data/data_test_util.h"

namespace lookahead::data {
namespace {

using test::ScratchDir;
using json = nlohmann::json;

constexpr int64_t kSize = 64;
// Training indices below 60000, validation from 60000, as in the published metadata.
const std::vector<int64_t> kIndices = {0, 1, 2, 59999, 60000, 60001, 60002};

std::string category_of(int64_t index) { return index < 60000 ? "training" : "validation"; }

// "images1024x1024/60000/60001.png": FFHQ's folders of 1000.
std::string file_path_of(int64_t index) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "images1024x1024/%05lld/%05lld.png", static_cast<long long>(index / 1000 * 1000),
                static_cast<long long>(index));
  return buf;
}

// 68 iBUG points whose eye rings average to the 5-point eye centres, with nose tip (30) and mouth
// corners (48, 54) on the 5-point positions, and every other point far from all of them.
json landmarks68(const at::Tensor& five) {
  auto at5 = [&](int k, int c) { return static_cast<double>(five[k][c].item<float>()); };
  // Zero-sum ring offsets (not symmetric, so a wrong subset of the ring would move the mean).
  const double ring[6][2] = {{-3, 0}, {-1, -1.5}, {1.5, -1.5}, {3, 0}, {1, 1}, {-1.5, 2}};
  std::vector<std::array<double, 2>> p(68);
  for (int i = 0; i < 68; ++i) p[static_cast<size_t>(i)] = {500.0 + 7.0 * i, -300.0 - 3.0 * i};
  for (int j = 0; j < 6; ++j) {
    p[static_cast<size_t>(36 + j)] = {at5(0, 0) + ring[j][0], at5(0, 1) + ring[j][1]};
    p[static_cast<size_t>(42 + j)] = {at5(1, 0) + ring[j][0], at5(1, 1) + ring[j][1]};
  }
  p[30] = {at5(2, 0), at5(2, 1)};
  p[48] = {at5(3, 0), at5(3, 1)};
  p[54] = {at5(4, 0), at5(4, 1)};
  json out = json::array();
  for (const auto& q : p) out.push_back({q[0], q[1]});
  return out;
}

struct Tree {
  std::string root, json_path;
  std::map<int64_t, at::Tensor> five;               // expected [5,2] per index
  std::map<int64_t, std::vector<char>> png;         // the PNG bytes on disk
  json meta;
};

Tree make_tree(const ScratchDir& d) {
  Tree t;
  t.root = d.path("ffhq");
  t.json_path = d.path("ffhq/ffhq-dataset-v2.json");
  t.meta = json::object();
  // Keys written out of order: the reader sorts by index.
  std::vector<int64_t> order(kIndices.rbegin(), kIndices.rend());
  for (int64_t index : order) {
    SynthFace face = draw_synthetic_face(index % 97, index, kSize, 3, true);
    std::vector<uint8_t> bytes = encode_png(face.image);
    const std::string rel = file_path_of(index);
    std::filesystem::create_directories((std::filesystem::path(t.root) / rel).parent_path());
    t.png[index] = std::vector<char>(bytes.begin(), bytes.end());
    test::spit((std::filesystem::path(t.root) / rel).string(), t.png[index]);
    t.five[index] = face.landmarks;
    json wild_lm = json::array();  // in_the_wild has its own landmarks: they must not be used
    for (int i = 0; i < 68; ++i) wild_lm.push_back({1.0 * i, 2.0 * i});
    t.meta[std::to_string(index)] = {
        {"category", category_of(index)},
        {"metadata", {{"photo_url", "https://www.flickr.com/photos/x"}, {"author", "someone"}, {"license", "CC"}}},
        {"image",
         {{"file_url", "https://drive.google.com/x"},
          {"file_path", rel},
          {"file_size", bytes.size()},
          {"file_md5", md5_hex(bytes.data(), bytes.size())},
          {"pixel_size", {kSize, kSize}},
          {"pixel_md5", "0"},
          {"face_landmarks", landmarks68(face.landmarks)}}},
        {"thumbnail", {{"file_path", "thumbnails128x128/x.png"}, {"pixel_size", {128, 128}}}},
        {"in_the_wild",
         {{"file_path", "in-the-wild-images/x.png"}, {"face_landmarks", wild_lm}, {"face_rect", {1, 2, 3, 4}}}}};
  }
  std::ofstream(t.json_path) << t.meta.dump(1);
  return t;
}

void write_meta(const Tree& t, const json& meta) { std::ofstream(t.json_path, std::ios::trunc) << meta.dump(); }

FfhqOptions options(const Tree& t, const std::string& out) {
  FfhqOptions o;
  o.root = t.root;
  o.json = t.json_path;
  o.out = out;
  return o;
}

std::vector<int64_t> identities_of(const std::string& path) { return TrainingSet::open(path)->identities(); }

TEST(Ffhq, Md5MatchesRfc1321TestSuite) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "d41d8cd98f00b204e9800998ecf8427e"},
      {"a", "0cc175b9c0f1b6a831c399e269772661"},
      {"abc", "900150983cd24fb0d6963f7d28e17f72"},
      {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
      {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
      {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"},
      {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
       "57edf4a22be3c955ac49da2e2107b67a"}};
  for (const auto& [text, want] : cases)
    EXPECT_EQ(md5_hex(reinterpret_cast<const uint8_t*>(text.data()), text.size()), want) << "'" << text << "'";
  // Many blocks and a ragged tail (value from Python's hashlib).
  std::vector<uint8_t> big(1000003);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>((i * 31 + 7) % 251);
  EXPECT_EQ(md5_hex(big.data(), big.size()), "97adcc1277feb41c4935542ef272b6d9");
}

TEST(Ffhq, FiveFrom68PicksEyeRingMeansNoseTipAndMouthCorners) {
  at::Tensor five = at::tensor({10.f, 20.f, 40.f, 21.f, 25.f, 35.f, 14.f, 48.f, 37.f, 47.f}).view({5, 2});
  json pts = landmarks68(five);
  at::Tensor p = at::empty({68, 2}, at::kDouble);
  for (int i = 0; i < 68; ++i)
    for (int c = 0; c < 2; ++c) p[i][c] = pts[static_cast<size_t>(i)][static_cast<size_t>(c)].get<double>();
  at::Tensor got = five_from_68_landmarks(p);
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(got, five, 0, 1e-5)) << got;
  // Left = image left (smaller x), as arcface_template orders them.
  EXPECT_LT(got[0][0].item<float>(), got[1][0].item<float>());
  EXPECT_LT(got[3][0].item<float>(), got[4][0].item<float>());
  EXPECT_THROW(five_from_68_landmarks(at::zeros({5, 2})), c10::Error);
}

TEST(Ffhq, ReadsMetadataSortedAndReduced) {
  ScratchDir d;
  Tree t = make_tree(d);
  std::vector<FfhqEntry> e = read_ffhq_metadata(t.json_path);
  ASSERT_EQ(e.size(), kIndices.size());
  for (size_t i = 0; i < e.size(); ++i) {
    EXPECT_EQ(e[i].index, kIndices[i]);
    EXPECT_TRUE(e[i].error.empty()) << e[i].error;
    EXPECT_EQ(e[i].category, category_of(kIndices[i]));
    EXPECT_EQ(e[i].file_path, file_path_of(kIndices[i]));
    EXPECT_EQ(e[i].width, kSize);
    EXPECT_EQ(e[i].height, kSize);
    EXPECT_TRUE(at::allclose(e[i].landmarks, t.five[kIndices[i]], 0, 1e-4));
  }
  EXPECT_EQ(e[4].file_path, "images1024x1024/60000/60000.png");
  EXPECT_EQ(e[3].file_path, "images1024x1024/59000/59999.png");
}

TEST(Ffhq, ConvertsTheValidationSetByDefault) {
  ScratchDir d;
  Tree t = make_tree(d);
  FfhqOptions o = options(t, d.path("val.h5"));
  o.prompt = "a photo of a person";
  FfhqReport r = convert_ffhq(o);
  EXPECT_EQ(r.entries, 7);
  EXPECT_EQ(r.selected, 3);
  EXPECT_EQ(r.records, 3);
  EXPECT_EQ(r.skipped_missing, 0);
  EXPECT_EQ(r.first_index, 60000);
  EXPECT_EQ(r.last_index, 60002);
  EXPECT_EQ(r.height, kSize);
  auto set = TrainingSet::open(o.out);
  ASSERT_EQ(set->size(), 3);
  for (int64_t i = 0; i < 3; ++i) {
    const int64_t index = 60000 + i;
    Record rec = set->get(i);
    EXPECT_EQ(rec.identity, index);
    EXPECT_TRUE(rec.photo);
    EXPECT_EQ(rec.prompt, "a photo of a person");
    EXPECT_TRUE(at::allclose(rec.landmarks, t.five[index], 0, 1e-4)) << rec.landmarks << t.five[index];
    EXPECT_EQ(set->image_size(i), (std::array<int64_t, 2>{kSize, kSize}));
    // Without --resize the PNG is stored byte for byte.
    std::vector<uint8_t> bytes = set->image_bytes(i);
    EXPECT_EQ(std::vector<char>(bytes.begin(), bytes.end()), t.png[index]);
  }
}

TEST(Ffhq, SelectsByCategoryFirstAndCount) {
  ScratchDir d;
  Tree t = make_tree(d);
  FfhqOptions o = options(t, d.path("a.h5"));
  o.category = FfhqCategory::kTraining;
  EXPECT_EQ(convert_ffhq(o).records, 4);
  EXPECT_EQ(identities_of(o.out), (std::vector<int64_t>{0, 1, 2, 59999}));
  o.first = 1;
  o.count = 2;
  EXPECT_EQ(convert_ffhq(o).records, 2);
  EXPECT_EQ(identities_of(o.out), (std::vector<int64_t>{1, 2}));
  o.category = FfhqCategory::kAll;
  o.first = 59999;
  o.count = 3;
  EXPECT_EQ(convert_ffhq(o).records, 3);
  EXPECT_EQ(identities_of(o.out), (std::vector<int64_t>{59999, 60000, 60001}));
  o.category = FfhqCategory::kValidation;
  o.first = 60001;
  o.count = -1;
  EXPECT_EQ(convert_ffhq(o).records, 2);
  EXPECT_EQ(identities_of(o.out), (std::vector<int64_t>{60001, 60002}));
  o.first = 70000;  // nothing left
  EXPECT_THROW(convert_ffhq(o), DataError);
  EXPECT_EQ(parse_ffhq_category("training"), FfhqCategory::kTraining);
  EXPECT_THROW(parse_ffhq_category("test"), std::invalid_argument);
}

TEST(Ffhq, ResizeReencodesAndScalesLandmarks) {
  ScratchDir d;
  Tree t = make_tree(d);
  FfhqOptions o = options(t, d.path("small.h5"));
  o.resize = 32;
  FfhqReport r = convert_ffhq(o);
  EXPECT_EQ(r.height, 32);
  EXPECT_EQ(r.width, 32);
  auto set = TrainingSet::open(o.out);
  ASSERT_EQ(set->size(), 3);
  for (int64_t i = 0; i < 3; ++i) {
    const int64_t index = 60000 + i;
    Record rec = set->get(i);
    ASSERT_EQ(rec.image.sizes(), (at::IntArrayRef{32, 32, 3}));
    // Half-pixel centres: x' = (x + 0.5) * 32/64 - 0.5.
    at::Tensor want = (t.five[index] + 0.5) * 0.5 - 0.5;
    EXPECT_TRUE(at::allclose(rec.landmarks, want, 0, 1e-4)) << rec.landmarks << want;
    // The stored pixels are the antialiased resize of the source, rounded to 8 bits.
    at::Tensor src = decode_image(reinterpret_cast<const uint8_t*>(t.png[index].data()), t.png[index].size());
    at::Tensor ref = resize_center_crop(src, 32).add(1).mul(127.5).round().permute({1, 2, 0});  // [32,32,3]
    EXPECT_LE((rec.image.to(at::kFloat) - ref).abs().max().item<float>(), 0.0f);
  }
}

TEST(Ffhq, MissingImageNamesIndexAndPathOrIsSkipped) {
  ScratchDir d;
  Tree t = make_tree(d);
  const std::string gone = (std::filesystem::path(t.root) / file_path_of(60001)).string();
  std::filesystem::remove(gone);
  FfhqOptions o = options(t, d.path("m.h5"));
  try {
    convert_ffhq(o);
    ADD_FAILURE() << "a missing image must fail";
  } catch (const DataError& e) {
    EXPECT_EQ(e.record(), 60001);
    EXPECT_EQ(e.file(), gone);
    EXPECT_NE(std::string(e.what()).find("record 60001"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not found"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(o.out));
  o.skip_missing = true;
  FfhqReport r = convert_ffhq(o);
  EXPECT_EQ(r.selected, 3);
  EXPECT_EQ(r.records, 2);
  EXPECT_EQ(r.skipped_missing, 1);
  EXPECT_EQ(identities_of(o.out), (std::vector<int64_t>{60000, 60002}));
}

TEST(Ffhq, MalformedEntryNamesIndexWhenSelected) {
  ScratchDir d;
  Tree t = make_tree(d);
  json meta = t.meta;
  meta["60001"]["image"]["face_landmarks"].erase(67);  // 67 points
  write_meta(t, meta);
  FfhqOptions o = options(t, d.path("bad.h5"));
  try {
    convert_ffhq(o);
    ADD_FAILURE() << "a 67-point entry must fail";
  } catch (const DataError& e) {
    EXPECT_EQ(e.record(), 60001);
    EXPECT_EQ(e.file(), t.json_path);
    EXPECT_NE(std::string(e.what()).find("face_landmarks\" must be 68"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(o.out));
  // Not selected: the rest of the file still converts.
  o.category = FfhqCategory::kTraining;
  EXPECT_EQ(convert_ffhq(o).records, 4);

  meta = t.meta;
  meta["2"].erase("category");
  write_meta(t, meta);
  try {
    convert_ffhq(o);
    ADD_FAILURE() << "an entry without category must fail";
  } catch (const DataError& e) {
    EXPECT_EQ(e.record(), 2);
    EXPECT_NE(std::string(e.what()).find("\"category\""), std::string::npos) << e.what();
  }
  meta = t.meta;
  meta["60000"]["image"]["pixel_size"] = {kSize, kSize + 1};  // disagrees with the PNG
  write_meta(t, meta);
  o.category = FfhqCategory::kValidation;
  try {
    convert_ffhq(o);
    ADD_FAILURE() << "a pixel_size mismatch must fail";
  } catch (const DataError& e) {
    EXPECT_EQ(e.record(), 60000);
    EXPECT_NE(std::string(e.what()).find("pixel_size"), std::string::npos) << e.what();
  }
}

TEST(Ffhq, BadMetadataFiles) {
  ScratchDir d;
  Tree t = make_tree(d);
  FfhqOptions o = options(t, d.path("x.h5"));
  auto message = [&] {
    try {
      convert_ffhq(o);
    } catch (const DataError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  write_meta(t, json::array({1, 2}));
  EXPECT_NE(message().find("expected a JSON object keyed by image index"), std::string::npos) << message();
  std::ofstream(t.json_path, std::ios::trunc) << "{\"0\": {\"category\": ";
  EXPECT_NE(message().find("not valid JSON"), std::string::npos) << message();
  write_meta(t, json{{"zero", t.meta["0"]}});
  EXPECT_NE(message().find("key \"zero\" is not an image index"), std::string::npos) << message();
  o.json = d.path("nope.json");
  EXPECT_NE(message().find("nope.json: cannot read"), std::string::npos) << message();
  EXPECT_FALSE(std::filesystem::exists(o.out));
}

TEST(Ffhq, VerifyMd5) {
  ScratchDir d;
  Tree t = make_tree(d);
  FfhqOptions o = options(t, d.path("v.h5"));
  o.verify_md5 = true;
  FfhqReport r = convert_ffhq(o);
  EXPECT_EQ(r.md5_verified, 3);
  json meta = t.meta;
  meta["60002"]["image"]["file_md5"] = "00000000000000000000000000000000";
  write_meta(t, meta);
  try {
    convert_ffhq(o);
    ADD_FAILURE() << "an MD5 mismatch must fail";
  } catch (const DataError& e) {
    EXPECT_EQ(e.record(), 60002);
    EXPECT_NE(std::string(e.what()).find("differs from image.file_md5"), std::string::npos) << e.what();
  }
  o.verify_md5 = false;  // the check is opt-in
  EXPECT_EQ(convert_ffhq(o).records, 3);
}

}  // namespace
}  // namespace lookahead::data
