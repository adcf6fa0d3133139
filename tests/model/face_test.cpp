// model/face unit tests: checkpoint key layouts and parameter counts of iresnet100/50 and IR-SE50
// (built on the meta device), the arcface JSON config, similarity estimation, the warp's
// cv2 geometry and gradients reaching the input pixels.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <string>

#include "model/face/align.h"
#include "model/face/arcface_iresnet.h"
#include "model/face/arcface_irse.h"
#include "model/face/mtcnn_detect.h"
#include "model/io/safetensors.h"
#include "model/run/model_runners.h"

namespace lookahead::model::face {
namespace {

std::map<std::string, std::vector<int64_t>> state_shapes(torch::nn::Module& m) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().sizes().vec();
  for (const auto& b : m.named_buffers()) out[b.key()] = b.value().sizes().vec();
  return out;
}

int64_t learnable(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

TEST(FaceIResNet, Iresnet100KeysAndCountOnMeta) {
  IResNet net(IResNetOptions::named("iresnet100").tensor_options(at::TensorOptions().device(at::kMeta)));
  EXPECT_EQ(learnable(*net), 65156160);
  const auto keys = state_shapes(*net);
  EXPECT_EQ(keys.size(), 925u);
  EXPECT_EQ(keys.at("conv1.weight"), (std::vector<int64_t>{64, 3, 3, 3}));
  EXPECT_EQ(keys.at("prelu.weight"), (std::vector<int64_t>{64}));
  EXPECT_EQ(keys.at("layer1.0.downsample.0.weight"), (std::vector<int64_t>{64, 64, 1, 1}));
  EXPECT_EQ(keys.at("layer2.0.bn1.running_var"), (std::vector<int64_t>{64}));
  EXPECT_EQ(keys.at("layer3.29.conv2.weight"), (std::vector<int64_t>{256, 256, 3, 3}));
  EXPECT_EQ(keys.at("layer4.0.downsample.1.num_batches_tracked"), (std::vector<int64_t>{}));
  EXPECT_EQ(keys.at("fc.weight"), (std::vector<int64_t>{512, 25088}));
  EXPECT_EQ(keys.at("features.running_mean"), (std::vector<int64_t>{512}));
  EXPECT_EQ(keys.count("layer2.1.downsample.0.weight"), 0u);
  EXPECT_EQ(keys.count("layer3.30.bn1.weight"), 0u);
}

TEST(FaceIResNet, Iresnet50Count) {
  IResNet net(IResNetOptions::named("iresnet50").tensor_options(at::TensorOptions().device(at::kMeta)));
  EXPECT_EQ(learnable(*net), 43590848);
  EXPECT_EQ(state_shapes(*net).size(), 475u);
  EXPECT_THROW(IResNetOptions::named("iresnet18x"), c10::Error);
}

TEST(FaceIResNet, JsonConfig) {
  const std::string path = ::testing::TempDir() + "/face_iresnet_config.json";
  {
    std::ofstream out(path);
    out << R"({"network": "iresnet50", "layers": [1, 2, 2, 1], "num_features": 256})";
  }
  const auto o = IResNetOptions::from_json_file(path);
  EXPECT_EQ(o.layers(), (std::vector<int64_t>{1, 2, 2, 1}));
  EXPECT_EQ(o.num_features(), 256);
  IResNet net(o);
  const auto e = net->forward(at::rand({2, 3, 112, 112}) * 2 - 1);
  EXPECT_EQ(e.sizes(), (at::IntArrayRef{2, 256}));
  EXPECT_NEAR(e.norm(2, {1}).min().item<double>(), 1.0, 1e-5);
  // insightface's get_model arguments are no config keys here: refused by name, not ignored.
  {
    std::ofstream out(path);
    out << R"({"network": "iresnet50", "dropout": 0.2})";
  }
  try {
    IResNetOptions::from_json_file(path);
    ADD_FAILURE() << "an unknown key loaded";
  } catch (const c10::Error& err) {
    EXPECT_NE(std::string(err.what()).find("dropout = 0.2 is not supported"), std::string::npos) << err.what();
  }
  std::remove(path.c_str());
}

TEST(FaceIRSE, Irse50KeysAndCountOnMeta) {
  IRSE net(IRSEOptions().tensor_options(at::TensorOptions().device(at::kMeta)));
  EXPECT_EQ(learnable(*net), 43797696);
  const auto keys = state_shapes(*net);
  EXPECT_EQ(keys.size(), 397u);
  EXPECT_EQ(keys.at("input_layer.0.weight"), (std::vector<int64_t>{64, 3, 3, 3}));
  EXPECT_EQ(keys.at("input_layer.2.weight"), (std::vector<int64_t>{64}));
  EXPECT_EQ(keys.count("body.0.shortcut_layer.0.weight"), 0u);  // MaxPool2d(1, 2)
  EXPECT_EQ(keys.at("body.3.shortcut_layer.0.weight"), (std::vector<int64_t>{128, 64, 1, 1}));
  EXPECT_EQ(keys.at("body.3.res_layer.5.fc1.weight"), (std::vector<int64_t>{8, 128, 1, 1}));
  EXPECT_EQ(keys.at("body.23.res_layer.5.fc2.weight"), (std::vector<int64_t>{512, 32, 1, 1}));
  EXPECT_EQ(keys.at("body.23.res_layer.4.num_batches_tracked"), (std::vector<int64_t>{}));
  EXPECT_EQ(keys.at("output_layer.3.weight"), (std::vector<int64_t>{512, 25088}));
  EXPECT_EQ(keys.at("output_layer.4.running_var"), (std::vector<int64_t>{512}));
  EXPECT_EQ(keys.count("body.24.res_layer.0.weight"), 0u);
}

TEST(FaceAlign, SimilarityRecoversKnownTransform) {
  const auto dst = arcface_template();
  // src = dst mapped by a known similarity; estimating src -> dst must invert it.
  const double a = 0.3, s = 2.5;
  const auto r = at::tensor({std::cos(a), -std::sin(a), std::sin(a), std::cos(a)}, at::kDouble).view({2, 2});
  const auto src = at::matmul(dst, r.t()) * s + at::tensor({17.0, -4.0}, at::kDouble);
  const auto m = similarity_transform(src, dst);
  const auto mapped = at::matmul(src, m.slice(1, 0, 2).t()) + m.select(1, 2);
  EXPECT_LT((mapped - dst).abs().max().item<double>(), 1e-9);
  EXPECT_GT(at::linalg_det(m.slice(1, 0, 2)).item<double>(), 0.0);
  // A mirrored point set still gets a proper rotation (no reflection).
  const auto mirrored = src * at::tensor({-1.0, 1.0}, at::kDouble);
  EXPECT_GT(at::linalg_det(similarity_transform(mirrored, dst).slice(1, 0, 2)).item<double>(), 0.0);
}

TEST(FaceAlign, WarpGeometryMatchesPixelCentres) {
  const auto img = at::rand({1, 2, 20, 30}, at::kDouble);
  // Identity reproduces the image; a translation by (+3, +2) shifts content right/down.
  const auto id = at::tensor({1.0, 0.0, 0.0, 0.0, 1.0, 0.0}, at::kDouble).view({2, 3});
  EXPECT_LT((warp_affine(img, id, 20, 30) - img).abs().max().item<double>(), 1e-12);
  const auto shift = at::tensor({1.0, 0.0, 3.0, 0.0, 1.0, 2.0}, at::kDouble).view({2, 3});
  const auto out = warp_affine(img, shift, 20, 30);
  EXPECT_LT((out.slice(2, 2).slice(3, 3) - img.slice(2, 0, 18).slice(3, 0, 27)).abs().max().item<double>(), 1e-12);
  EXPECT_LT(out.slice(2, 0, 2).abs().max().item<double>(), 1e-12);  // rows mapping above the image
  // Half-pixel translation averages neighbours (bilinear at pixel centres).
  const auto half = at::tensor({1.0, 0.0, 0.5, 0.0, 1.0, 0.0}, at::kDouble).view({2, 3});
  const auto h = warp_affine(img, half, 20, 30);
  const auto expect = (img.slice(3, 0, 29) + img.slice(3, 1, 30)) / 2;
  EXPECT_LT((h.slice(3, 1) - expect).abs().max().item<double>(), 1e-12);
}

TEST(FaceAlign, GradientsReachPixels) {
  auto img = (at::rand({2, 3, 160, 150}, at::kDouble) * 2 - 1).requires_grad_(true);
  auto lm = arcface_template().unsqueeze(0).repeat({2, 1, 1}) * 1.2 + 10.0;  // [2, 5, 2]
  const auto face = align_faces(img, lm, 112);
  ASSERT_EQ(face.sizes(), (at::IntArrayRef{2, 3, 112, 112}));
  const auto weights = at::rand_like(face);
  (face * weights).sum().backward();
  const auto g = img.grad();
  ASSERT_TRUE(g.defined());
  EXPECT_GT(g.abs().sum().item<double>(), 0.0);
  // The crop covers x, y in [10, 10 + 134.4]; pixels far outside it get no gradient.
  EXPECT_EQ(g.slice(2, 150).abs().max().item<double>(), 0.0);
  // Finite-difference check of one interior pixel.
  const int64_t y = 70, x = 70;
  const double eps = 1e-6;
  auto plus = img.detach().clone();
  plus[0][1][y][x] += eps;
  auto minus = img.detach().clone();
  minus[0][1][y][x] -= eps;
  const double fd = ((align_faces(plus, lm, 112) * weights).sum().item<double>() -
                     (align_faces(minus, lm, 112) * weights).sum().item<double>()) / (2 * eps);
  EXPECT_NEAR(g[0][1][y][x].item<double>(), fd, 1e-6);
}

TEST(FaceAlign, ReducedPrecisionImagesAreSampledAtFullPrecisionPositions) {
  // Vertical stripes 8 px wide on a 1024-px image: a crop read from positions off by a fraction
  // of a pixel differs from the exact one by up to the full contrast at every stripe edge.
  const auto x = at::arange(1024, at::kLong);
  const auto stripes =
      at::floor_divide(x, 8).remainder(2).to(at::kFloat).view({1, 1, 1, 1024}).expand({1, 3, 1024, 1024});
  const auto lm = arcface_template().unsqueeze(0) * 8.0 + at::tensor({37.0, 21.0}, at::kDouble);  // [1, 5, 2]
  const auto exact = align_faces(stripes.contiguous(), lm, 112);                                // fp32
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    const auto crop = align_faces(stripes.to(dtype).contiguous(), lm, 112);
    EXPECT_EQ(crop.scalar_type(), dtype);
    // Only the rounding of the sampled values remains (bf16: 2^-9 of values in [0, 1]); a grid
    // built in bf16 misplaces the edges and differs by up to 1.
    EXPECT_LT((crop.to(at::kFloat) - exact).abs().max().item<double>(), 0.01) << c10::toString(dtype);
  }
  // The gradient still reaches a bf16 image.
  auto img = stripes.to(at::kBFloat16).contiguous().requires_grad_(true);
  align_faces(img, lm, 112).to(at::kFloat).sum().backward();
  ASSERT_TRUE(img.grad().defined());
  EXPECT_EQ(img.grad().scalar_type(), at::kBFloat16);
  EXPECT_GT(img.grad().to(at::kFloat).abs().sum().item<double>(), 0.0);
}

TEST(FaceMtcnn, KeysOnMeta) {
  Mtcnn net(MtcnnOptions().tensor_options(at::TensorOptions().device(at::kMeta)));
  const auto keys = state_shapes(*net);
  EXPECT_EQ(keys.size(), 13u + 16u + 21u);  // facenet-pytorch pnet.pt / rnet.pt / onet.pt entries
  EXPECT_EQ(keys.at("pnet.conv4_2.weight"), (std::vector<int64_t>{4, 32, 1, 1}));
  EXPECT_EQ(keys.at("rnet.dense4.weight"), (std::vector<int64_t>{128, 576}));
  EXPECT_EQ(keys.at("onet.dense6_3.bias"), (std::vector<int64_t>{10}));
  EXPECT_EQ(keys.at("onet.prelu5.weight"), (std::vector<int64_t>{256}));
}

TEST(FaceMtcnn, NmsModes) {
  const auto boxes = at::tensor({0.f, 0.f, 10.f, 10.f, 1.f, 1.f, 11.f, 11.f, 20.f, 20.f, 30.f, 30.f, 2.f, 2.f, 6.f, 6.f})
                         .view({4, 4});
  const auto scores = at::tensor({0.9f, 0.95f, 0.5f, 0.8f});
  // IoU(0, 1) = 81 / 119 > 0.5; box 3 lies inside box 1 (IoU 16 / 100, but 'Min' overlap 1).
  EXPECT_TRUE(at::equal(face_nms(boxes, scores, 0.5), at::tensor({1, 3, 2}, at::kLong)));
  EXPECT_TRUE(at::equal(face_nms(boxes, scores, 0.7, true), at::tensor({1, 2}, at::kLong)));
}

TEST(FaceRunner, IResNetFromFiles) {
  const std::string dir = ::testing::TempDir();
  IResNet net(IResNetOptions().layers({1, 1, 2, 1}));
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (const auto& p : net->named_parameters()) state.emplace_back(p.key(), p.value().detach() + 0.01);
  for (const auto& b : net->named_buffers()) state.emplace_back(b.key(), b.value());
  io::save_file(dir + "/face_run_weights.safetensors", state);
  {
    std::ofstream out(dir + "/face_run_config.json");
    out << R"({"network": "iresnet100", "layers": [1, 1, 2, 1], "num_features": 512})";
  }
  const auto image = at::rand({2, 3, 112, 112}) * 2 - 1;
  io::save_file(dir + "/face_run_inputs.safetensors", {{"image", image}});
  model::run::NetworkRun run;
  run.model = "arcface-iresnet";
  run.config = dir + "/face_run_config.json";
  run.weights = dir + "/face_run_weights.safetensors";
  run.inputs = dir + "/face_run_inputs.safetensors";
  run.out = dir + "/face_run_out.safetensors";
  ASSERT_EQ(model::run::run_face_network(run), 0);
  const auto out = io::load_file(run.out);
  at::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.add_(0.01);
  EXPECT_LT((out.at("embedding") - net->forward(image)).abs().max().item<double>(), 1e-5);
  run.model = "arcface-unknown";
  EXPECT_THROW(model::run::run_face_network(run), c10::Error);
  // The IR-SE config is our own format too: an unknown key is refused by name, not ignored.
  {
    std::ofstream out(dir + "/face_run_config.json");
    out << R"({"num_layers": 50, "drop_ratio": 0.4})";
  }
  run.model = "arcface-irse50";
  try {
    model::run::run_face_network(run);
    ADD_FAILURE() << "an unknown IR-SE config key loaded";
  } catch (const c10::Error& err) {
    EXPECT_NE(std::string(err.what()).find("drop_ratio = 0.4 is not supported"), std::string::npos) << err.what();
  }
  for (const auto* f : {"weights.safetensors", "config.json", "inputs.safetensors", "out.safetensors"})
    std::remove((dir + "/face_run_" + f).c_str());
}

}  // namespace
}  // namespace lookahead::model::face
