// MTCNN cascade following facenet-pytorch's detect_face step by step (same float32 arithmetic,
// area resampling = adaptive average pooling, the same box rounding and clipping).
#include "model/face/mtcnn_detect.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "model/io/safetensors.h"
#include "model/io/state_dict.h"
#include "model/io/torch_checkpoint.h"

namespace lookahead::model::face {
namespace {

/// Makes boxes [N, >=4] square around their centres (facenet rerec).
at::Tensor rerec(at::Tensor boxes) {
  boxes = boxes.clone();
  const auto h = boxes.select(1, 3) - boxes.select(1, 1);
  const auto w = boxes.select(1, 2) - boxes.select(1, 0);
  const auto l = at::maximum(w, h);
  boxes.select(1, 0).copy_(boxes.select(1, 0) + w * 0.5 - l * 0.5);
  boxes.select(1, 1).copy_(boxes.select(1, 1) + h * 0.5 - l * 0.5);
  boxes.select(1, 2).copy_(boxes.select(1, 0) + l);
  boxes.select(1, 3).copy_(boxes.select(1, 1) + l);
  return boxes;
}

/// Box regression with +1 extents (facenet bbreg). boxes [N, >=4], reg [N, 4].
at::Tensor bbreg(at::Tensor boxes, const at::Tensor& reg) {
  boxes = boxes.clone();
  const auto w = boxes.select(1, 2) - boxes.select(1, 0) + 1;
  const auto h = boxes.select(1, 3) - boxes.select(1, 1) + 1;
  const auto b = at::stack({boxes.select(1, 0) + reg.select(1, 0) * w, boxes.select(1, 1) + reg.select(1, 1) * h,
                            boxes.select(1, 2) + reg.select(1, 2) * w, boxes.select(1, 3) + reg.select(1, 3) * h}, 1);
  boxes.slice(1, 0, 4).copy_(b);
  return boxes;
}

/// Crops each box (truncated, clipped to the image as facenet pad) of img [1, 3, H, W] and
/// area-resamples it to size x size; returns normalised crops [N, 3, size, size].
at::Tensor crops(const at::Tensor& img, const at::Tensor& boxes, int64_t size) {
  const int64_t h = img.size(2), w = img.size(3);
  const auto b = boxes.slice(1, 0, 4).trunc().to(at::kCPU, at::kInt);
  const auto a = b.accessor<int32_t, 2>();
  std::vector<at::Tensor> out;
  for (int64_t k = 0; k < b.size(0); ++k) {
    const int64_t x = std::max<int64_t>(a[k][0], 1), y = std::max<int64_t>(a[k][1], 1);
    const int64_t ex = std::min<int64_t>(a[k][2], w), ey = std::min<int64_t>(a[k][3], h);
    TORCH_CHECK(ey > y - 1 && ex > x - 1 && y - 1 < h && x - 1 < w, "MTCNN: degenerate crop");
    out.push_back(at::adaptive_avg_pool2d(img.slice(2, y - 1, ey).slice(3, x - 1, ex), {size, size}));
  }
  return (at::cat(out, 0) - 127.5) * 0.0078125;
}

FaceDetections empty_detections(const at::TensorOptions& t) {
  return {at::zeros({0, 4}, t), at::zeros({0}, t), at::zeros({0, 5, 2}, t)};
}

}  // namespace

at::Tensor face_nms(const at::Tensor& boxes_in, const at::Tensor& scores_in, double threshold, bool min_union_plus_one) {
  const auto boxes = boxes_in.detach().to(at::kCPU, at::kFloat).contiguous();
  const auto scores = scores_in.detach().to(at::kCPU, at::kFloat).contiguous();
  const int64_t n = boxes.size(0);
  const auto b = boxes.accessor<float, 2>();
  const auto s = scores.accessor<float, 1>();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return s[i] > s[j]; });
  const float one = min_union_plus_one ? 1.0f : 0.0f;
  std::vector<char> dropped(n, 0);
  std::vector<int64_t> keep;
  for (int64_t oi = 0; oi < n; ++oi) {
    const int64_t i = order[oi];
    if (dropped[i]) continue;
    keep.push_back(i);
    const float area_i = (b[i][2] - b[i][0] + one) * (b[i][3] - b[i][1] + one);
    for (int64_t oj = oi + 1; oj < n; ++oj) {
      const int64_t j = order[oj];
      if (dropped[j]) continue;
      const float iw = std::max(0.0f, std::min(b[i][2], b[j][2]) - std::max(b[i][0], b[j][0]) + one);
      const float ih = std::max(0.0f, std::min(b[i][3], b[j][3]) - std::max(b[i][1], b[j][1]) + one);
      const float inter = iw * ih;
      const float area_j = (b[j][2] - b[j][0] + one) * (b[j][3] - b[j][1] + one);
      const float overlap = min_union_plus_one ? inter / std::min(area_i, area_j) : inter / (area_i + area_j - inter);
      if (overlap > threshold) dropped[j] = 1;
    }
  }
  return at::tensor(keep, at::kLong);
}

