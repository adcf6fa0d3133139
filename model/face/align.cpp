// Similarity estimation and the grid_sample warp. The pixel -> normalised coordinate maps use
// align_corners = true: u = 2 x / (W - 1) - 1, so the composite theta maps output normalised
// coordinates to input normalised coordinates through M^-1.
#include "model/face/align.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <vector>

namespace lookahead::model::face {

at::Tensor arcface_template(double size) {
  static const double kDst[5][2] = {
      {38.2946, 51.6963}, {73.5318, 51.5014}, {56.0252, 71.7366}, {41.5493, 92.3655}, {70.7299, 92.2041}};
  std::vector<double> flat;
  for (const auto& p : kDst) {
    flat.push_back(p[0] * size / 112.0);
    flat.push_back(p[1] * size / 112.0);
  }
  return at::tensor(flat, at::kDouble).reshape({5, 2});
}

at::Tensor similarity_transform(const at::Tensor& src_in, const at::Tensor& dst_in) {
  TORCH_CHECK(src_in.dim() == 2 && src_in.size(1) == 2 && src_in.sizes() == dst_in.sizes() && src_in.size(0) >= 2,
              "similarity_transform expects matching [N, 2] point sets (N >= 2), got ", src_in.sizes(), " and ",
              dst_in.sizes());
  const auto src = src_in.detach().to(at::kCPU, at::kDouble);
  const auto dst = dst_in.detach().to(at::kCPU, at::kDouble);
  const double n = static_cast<double>(src.size(0));
  const auto mu_s = src.mean(0), mu_d = dst.mean(0);            // [2]
  const auto s_c = src - mu_s, d_c = dst - mu_d;                // [N, 2]
  const auto cov = at::matmul(d_c.t(), s_c) / n;                // [2, 2]
  auto [u, sv, vh] = at::linalg_svd(cov);
  auto d = at::ones({2}, at::kDouble);
  if (at::linalg_det(cov).item<double>() < 0) d[1] = -1.0;
  const auto r = at::matmul(at::matmul(u, at::diag(d)), vh);   // [2, 2]
  const auto var_s = s_c.pow(2).sum() / n;
  const auto scale = (sv * d).sum() / var_s;
  const auto t = mu_d - scale * at::matmul(r, mu_s);            // [2]
  return at::cat({scale * r, t.unsqueeze(1)}, 1);               // [2, 3]
}

at::Tensor warp_affine(const at::Tensor& image, const at::Tensor& matrices, int64_t out_h, int64_t out_w) {
  TORCH_CHECK(image.dim() == 4 && at::isFloatingType(image.scalar_type()), "warp_affine expects a floating [B, C, H, W]");
  const int64_t b = image.size(0), h = image.size(2), w = image.size(3);
  TORCH_CHECK(h > 1 && w > 1 && out_h > 1 && out_w > 1, "warp_affine needs sizes > 1");
  auto m = matrices.detach().to(at::kCPU, at::kDouble);
  if (m.dim() == 2) m = m.unsqueeze(0).expand({b, 2, 3});
  TORCH_CHECK(m.dim() == 3 && m.size(0) == b && m.size(1) == 2 && m.size(2) == 3,
              "warp_affine matrices must be [B, 2, 3] or [2, 3], got ", matrices.sizes());
  const auto last_row = at::tensor({0.0, 0.0, 1.0}, at::kDouble).view({1, 1, 3}).expand({b, 1, 3});
  const auto inv = at::linalg_inv(at::cat({m, last_row}, 1));  // [B, 3, 3]: output pixel -> input pixel
  // output normalised -> output pixel, and input pixel -> input normalised (align_corners = true)
  const auto denorm_out = at::tensor({(out_w - 1) / 2.0, 0.0, (out_w - 1) / 2.0, 0.0, (out_h - 1) / 2.0,
                                      (out_h - 1) / 2.0, 0.0, 0.0, 1.0}, at::kDouble).view({3, 3});
  const auto norm_in = at::tensor({2.0 / (w - 1), 0.0, -1.0, 0.0, 2.0 / (h - 1), -1.0, 0.0, 0.0, 1.0}, at::kDouble)
                           .view({3, 3});
  const auto theta = at::matmul(norm_in, at::matmul(inv, denorm_out)).slice(1, 0, 2);  // [B, 2, 3]
  // Sampling coordinates need more than the 8 significant bits of bf16 (a 1024-px image would be
  // read up to about a pixel off): reduced-precision images are sampled in fp32, and the crop
  // comes back in the image's dtype. The cast is differentiable, so gradients still reach `image`.
  const bool reduced = image.scalar_type() == at::kBFloat16 || image.scalar_type() == at::kHalf;
  const at::Tensor source = reduced ? image.to(at::kFloat) : image;  // [B, C, H, W]
  const auto grid = at::affine_grid_generator(theta.to(source.options()), {b, image.size(1), out_h, out_w},
                                              /*align_corners=*/true);              // [B, out_h, out_w, 2]
  at::Tensor crop = at::grid_sampler(source, grid, /*interpolation_mode=*/0, /*padding_mode=*/0, /*align_corners=*/true);
  return reduced ? crop.to(image.scalar_type()) : crop;
}

at::Tensor align_faces(const at::Tensor& images, const at::Tensor& landmarks, int64_t size) {
  TORCH_CHECK(landmarks.dim() == 3 && landmarks.size(0) == images.size(0) && landmarks.size(1) == 5 &&
                  landmarks.size(2) == 2,
              "align_faces expects landmarks [B, 5, 2], got ", landmarks.sizes());
  const auto dst = arcface_template(static_cast<double>(size));
  std::vector<at::Tensor> ms;
  for (int64_t i = 0; i < landmarks.size(0); ++i) ms.push_back(similarity_transform(landmarks[i], dst));
  return warp_affine(images, at::stack(ms), size, size);
}

}  // namespace lookahead::model::face
