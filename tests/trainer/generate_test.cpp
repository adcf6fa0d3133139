// `lookahead data generate` (trainer/generate): the face checks and the filter on real photos
// (FaceFilterPhotos: facenet-pytorch's real MTCNN weights on the public-domain astronaut and Grace
// Hopper photos, ArcFace with random weights: geometry and bookkeeping), and the comparisons the
// end-to-end script asks for (GeneratedSets: two output folders hold the same content, or the
// same plan with different pixels).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "data/image_io.h"
#include "data/manifest.h"
#include "data/training_set.h"
#include "model/face/arcface_irse.h"
#include "model/io/safetensors.h"
#include "trainer/generate/face_check.h"
#include "trainer/generate/identity_filter.h"

namespace lookahead::trainer::generate {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// ---- real photos -------------------------------------------------------------------------------

at::Tensor photo(const std::string& dir, const char* name) {
  return model::io::load_file(dir + "/" + name).at("image");  // uint8 [H, W, 3]
}

/// `image` scaled to a square `size` canvas (the generator's images are square).
at::Tensor square(const at::Tensor& image, int64_t size) {
  const at::Tensor x = data::resize_center_crop(image, size);  // [3, s, s] in [-1, 1]
  return ((x.permute({1, 2, 0}) + 1) * 127.5).round().clamp(0, 255).to(at::kByte).contiguous();
}

class FaceFilterPhotos : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = env("LA_EVAL_PHOTOS_DIR");
    if (dir_.empty()) GTEST_SKIP() << "LA_EVAL_PHOTOS_DIR is not set (ctest sets it)";
    std::ifstream paths(dir_ + "/facenet_paths.txt");
    std::string pnet;
    ASSERT_TRUE(std::getline(paths, pnet)) << dir_ << "/facenet_paths.txt";
    mtcnn_dir_ = pnet.substr(0, pnet.find_last_of('/'));
    // IR-SE50 with random weights, written where FaceCheck loads it from.
    at::manual_seed(7);
    model::face::IRSE net(model::face::IRSEOptions().num_layers(50));
    std::vector<std::pair<std::string, at::Tensor>> sd;
    for (const auto& p : net->named_parameters()) sd.emplace_back(p.key(), p.value().detach());
    for (const auto& b : net->named_buffers()) sd.emplace_back(b.key(), b.value().detach());
    arcface_ = ::testing::TempDir() + "/generate_test_irse50.safetensors";
    model::io::save_file(arcface_, sd);
  }
  std::string dir_, mtcnn_dir_, arcface_;
};

