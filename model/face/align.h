// 5-point face alignment to the 112x112 ArcFace template: a least-squares similarity transform
// (Umeyama, no reflection) from detected landmarks, applied by a differentiable bilinear warp
// (affine_grid + grid_sample) with cv2.warpAffine's geometry, so identity losses can back-propagate
// to the image pixels.
#pragma once

#include <ATen/core/Tensor.h>

namespace lookahead::model::face {

/// insightface arcface_dst (face_align.py): left eye, right eye, nose, left/right mouth corner,
/// (x, y) pixel coordinates in a 112x112 crop. Returned as float64 [5, 2], scaled by size / 112.
at::Tensor arcface_template(double size = 112.0);

/// Least-squares similarity transform (rotation, uniform scale, translation; determinant > 0)
/// mapping `src` [N, 2] onto `dst` [N, 2] (Umeyama 1991, as skimage's SimilarityTransform and
/// insightface's estimate_norm). Computed in float64 on the CPU; returns [2, 3] float64 with
/// dst ≈ M[:, :2] @ src + M[:, 2].
at::Tensor similarity_transform(const at::Tensor& src, const at::Tensor& dst);

/// cv2.warpAffine(image, M, (out_w, out_h), INTER_LINEAR, BORDER_CONSTANT 0) for a batch:
/// out(x, y) = bilinear sample of `image` at M^-1 (x, y), pixel centres at integer coordinates
/// (x right, y down), zero outside. Implemented as affine_grid + grid_sample with
/// align_corners = true (which puts normalised ±1 on the outer pixel centres, matching that
/// convention exactly; kornia.warp_affine's default). Differentiable w.r.t. `image`; `matrices`
/// are treated as constants. cv2 itself quantises the sub-pixel weights to 1/32, so it differs
/// from this exact bilinear warp by up to about 1/64 of a pixel step.
/// image [B, C, H, W] floating, matrices [B, 2, 3] (or [2, 3] for all) -> [B, C, out_h, out_w].
at::Tensor warp_affine(const at::Tensor& image, const at::Tensor& matrices, int64_t out_h, int64_t out_w);

/// Aligns each image's face to the size x size ArcFace template from its 5 landmarks
/// (`landmarks` [B, 5, 2] pixel (x, y) in `images`, order as arcface_template). Differentiable
/// w.r.t. `images` [B, C, H, W]; returns [B, C, size, size].
at::Tensor align_faces(const at::Tensor& images, const at::Tensor& landmarks, int64_t size = 112);

}  // namespace lookahead::model::face
