// The MTCNN fallback for samples without landmarks, on facenet-pytorch's shipped weights (.pt,
// read directly) and scikit-image's astronaut photo (both from the torch_checkpoint oracle fixture).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>

#include "model/io/safetensors.h"
#include "trainer/landmarks.h"

namespace lookahead::trainer {
namespace {

std::string g_dir;

model::face::Mtcnn load_mtcnn() {
  std::ifstream in(g_dir + "/facenet_paths.txt");  // pnet, rnet, onet
  std::vector<std::string> p;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) p.push_back(line);
  EXPECT_EQ(p.size(), 3u);
  model::face::Mtcnn m;
  m->load_weights(p.at(0), p.at(1), p.at(2));
  m->eval();
  return m;
}

TEST(Landmarks, MissingOnesComeFromMtcnnOthersStay) {
  auto mtcnn = load_mtcnn();
  at::Tensor photo = model::io::load_file(g_dir + "/photo.safetensors").at("image");  // uint8 [H, W, 3]
  const auto want = mtcnn->detect(photo);
  ASSERT_GE(want.boxes.size(0), 1);
  // Batch: the photo without landmarks, the photo with given landmarks, a blank image without.
  at::Tensor img = photo.permute({2, 0, 1}).to(at::kFloat) / 127.5 - 1.0;  // [3, H, W] in [-1, 1]
  at::Tensor images = at::stack({img, img, at::full_like(img, -1.0)});
  at::Tensor given = at::full({5, 2}, 7.0);
  at::Tensor lm = at::stack({at::full({5, 2}, NAN), given, at::full({5, 2}, NAN)}).to(at::kDouble);
  const int64_t filled = fill_missing_landmarks(*mtcnn, images, lm);
  EXPECT_EQ(filled, 1);
  // [-1, 1] -> uint8 round-trips exactly, so the detection is MTCNN's on the photo itself.
  EXPECT_LT((lm[0].to(at::kFloat) - want.landmarks[0]).abs().max().item<double>(), 1e-3);
  EXPECT_TRUE(at::equal(lm[1].to(at::kFloat), given));
  EXPECT_TRUE(at::isnan(lm[2]).all().item<bool>());  // no face: stays missing (masked, counted)
  at::Tensor bad = at::zeros({3, 4, 2});
  EXPECT_THROW(fill_missing_landmarks(*mtcnn, images, bad), c10::Error);
}

}  // namespace
}  // namespace lookahead::trainer

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: trainer_landmarks_test FIXTURE_DIR\n");
    return 2;
  }
  lookahead::trainer::g_dir = argv[1];
  return RUN_ALL_TESTS();
}
