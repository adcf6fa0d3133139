// MTCNN runs per image (its cascade is per-image anyway); the aligned faces of every row, found or
// not, go to the embedder in one batch so that a collective embedder sees identical calls on all
// ranks regardless of what each rank's images contain.
#include "trainer/eval/id_similarity.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <utility>

#include "model/face/align.h"

namespace lookahead::trainer {
namespace {

constexpr int64_t kFaceSize = 112;

}  // namespace

IdSimilarity::IdSimilarity(model::face::Mtcnn mtcnn, FaceEmbedder embedder)
    : mtcnn_(std::move(mtcnn)), embedder_(std::move(embedder)) {
  TORCH_CHECK(!mtcnn_.is_empty(), "IdSimilarity: the MTCNN module is null");
  TORCH_CHECK(static_cast<bool>(embedder_), "IdSimilarity: the face embedder is empty");
}

at::Tensor IdSimilarity::embed_with_landmarks(const at::Tensor& images, const at::Tensor& landmarks,
                                              std::vector<bool>& found, at::Tensor& used_landmarks) {
  TORCH_CHECK(images.dim() == 4 && images.size(3) == 3 && images.scalar_type() == at::kByte,
              "IdSimilarity: images must be uint8 [B, H, W, 3] RGB, got ", images.scalar_type(), " ", images.sizes());
  const int64_t b = images.size(0);
  at::NoGradGuard no_grad;
  at::Tensor lm;  // [B, 5, 2] float32 CPU, NaN rows still to detect
  if (landmarks.defined()) {
    TORCH_CHECK(landmarks.dim() == 3 && landmarks.size(0) == b && landmarks.size(1) == 5 && landmarks.size(2) == 2,
                "IdSimilarity: landmarks must be [B, 5, 2] with B = ", b, ", got ", landmarks.sizes());
    lm = landmarks.detach().to(at::kCPU, at::kFloat).clone();
  } else {
    lm = at::full({b, 5, 2}, std::numeric_limits<float>::quiet_NaN(), at::kFloat);
  }
  found.assign(static_cast<size_t>(b), false);
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < b; ++i) {
    if (!at::isfinite(lm[i]).all().item<bool>()) {
      const model::face::FaceDetections d = mtcnn_->detect(images[i]);
      if (d.boxes.size(0) == 0) continue;
      lm[i].copy_(d.landmarks[0]);  // largest face (select_largest)
    }
    found[static_cast<size_t>(i)] = true;
    rows.push_back(i);
  }
  // Rows without a face stay zero images (mid-grey in [-1, 1]); their embeddings are masked below.
  at::Tensor faces = at::zeros({b, 3, kFaceSize, kFaceSize}, images.options().dtype(at::kFloat));  // [B, 3, 112, 112]
  if (!rows.empty()) {
    const at::Tensor idx = at::tensor(rows, at::kLong);
    const at::Tensor idx_dev = idx.to(images.device());
    const at::Tensor pixels = images.index_select(0, idx_dev).permute({0, 3, 1, 2}).to(at::kFloat) / 127.5 - 1.0;  // [F, 3, H, W]
    faces.index_copy_(0, idx_dev, model::face::align_faces(pixels, lm.index_select(0, idx), kFaceSize));
  }
  at::Tensor emb = embedder_(faces);
  TORCH_CHECK(emb.dim() == 2 && emb.size(0) == b, "IdSimilarity: the embedder returned ", emb.sizes(), " for ", b,
              " faces; expected [", b, ", D]");
  std::vector<float> keep(static_cast<size_t>(b), 0.0f);
  for (const int64_t i : rows) keep[static_cast<size_t>(i)] = 1.0f;
  emb = emb.detach().to(at::kFloat) * at::tensor(keep, at::kFloat).to(emb.device()).unsqueeze(1);  // [B, D]
  used_landmarks = lm;
  return emb;
}

at::Tensor IdSimilarity::embed(const at::Tensor& images, const at::Tensor& landmarks, std::vector<bool>* found) {
  std::vector<bool> rows_found;
  at::Tensor used;
  at::Tensor emb = embed_with_landmarks(images, landmarks, rows_found, used);
  if (found != nullptr) *found = std::move(rows_found);
  return emb;
}

std::vector<IdScore> IdSimilarity::score(const at::Tensor& reference, const at::Tensor& generated) {
  std::vector<bool> found;
  at::Tensor lm;
  const at::Tensor emb = embed_with_landmarks(generated, at::Tensor(), found, lm).to(at::kCPU, at::kDouble);  // [N, D]
  TORCH_CHECK(reference.defined() && reference.numel() == emb.size(1), "IdSimilarity::score: reference must hold ",
              emb.size(1), " values (one embedding), got ", reference.defined() ? reference.sizes() : at::IntArrayRef{});
  at::Tensor ref = reference.detach().flatten().to(at::kCPU, at::kDouble);  // [D]
  const double ref_norm = ref.norm().item<double>();
  TORCH_CHECK(ref_norm > 0 && std::isfinite(ref_norm), "IdSimilarity::score: the reference embedding has norm ", ref_norm);
  ref = ref / ref_norm;
  std::vector<IdScore> out(found.size());
  for (size_t i = 0; i < found.size(); ++i) {
    if (!found[i]) continue;
    const at::Tensor e = emb[static_cast<int64_t>(i)];
    const double norm = e.norm().item<double>();
    TORCH_CHECK(norm > 0 && std::isfinite(norm), "IdSimilarity::score: the embedder returned norm ", norm, " for image ", i);
    out[i].face_found = true;
    out[i].similarity = (e * ref).sum().item<double>() / norm;
    out[i].landmarks = lm[static_cast<int64_t>(i)].clone();
  }
  return out;
}

}  // namespace lookahead::trainer