TEST_F(FaceFilterPhotos, DetectsEmbedsAndFilters) {
  const at::Tensor astronaut = square(photo(dir_, "astronaut.safetensors"), 384);
  const at::Tensor hopper = square(photo(dir_, "grace_hopper.safetensors"), 384);
  const at::Tensor blank = at::full({384, 384, 3}, 128, at::kByte);
  // The astronaut shrunk to 64 px in a gray 384 canvas: a face well under --min-face-size 48.
  at::Tensor tiny = blank.clone();
  tiny.slice(0, 96, 160).slice(1, 96, 160).copy_(square(astronaut, 64));
  const at::Tensor images = at::stack({astronaut, hopper, blank, tiny, astronaut});  // [5, 384, 384, 3]

  FaceCheckOptions o;
  o.mtcnn = mtcnn_dir_;
  o.arcface = arcface_;
  o.min_face_size = 48;
  FaceCheck check(o, at::kCPU);
  ASSERT_TRUE(check.has_embedder());
  const std::vector<FaceResult> faces = check.detect(images);
  ASSERT_EQ(faces.size(), 5u);
  const std::vector<bool> want_found = {true, true, false, false, true};
  for (size_t i = 0; i < faces.size(); ++i) {
    EXPECT_EQ(faces[i].found, want_found[i]) << "image " << i << " box " << faces[i].box;
    if (!faces[i].found) {
      EXPECT_TRUE(at::isnan(faces[i].box).all().item<bool>());
      EXPECT_TRUE(at::isnan(faces[i].landmarks).all().item<bool>());
      EXPECT_EQ(faces[i].prob, 0.f);
      continue;
    }
    // Geometry: a box of at least the minimum inside the image, the 5 landmarks inside the box,
    // eyes above the mouth corners, left eye left of the right eye.
    const auto b = faces[i].box;
    const float x1 = b[0].item<float>(), y1 = b[1].item<float>(), x2 = b[2].item<float>(), y2 = b[3].item<float>();
    EXPECT_GE(std::min(x2 - x1, y2 - y1), 48.f);
    EXPECT_GT(faces[i].prob, 0.9f);
    const auto lm = faces[i].landmarks;  // [5, 2]
    for (int k = 0; k < 5; ++k) {
      EXPECT_GE(lm[k][0].item<float>(), x1 - 2);
      EXPECT_LE(lm[k][0].item<float>(), x2 + 2);
      EXPECT_GE(lm[k][1].item<float>(), y1 - 2);
      EXPECT_LE(lm[k][1].item<float>(), y2 + 2);
    }
    EXPECT_LT(lm[0][0].item<float>(), lm[1][0].item<float>());
    EXPECT_LT(lm[0][1].item<float>(), lm[3][1].item<float>());
    EXPECT_LT(lm[1][1].item<float>(), lm[4][1].item<float>());
  }
  // The same photo detects identically.
  EXPECT_TRUE(at::equal(faces[0].landmarks, faces[4].landmarks));

  const at::Tensor emb = check.embed(images, faces);  // [5, 512]
  ASSERT_EQ(emb.sizes(), (std::vector<int64_t>{5, 512}));
  for (int64_t i = 0; i < 5; ++i) {
    const double norm = emb[i].norm().item<double>();
    if (want_found[static_cast<size_t>(i)])
      EXPECT_NEAR(norm, 1.0, 1e-5) << "image " << i;
    else
      EXPECT_EQ(norm, 0.0) << "image " << i << ": no face, zero embedding";
  }
  EXPECT_NEAR((emb[0] * emb[4]).sum().item<double>(), 1.0, 1e-5);

  // Bookkeeping of the filter on these detections: the astronaut twice is its own medoid at
  // cosine 1; Grace Hopper is kept exactly when her cosine reaches the threshold; no face -> no_face.
  std::vector<bool> found;
  for (const auto& f : faces) found.push_back(f.found);
  FilterOptions fo;
  fo.keep_threshold = 0.999;
  fo.min_survivors = 2;
  const std::vector<bool> vanilla(5, true);
  const FilterResult r = filter_identity(emb, found, vanilla, fo);
  EXPECT_TRUE(r.medoid == 0 || r.medoid == 4) << r.medoid;
  EXPECT_TRUE(r.identity_kept);
  EXPECT_EQ(r.decisions[0], Decision::kKept);
  EXPECT_EQ(r.decisions[4], Decision::kKept);
  EXPECT_NEAR(r.scores[0], 1.0, 1e-5);
  EXPECT_EQ(r.decisions[2], Decision::kNoFace);
  EXPECT_EQ(r.decisions[3], Decision::kNoFace);
  EXPECT_TRUE(std::isnan(r.scores[2]));
  const double hopper_cos = (emb[1] * emb[0]).sum().item<double>();
  EXPECT_NEAR(r.scores[1], hopper_cos, 1e-5);
  EXPECT_EQ(r.decisions[1], hopper_cos >= fo.keep_threshold ? Decision::kKept : Decision::kBelowThreshold);
  // Three survivors needed: the identity goes, every decision says so.
  fo.min_survivors = 3 + (hopper_cos >= fo.keep_threshold ? 1 : 0);
  const FilterResult dropped = filter_identity(emb, found, vanilla, fo);
  EXPECT_FALSE(dropped.identity_kept);
  for (Decision d : dropped.decisions) EXPECT_EQ(d, Decision::kIdentityDropped);
}

// ---- output folders ----------------------------------------------------------------------------

