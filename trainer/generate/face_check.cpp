// The face checks of `lookahead data generate` (see face_check.h).
#include "trainer/generate/face_check.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <filesystem>
#include <limits>

#include "model/face/arcface_iresnet.h"
#include "model/face/arcface_irse.h"
#include "model/io/state_dict.h"
#include "model/io/torch_checkpoint.h"

namespace lookahead::trainer::generate {

FaceCheck::FaceCheck(const FaceCheckOptions& options, at::Device device) : options_(options) {
  namespace fs = std::filesystem;
  TORCH_CHECK(options.min_face_size > 0, "face check: min_face_size must be > 0, got ", options.min_face_size);
  for (const char* net : {"pnet.pt", "rnet.pt", "onet.pt"})
    TORCH_CHECK(fs::is_regular_file(fs::path(options.mtcnn) / net),
                "face check: MTCNN weights not found: ", (fs::path(options.mtcnn) / net).string(),
                " (--mtcnn names facenet-pytorch's data folder)");
  // Pyramid from min_face_size: smaller faces are rejected anyway, so do not search for them.
  mtcnn_ = model::face::Mtcnn(model::face::MtcnnOptions().min_face_size(std::min(options.min_face_size, 20.0)));
  const std::string d = options.mtcnn;
  mtcnn_->load_weights(d + "/pnet.pt", d + "/rnet.pt", d + "/onet.pt");
  mtcnn_->to(device);
  mtcnn_->eval();
  if (options.arcface.empty()) return;
  TORCH_CHECK(fs::is_regular_file(options.arcface), "face check: ArcFace weights not found: ", options.arcface);
  const at::TensorOptions t = at::TensorOptions().device(device).dtype(at::kFloat);
  std::function<at::Tensor(const at::Tensor&)> forward;
  if (options.arcface_network == "irse50") {
    model::face::IRSE net(model::face::IRSEOptions().num_layers(50).tensor_options(t));
    arcface_ = net.ptr();
    forward = [net](const at::Tensor& x) mutable { return net->forward(x); };
  } else if (options.arcface_network == "iresnet50" || options.arcface_network == "iresnet100") {
    model::face::IResNet net(model::face::IResNetOptions::named(options.arcface_network).tensor_options(t));
    arcface_ = net.ptr();
    forward = [net](const at::Tensor& x) mutable { return net->forward(x); };
  } else {
    TORCH_CHECK(false, "face check: unknown ArcFace network '", options.arcface_network,
                "' (expected irse50, iresnet50 or iresnet100)");
  }
  model::io::load_state_dict(*arcface_, model::io::load_weights_file(options.arcface), options.arcface);
  arcface_->eval();
  id_ = std::make_unique<IdSimilarity>(mtcnn_, [forward, device](const at::Tensor& faces) {
    at::NoGradGuard no_grad;
    return forward(faces.to(device, at::kFloat)).to(at::kCPU, at::kFloat);  // [B, 512]
  });
}

std::vector<FaceResult> FaceCheck::detect(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(3) == 3 && images.scalar_type() == at::kByte,
              "face check: images must be uint8 [B, H, W, 3], got ", images.sizes(), " ", images.scalar_type());
  at::NoGradGuard no_grad;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<FaceResult> out;
  for (int64_t i = 0; i < images.size(0); ++i) {
    FaceResult r;
    r.box = at::full({4}, nan);
    r.landmarks = at::full({5, 2}, nan);
    const model::face::FaceDetections d = mtcnn_->detect(images[i]);
    if (d.boxes.defined() && d.boxes.size(0) > 0) {
      const at::Tensor box = d.boxes[0].to(at::kCPU, at::kFloat);  // largest face first
      const float w = box[2].item<float>() - box[0].item<float>(), h = box[3].item<float>() - box[1].item<float>();
      if (std::min(w, h) >= options_.min_face_size) {
        r.found = true;
        r.prob = d.probs[0].item<float>();
        r.box = box.clone();
        r.landmarks = d.landmarks[0].to(at::kCPU, at::kFloat).clone();
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

at::Tensor FaceCheck::embed(const at::Tensor& images, const std::vector<FaceResult>& faces) {
  TORCH_CHECK(id_, "face check: no ArcFace weights (--arcface)");
  TORCH_CHECK(static_cast<int64_t>(faces.size()) == images.size(0), "face check: ", faces.size(), " results for ",
              images.size(0), " images");
  std::vector<at::Tensor> lm;
  for (const auto& f : faces) lm.push_back(f.landmarks);
  std::vector<bool> found;
  // Rows without a face carry NaN landmarks; IdSimilarity would detect again, so pass only found rows.
  at::Tensor e = at::zeros({images.size(0), 512});
  std::vector<int64_t> rows;
  for (size_t i = 0; i < faces.size(); ++i)
    if (faces[i].found) rows.push_back(static_cast<int64_t>(i));
  if (rows.empty()) return e;
  const at::Tensor idx = at::tensor(rows, at::kLong);
  const at::Tensor emb = id_->embed(images.index_select(0, idx), at::stack(lm).index_select(0, idx), &found);
  // iresnet's output is not normalised (IR-SE50's is): the filter compares cosines.
  const at::Tensor unit = emb.to(at::kCPU, at::kFloat);
  e.index_copy_(0, idx, unit / unit.norm(2, {1}, true).clamp_min(1e-12));
  return e;  // [B, 512]
}

}  // namespace lookahead::trainer::generate