MtcnnImpl::MtcnnImpl(const MtcnnOptions& options_) : options(options_) { reset(); }

void MtcnnImpl::reset() {
  pnet = register_module("pnet", PNet(options.tensor_options()));
  rnet = register_module("rnet", RNet(options.tensor_options()));
  onet = register_module("onet", ONet(options.tensor_options()));
}

void MtcnnImpl::load_weights(const std::string& pnet_file, const std::string& rnet_file, const std::string& onet_file) {
  io::load_state_dict(*pnet, io::load_weights_file(pnet_file), pnet_file);
  io::load_state_dict(*rnet, io::load_weights_file(rnet_file), rnet_file);
  io::load_state_dict(*onet, io::load_weights_file(onet_file), onet_file);
}

FaceDetections MtcnnImpl::detect(const at::Tensor& image) {
  TORCH_CHECK(image.dim() == 3 && image.size(2) == 3, "MTCNN expects an [H, W, 3] RGB image, got ", image.sizes());
  at::NoGradGuard no_grad;
  const auto dtype = pnet->conv1->weight.scalar_type();
  const auto img = image.to(pnet->conv1->weight.device()).permute({2, 0, 1}).unsqueeze(0).to(dtype);  // [1, 3, H, W]
  const int64_t h = img.size(2), w = img.size(3);
  const auto& th = options.thresholds();

  // Pyramid scales: 12 / min_face_size, times factor while the short side stays >= 12.
  std::vector<double> scales;
  const double m = 12.0 / options.min_face_size();
  double minl = static_cast<double>(std::min(h, w)) * m, scale = m;
  while (minl >= 12) {
    scales.push_back(scale);
    scale *= options.factor();
    minl *= options.factor();
  }

  // Stage 1: P-Net proposals per scale, NMS 0.5 within each scale, then 0.7 across scales.
  std::vector<at::Tensor> proposals;
  for (const double s : scales) {
    const int64_t sh = static_cast<int64_t>(static_cast<double>(h) * s + 1);
    const int64_t sw = static_cast<int64_t>(static_cast<double>(w) * s + 1);
    const auto data = (at::adaptive_avg_pool2d(img, {sh, sw}) - 127.5) * 0.0078125;
    const auto out = pnet->forward(data);
    const auto prob = out.probability.select(1, 1)[0];       // [h', w']
    const auto mask = prob >= th[0];
    const auto idx = mask.nonzero();                           // [K, 2] (y, x)
    if (idx.size(0) == 0) continue;
    const auto flat = mask.flatten().nonzero().squeeze(1);     // row-major, as boolean indexing
    const auto score = prob.flatten().index_select(0, flat);   // [K]
    const auto reg = out.regression[0].flatten(1).index_select(1, flat).t();  // [K, 4]
    const auto bb = idx.flip(1).to(dtype);                     // [K, 2] (x, y)
    const auto q1 = ((bb * 2 + 1) / s).floor();
    const auto q2 = ((bb * 2 + 12) / s).floor();
    const auto boxes = at::cat({q1, q2, score.unsqueeze(1), reg}, 1);  // [K, 9]
    proposals.push_back(boxes.index_select(0, face_nms(boxes.slice(1, 0, 4), boxes.select(1, 4), 0.5).to(boxes.device())));
  }
  const auto t = at::TensorOptions().dtype(at::kFloat);
  if (proposals.empty()) return empty_detections(t);
  auto boxes = at::cat(proposals, 0);
  boxes = boxes.index_select(0, face_nms(boxes.slice(1, 0, 4), boxes.select(1, 4), 0.7).to(boxes.device()));
  {
    const auto regw = boxes.select(1, 2) - boxes.select(1, 0);
    const auto regh = boxes.select(1, 3) - boxes.select(1, 1);
    boxes = at::stack({boxes.select(1, 0) + boxes.select(1, 5) * regw, boxes.select(1, 1) + boxes.select(1, 6) * regh,
                       boxes.select(1, 2) + boxes.select(1, 7) * regw, boxes.select(1, 3) + boxes.select(1, 8) * regh,
                       boxes.select(1, 4)}, 1);  // [N, 5]
    boxes = rerec(boxes);
  }

  // Stage 2: R-Net on 24x24 crops.
  {
    const auto out = rnet->forward(crops(img, boxes, 24));
    const auto score = out.probability.select(1, 1);
    const auto pass = (score > th[1]).nonzero().squeeze(1);
    boxes = at::cat({boxes.index_select(0, pass).slice(1, 0, 4), score.index_select(0, pass).unsqueeze(1)}, 1);
    const auto mv = out.regression.index_select(0, pass);
    if (boxes.size(0) == 0) return empty_detections(t);
    const auto pick = face_nms(boxes.slice(1, 0, 4), boxes.select(1, 4), 0.7).to(boxes.device());
    boxes = rerec(bbreg(boxes.index_select(0, pick), mv.index_select(0, pick)));
  }

  // Stage 3: O-Net on 48x48 crops: scores, landmarks, final regression and 'Min' NMS.
  const auto out = onet->forward(crops(img, boxes, 48));
  const auto score = out.probability.select(1, 1);
  const auto pass = (score > th[2]).nonzero().squeeze(1);
  boxes = at::cat({boxes.index_select(0, pass).slice(1, 0, 4), score.index_select(0, pass).unsqueeze(1)}, 1);
  if (boxes.size(0) == 0) return empty_detections(t);
  const auto pts = out.landmarks.index_select(0, pass);  // [N, 10]
  const auto wi = (boxes.select(1, 2) - boxes.select(1, 0) + 1).unsqueeze(1);
  const auto hi = (boxes.select(1, 3) - boxes.select(1, 1) + 1).unsqueeze(1);
  const auto px = wi * pts.slice(1, 0, 5) + boxes.select(1, 0).unsqueeze(1) - 1;
  const auto py = hi * pts.slice(1, 5, 10) + boxes.select(1, 1).unsqueeze(1) - 1;
  auto points = at::stack({px, py}, 2);  // [N, 5, 2]
  boxes = bbreg(boxes, out.regression.index_select(0, pass));
  const auto pick = face_nms(boxes.slice(1, 0, 4), boxes.select(1, 4), 0.7, /*min_union_plus_one=*/true).to(boxes.device());
  boxes = boxes.index_select(0, pick);
  points = points.index_select(0, pick);
  if (options.select_largest()) {
    const auto area = (boxes.select(1, 2) - boxes.select(1, 0)) * (boxes.select(1, 3) - boxes.select(1, 1));
    const auto order = std::get<1>(area.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
    boxes = boxes.index_select(0, order);
    points = points.index_select(0, order);
  }
  return {boxes.slice(1, 0, 4).to(at::kCPU, at::kFloat).contiguous(), boxes.select(1, 4).to(at::kCPU, at::kFloat).contiguous(),
          points.to(at::kCPU, at::kFloat).contiguous()};
}

}  // namespace lookahead::model::face
