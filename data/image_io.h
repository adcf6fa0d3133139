// Image encoding/decoding (JPEG via libjpeg-turbo, PNG via libpng) and the resize + center crop
// that turns a decoded image into a training tensor. All tensors here live on the CPU.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lookahead::data {

enum class ImageCodec { kUnknown, kJpeg, kPng };

/// Codec from the first bytes (JPEG FF D8 FF, PNG 89 'PNG').
ImageCodec sniff_codec(const uint8_t* data, size_t size);

/// Decodes JPEG or PNG bytes to uint8 [H,W,3] RGB (grayscale and palette are expanded; PNG alpha is
/// composited on black; 16-bit PNG is reduced to 8 bits). Throws DataError(`file`, `record`) on
/// bytes that are not a complete image of a supported kind.
at::Tensor decode_image(const uint8_t* data, size_t size, const std::string& file = "", int64_t record = -1);

/// Encodes uint8 [H,W,3] RGB losslessly as PNG.
std::vector<uint8_t> encode_png(const at::Tensor& image);
/// Encodes uint8 [H,W,3] RGB as baseline JPEG (4:2:0) at `quality` 1..100.
std::vector<uint8_t> encode_jpeg(const at::Tensor& image, int quality = 90);

/// Where a source pixel lands after resize_center_crop: x' = x*scale_x + shift_x (same for y), with
/// pixel centers at integer coordinates (OpenCV / MTCNN convention).
struct CropTransform {
  double scale_x = 1, scale_y = 1, shift_x = 0, shift_y = 0;
  bool flipped = false;  ///< mirrored left-right: scale_x < 0, and left/right landmarks swap roles
};

/// Scales uint8 [H,W,3] so that its shorter side is `size` (bilinear, antialiased when shrinking,
/// half-pixel centers), center-crops to size x size and returns float [3,size,size] in [-1,1].
/// `transform` (optional) receives the landmark mapping.
at::Tensor resize_center_crop(const at::Tensor& image, int64_t size, CropTransform* transform = nullptr);

/// Where the crop of resize_crop lies and whether the result is mirrored.
struct CropPlacement {
  double x = 0.5;  ///< 0: leftmost crop, 1: rightmost, 0.5: centered (fraction of the horizontal slack)
  double y = 0.5;  ///< 0: top, 1: bottom
  bool flip = false;  ///< mirror left-right after cropping
};

/// resize_center_crop with the crop anywhere (torchvision's Resize + RandomCrop, at a given offset:
/// round(slack * placement)) and an optional horizontal flip. `transform` maps source landmarks to
/// output pixels, flip included; after a flip apply flip_landmark_order as well.
at::Tensor resize_crop(const at::Tensor& image, int64_t size, const CropPlacement& placement,
                       CropTransform* transform = nullptr);

/// The 5 landmarks of a mirrored face in template order: left and right eye swap, and so do the
/// mouth corners ([..., 5, 2] -> [..., 5, 2]).
at::Tensor flip_landmark_order(const at::Tensor& landmarks);

/// Applies `t` to landmarks [...,2] (x,y); NaN stays NaN.
at::Tensor transform_landmarks(const at::Tensor& landmarks, const CropTransform& t);

}  // namespace lookahead::data
