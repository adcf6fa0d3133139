// Parity of model/face with tests/parity/face_oracle.py (fixture directory = argv[1]): iresnet
// and IR-SE50 embeddings from random weights in the checkpoint key layout (BatchNorm running
// statistics included), the similarity transform plus warp of the alignment reference, and the
// MTCNN P/R/O-Nets with facenet-pytorch 2.6.0's shipped weights, and MTCNN detection on real
// photos (scikit-image astronaut, matplotlib grace_hopper) against facenet-pytorch's boxes and
// landmarks (within 1 px).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "model/face/align.h"
#include "model/face/arcface_iresnet.h"
#include "model/face/arcface_irse.h"
#include "model/face/mtcnn.h"
#include "model/face/mtcnn_detect.h"
#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/run/model_runners.h"

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

template <typename Net>
void load_mtcnn(Net& net, const std::string& name) {
  const auto report = io::load_state_dict(*net, io::load_file(g_dir + "/mtcnn_" + name + ".safetensors"), name);
  EXPECT_TRUE(report.ok()) << report.summary();
}

TEST(FaceParity, MtcnnNetworks) {
  at::NoGradGuard no_grad;
  PNet pnet;
  load_mtcnn(pnet, "pnet");
  const auto p = pnet->forward(g_cases.at("pnet.input"));
  const double p_err = std::max(max_abs(p.regression, g_cases.at("pnet.regression")),
                                max_abs(p.probability, g_cases.at("pnet.probability")));
  RNet rnet;
  load_mtcnn(rnet, "rnet");
  const auto r = rnet->forward(g_cases.at("rnet.input"));
  const double r_err = std::max(max_abs(r.regression, g_cases.at("rnet.regression")),
                                max_abs(r.probability, g_cases.at("rnet.probability")));
  ONet onet;
  load_mtcnn(onet, "onet");
  const auto o = onet->forward(g_cases.at("onet.input"));
  const double o_err = std::max({max_abs(o.regression, g_cases.at("onet.regression")),
                                 max_abs(o.probability, g_cases.at("onet.probability")),
                                 max_abs(o.landmarks, g_cases.at("onet.landmarks"))});
  std::printf("mtcnn: pnet %s err %.3g, rnet err %.3g, onet err %.3g\n",
              std::to_string(g_cases.at("pnet.input").size(2)).c_str(), p_err, r_err, o_err);
  EXPECT_LT(p_err, 1e-4);
  EXPECT_LT(r_err, 1e-4);
  EXPECT_LT(o_err, 1e-4);
}

TEST(FaceParity, MtcnnDetectsPhotos) {
  Mtcnn mtcnn;
  mtcnn->load_weights(g_dir + "/mtcnn_pnet.safetensors", g_dir + "/mtcnn_rnet.safetensors",
                      g_dir + "/mtcnn_onet.safetensors");
  const auto photos = io::load_file(g_dir + "/mtcnn_photos.safetensors");
  for (const std::string name : {"astronaut", "grace_hopper"}) {
    const auto det = mtcnn->detect(photos.at(name + ".image"));
    const auto ref_boxes = photos.at(name + ".boxes");
    ASSERT_EQ(det.boxes.size(0), ref_boxes.size(0)) << name;
    const double box_err = max_abs(det.boxes, ref_boxes);
    const double lm_err = max_abs(det.landmarks, photos.at(name + ".landmarks"));
    const double prob_err = max_abs(det.probs, photos.at(name + ".probs"));
    std::printf("mtcnn %s: %lld faces, box err %.3g px, landmark err %.3g px, prob err %.3g\n", name.c_str(),
                static_cast<long long>(det.boxes.size(0)), box_err, lm_err, prob_err);
    EXPECT_LT(box_err, 1.0) << name;
    EXPECT_LT(lm_err, 1.0) << name;
    EXPECT_LT(prob_err, 1e-3) << name;
  }
}

TEST(FaceParity, MtcnnRunner) {
  // The oracle's single weights file with prefixed keys, as `lookahead model run --model mtcnn` takes it.
  const auto photos = io::load_file(g_dir + "/mtcnn_photos.safetensors");
  model::run::NetworkRun run;
  run.model = "mtcnn";
  run.weights = g_dir + "/mtcnn_all.safetensors";
  run.inputs = g_dir + "/mtcnn_run_inputs.safetensors";
  run.out = g_dir + "/mtcnn_run_out.safetensors";
  io::save_file(run.inputs, {{"image", photos.at("astronaut.image")}});
  ASSERT_EQ(model::run::run_face_network(run), 0);
  const auto out = io::load_file(run.out);
  EXPECT_LT(max_abs(out.at("boxes"), photos.at("astronaut.boxes")), 1.0);
  EXPECT_LT(max_abs(out.at("landmarks"), photos.at("astronaut.landmarks")), 1.0);
  EXPECT_EQ(out.at("probs").size(0), photos.at("astronaut.probs").size(0));
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