/// Every file of a generated set: the kept shards (the manifest) then the rejected ones.
std::vector<std::shared_ptr<data::TrainingSet>> open_all(const std::string& out) {
  const std::string manifest = out + "/manifest.json";
  std::vector<std::shared_ptr<data::TrainingSet>> files{data::TrainingSet::open(manifest)};
  const data::Manifest m = data::read_manifest(manifest);
  for (const auto& r : m.extra.at("rejected"))
    files.push_back(data::TrainingSet::open(out + "/" + r.at("path").get<std::string>()));
  return files;
}

void expect_same_records(const data::TrainingSet& a, const data::TrainingSet& b) {
  ASSERT_EQ(a.size(), b.size()) << a.path() << " vs " << b.path();
  ASSERT_EQ(a.column_names(), b.column_names());
  for (int64_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a.image_bytes(i), b.image_bytes(i)) << a.path() << " record " << i;
    EXPECT_EQ(a.identity(i), b.identity(i));
    EXPECT_EQ(a.prompt(i), b.prompt(i));
    EXPECT_EQ(a.photo(i), b.photo(i));
    EXPECT_TRUE(at::equal(at::nan_to_num(a.landmarks(i), -1), at::nan_to_num(b.landmarks(i), -1))) << i;
  }
  for (const auto& name : a.column_names()) {
    const at::Tensor ca = a.column(name), cb = b.column(name);
    if (ca.defined()) {
      ASSERT_TRUE(cb.defined()) << name;
      const bool floating = at::isFloatingType(ca.scalar_type());
      EXPECT_TRUE(floating ? at::equal(at::nan_to_num(ca, -7), at::nan_to_num(cb, -7)) : at::equal(ca, cb)) << name;
    } else {
      EXPECT_EQ(a.string_column(name), b.string_column(name)) << name;
    }
  }
}

// LA_GEN_A and LA_GEN_B: two output folders of the same settings (e.g. 1 and 3 ranks, or a killed
// and resumed run and a clean one) must hold the same records, in the same order, kept and rejected.
TEST(GeneratedSets, SameContent) {
  const std::string a = env("LA_GEN_A"), b = env("LA_GEN_B");
  if (a.empty() || b.empty()) GTEST_SKIP() << "LA_GEN_A / LA_GEN_B not set (generate_e2e.sh sets them)";
  const auto fa = open_all(a), fb = open_all(b);
  ASSERT_EQ(fa.size(), fb.size());
  int64_t records = 0;
  for (size_t i = 0; i < fa.size(); ++i) {
    expect_same_records(*fa[i], *fb[i]);
    records += fa[i]->size();
  }
  EXPECT_GT(records, 0);
  std::cout << "same content: " << records << " records in " << fa.size() << " file(s)\n";
}

// LA_GEN_A and LA_GEN_B: the same plan (identities, prompts, seeds) with different pixels in at
// least LA_GEN_MIN_DIFFERENT of the records (e.g. shared-attention against collapse).
TEST(GeneratedSets, SamePlanOtherPixels) {
  const std::string a = env("LA_GEN_A"), b = env("LA_GEN_B");
  if (a.empty() || b.empty()) GTEST_SKIP() << "LA_GEN_A / LA_GEN_B not set (generate_e2e.sh sets them)";
  const double min_different = std::stod(env("LA_GEN_MIN_DIFFERENT").empty() ? "1" : env("LA_GEN_MIN_DIFFERENT"));
  const auto sa = data::TrainingSet::open(a + "/manifest.json"), sb = data::TrainingSet::open(b + "/manifest.json");
  ASSERT_EQ(sa->size(), sb->size());
  EXPECT_TRUE(at::equal(sa->column("seed"), sb->column("seed")));
  EXPECT_EQ(sa->string_column("full_prompt"), sb->string_column("full_prompt"));
  int64_t different = 0;
  for (int64_t i = 0; i < sa->size(); ++i) {
    EXPECT_EQ(sa->identity(i), sb->identity(i));
    different += sa->image_bytes(i) != sb->image_bytes(i) ? 1 : 0;
  }
  std::cout << different << " of " << sa->size() << " images differ\n";
  EXPECT_GE(static_cast<double>(different), min_different * static_cast<double>(sa->size()));
}

}  // namespace
}  // namespace lookahead::trainer::generate
