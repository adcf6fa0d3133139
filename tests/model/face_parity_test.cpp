// Parity of model/face with tests/parity/face_oracle.py (fixture directory = argv[1]): iresnet
// and IR-SE50 embeddings from random weights in the checkpoint key layout (BatchNorm running
// statistics included), and the similarity transform plus warp of the alignment reference.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <string>

#include "model/face/align.h"
#include "model/face/arcface_iresnet.h"
#include "model/face/arcface_irse.h"
#include "model/io/safetensors.h"
#include "model/io/state_dict.h"

namespace lookahead::model::face {
namespace {

std::string g_dir;
std::map<std::string, at::Tensor> g_cases;

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(FaceParity, IResNetEmbedding) {
  const auto layers = g_cases.at("iresnet.layers");
  IResNetOptions o;
  o.layers({layers[0].item<int64_t>(), layers[1].item<int64_t>(), layers[2].item<int64_t>(), layers[3].item<int64_t>()});
  IResNet net(o);
  const auto report = io::load_state_dict(*net, io::load_file(g_dir + "/iresnet_weights.safetensors"), "iresnet");
  EXPECT_TRUE(report.ok()) << report.summary();
  at::NoGradGuard no_grad;
  const auto x = g_cases.at("iresnet.input");
  const auto feat = net->features(x);
  const auto emb = net->forward(x);
  const auto ref_feat = g_cases.at("iresnet.features");
  const double feat_err = max_abs(feat, ref_feat) / ref_feat.abs().max().item<double>();
  const double emb_err = max_abs(emb, g_cases.at("iresnet.embedding"));
  std::printf("iresnet layers [%lld, %lld, %lld, %lld]: features max rel err %.3g, embedding max abs err %.3g\n",
              static_cast<long long>(o.layers()[0]), static_cast<long long>(o.layers()[1]),
              static_cast<long long>(o.layers()[2]), static_cast<long long>(o.layers()[3]), feat_err, emb_err);
  EXPECT_LT(feat_err, 1e-4);
  EXPECT_LT(emb_err, 1e-4);
}

TEST(FaceParity, IRSE50Embedding) {
  IRSE net;
  const auto report = io::load_state_dict(*net, io::load_file(g_dir + "/irse_weights.safetensors"), "irse50");
  EXPECT_TRUE(report.ok()) << report.summary();
  at::NoGradGuard no_grad;
  const auto x = g_cases.at("irse.input");
  const auto ref_feat = g_cases.at("irse.features");
  const double feat_err = max_abs(net->features(x), ref_feat) / ref_feat.abs().max().item<double>();
  const double emb_err = max_abs(net->forward(x), g_cases.at("irse.embedding"));
  std::printf("irse50: features max rel err %.3g, embedding max abs err %.3g\n", feat_err, emb_err);
  EXPECT_LT(feat_err, 1e-4);
  EXPECT_LT(emb_err, 1e-4);
}

TEST(FaceParity, AlignmentMatrixAndWarp) {
  const auto m = similarity_transform(g_cases.at("align.points"), arcface_template());
  const double m_err = max_abs(m, g_cases.at("align.matrix"));
  const auto img = g_cases.at("align.image").unsqueeze(0);
  const auto ref = g_cases.at("align.warped");
  const double warp_err = max_abs(warp_affine(img, g_cases.at("align.matrix"), 112, 112)[0], ref);
  const double warp64_err = max_abs(warp_affine(img.to(at::kDouble), g_cases.at("align.matrix"), 112, 112)[0], ref);
  const double align_err = max_abs(align_faces(img, g_cases.at("align.points").unsqueeze(0), 112)[0], ref);
  std::printf("align: matrix err %.3g, warp fp32 err %.3g, warp fp64 err %.3g, align_faces err %.3g\n", m_err,
              warp_err, warp64_err, align_err);
  // The points are stored as float32, so the matrix matches to float32 input precision.
  EXPECT_LT(m_err, 1e-4);
  EXPECT_LT(warp_err, 1e-4);
  EXPECT_LT(warp64_err, 1e-6);
  EXPECT_LT(align_err, 1e-4);
}

}  // namespace
}  // namespace lookahead::model::face

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FIXTURE_DIR (written by tests/parity/face_oracle.py)\n", argv[0]);
    return 2;
  }
  lookahead::model::face::g_dir = argv[1];
  lookahead::model::face::g_cases = lookahead::model::io::load_file(std::string(argv[1]) + "/face_cases.safetensors");
  return RUN_ALL_TESTS();
}
