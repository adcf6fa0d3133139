// JPEG/PNG codecs and resize. libjpeg reports errors through error_exit, which must not return:
// we longjmp out of small functions that hold only plain data (no destructors are skipped), and the
// RAII owner of the jpeg struct destroys it afterwards. PNG uses libpng's simplified API, which
// reports errors by return value and needs no setjmp at all.
#include "data/image_io.h"

#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>
#include <jerror.h>

#include "data/error.h"

namespace lookahead::data {

namespace {

struct JpegError {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

// "Premature end of data" is only a warning to libjpeg (it pads the rest with grey); here it is an
// error, since a truncated image must not silently enter training. Other warnings (extraneous bytes
// before a marker, common in camera files) are harmless and ignored.
void jpeg_on_warning(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
}

class JpegDecoder {
 public:
  JpegDecoder() {
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_on_error;
    err.mgr.emit_message = jpeg_on_warning;
    err.message[0] = '\0';
    jpeg_create_decompress(&cinfo);
  }
  ~JpegDecoder() { jpeg_destroy_decompress(&cinfo); }
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;
  jpeg_decompress_struct cinfo{};
  JpegError err{};
};

class JpegEncoder {
 public:
  JpegEncoder() {
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_on_error;
    err.message[0] = '\0';
    jpeg_create_compress(&cinfo);
  }
  ~JpegEncoder() {
    jpeg_destroy_compress(&cinfo);
    std::free(buffer);  // allocated by jpeg_mem_dest with malloc
  }
  JpegEncoder(const JpegEncoder&) = delete;
  JpegEncoder& operator=(const JpegEncoder&) = delete;
  jpeg_compress_struct cinfo{};
  JpegError err{};
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
};

// Phase 1: header and start; only plain data in this frame, so longjmp skips no destructor.
bool jpeg_start(JpegDecoder* d, const uint8_t* data, size_t size) {
  if (setjmp(d->err.jump)) return false;
  jpeg_mem_src(&d->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d->cinfo, TRUE);
  d->cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&d->cinfo);
  return true;
}

// Phase 2: scanlines into a buffer the caller allocated from the dimensions phase 1 found.
bool jpeg_rows(JpegDecoder* d, uint8_t* out) {
  if (setjmp(d->err.jump)) return false;
  const size_t stride = static_cast<size_t>(d->cinfo.output_width) * 3;
  while (d->cinfo.output_scanline < d->cinfo.output_height) {
    JSAMPROW row = out + static_cast<size_t>(d->cinfo.output_scanline) * stride;
    jpeg_read_scanlines(&d->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&d->cinfo);
  return true;
}

bool jpeg_encode(JpegEncoder* e, const uint8_t* rgb, int width, int height, int quality) {
  if (setjmp(e->err.jump)) return false;
  jpeg_mem_dest(&e->cinfo, &e->buffer, &e->size);
  e->cinfo.image_width = static_cast<JDIMENSION>(width);
  e->cinfo.image_height = static_cast<JDIMENSION>(height);
  e->cinfo.input_components = 3;
  e->cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&e->cinfo);
  jpeg_set_quality(&e->cinfo, quality, TRUE);
  jpeg_start_compress(&e->cinfo, TRUE);
  const size_t stride = static_cast<size_t>(width) * 3;
  while (e->cinfo.next_scanline < e->cinfo.image_height) {
    auto row = const_cast<JSAMPROW>(rgb + static_cast<size_t>(e->cinfo.next_scanline) * stride);
    jpeg_write_scanlines(&e->cinfo, &row, 1);
  }
  jpeg_finish_compress(&e->cinfo);
  return true;
}

at::Tensor decode_jpeg(const uint8_t* data, size_t size, const std::string& file, int64_t record) {
  JpegDecoder d;
  if (!jpeg_start(&d, data, size)) throw DataError(file, record, std::string("bad JPEG: ") + d.err.message);
  const int64_t h = d.cinfo.output_height, w = d.cinfo.output_width;
  if (d.cinfo.output_components != 3)
    throw DataError(file, record, "bad JPEG: cannot convert " + std::to_string(d.cinfo.output_components) +
                                      "-component image to RGB");
  at::Tensor out = at::empty({h, w, 3}, at::kByte);
  if (!jpeg_rows(&d, out.data_ptr<uint8_t>())) throw DataError(file, record, std::string("bad JPEG: ") + d.err.message);
  return out;
}

// RAII for libpng's simplified-API control structure.
struct PngImage {
  png_image image{};
  PngImage() {
    image.version = PNG_IMAGE_VERSION;
  }
  ~PngImage() { png_image_free(&image); }
  PngImage(const PngImage&) = delete;
  PngImage& operator=(const PngImage&) = delete;
};

at::Tensor decode_png(const uint8_t* data, size_t size, const std::string& file, int64_t record) {
  PngImage p;
  if (!png_image_begin_read_from_memory(&p.image, data, size))
    throw DataError(file, record, std::string("bad PNG: ") + p.image.message);
  p.image.format = PNG_FORMAT_RGB;
  at::Tensor out = at::empty({static_cast<int64_t>(p.image.height), static_cast<int64_t>(p.image.width), 3}, at::kByte);
  if (!png_image_finish_read(&p.image, nullptr, out.data_ptr<uint8_t>(), 0, nullptr))
    throw DataError(file, record, std::string("bad PNG: ") + p.image.message);
  return out;
}

void check_rgb(const at::Tensor& image, const char* what) {
  TORCH_CHECK(image.dim() == 3 && image.size(2) == 3 && image.scalar_type() == at::kByte && image.device().is_cpu(),
              what, ": expected a CPU uint8 [H,W,3] image, got ", image.scalar_type(), " ", image.sizes());
  TORCH_CHECK(image.size(0) > 0 && image.size(1) > 0, what, ": empty image");
}

}  // namespace

ImageCodec sniff_codec(const uint8_t* data, size_t size) {
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageCodec::kJpeg;
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return ImageCodec::kPng;
  return ImageCodec::kUnknown;
}

at::Tensor decode_image(const uint8_t* data, size_t size, const std::string& file, int64_t record) {
  switch (sniff_codec(data, size)) {
    case ImageCodec::kJpeg: return decode_jpeg(data, size, file, record);
    case ImageCodec::kPng: return decode_png(data, size, file, record);
    default: throw DataError(file, record, "image bytes are neither JPEG nor PNG (" + std::to_string(size) + " bytes)");
  }
}

std::vector<uint8_t> encode_png(const at::Tensor& image) {
  check_rgb(image, "encode_png");
  at::Tensor img = image.contiguous();
  PngImage p;
  p.image.width = static_cast<png_uint_32>(img.size(1));
  p.image.height = static_cast<png_uint_32>(img.size(0));
  p.image.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  // First call measures, second writes.
  TORCH_CHECK(png_image_write_to_memory(&p.image, nullptr, &size, 0, img.data_ptr<uint8_t>(), 0, nullptr),
              "encode_png: ", p.image.message);
  std::vector<uint8_t> out(size);
  TORCH_CHECK(png_image_write_to_memory(&p.image, out.data(), &size, 0, img.data_ptr<uint8_t>(), 0, nullptr),
              "encode_png: ", p.image.message);
  out.resize(size);
  return out;
}

std::vector<uint8_t> encode_jpeg(const at::Tensor& image, int quality) {
  check_rgb(image, "encode_jpeg");
  TORCH_CHECK(quality >= 1 && quality <= 100, "encode_jpeg: quality must be in 1..100, got ", quality);
  at::Tensor img = image.contiguous();
  JpegEncoder e;
  TORCH_CHECK(jpeg_encode(&e, img.data_ptr<uint8_t>(), static_cast<int>(img.size(1)), static_cast<int>(img.size(0)),
                          quality),
              "encode_jpeg: ", e.err.message);
  return std::vector<uint8_t>(e.buffer, e.buffer + e.size);
}

at::Tensor resize_crop(const at::Tensor& image, int64_t size, const CropPlacement& placement, CropTransform* transform) {
  check_rgb(image, "resize_crop");
  TORCH_CHECK(size > 0, "resize_crop: size must be positive, got ", size);
  TORCH_CHECK(placement.x >= 0 && placement.x <= 1 && placement.y >= 0 && placement.y <= 1,
              "resize_crop: the crop placement must lie in [0, 1], got (", placement.x, ", ", placement.y, ")");
  const int64_t h = image.size(0), w = image.size(1);
  // Shorter side -> size; the longer one rounds (as torchvision's Resize(int) does).
  const double s = static_cast<double>(size) / static_cast<double>(std::min(h, w));
  const int64_t nh = h <= w ? size : std::max<int64_t>(size, std::llround(h * s));
  const int64_t nw = w <= h ? size : std::max<int64_t>(size, std::llround(w * s));
  at::Tensor x = image.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat);  // [1,3,H,W] in 0..255
  if (nh != h || nw != w) {
    // Antialiasing matters when shrinking (1024 -> 512/256): plain bilinear would alias.
    bool shrink = nh < h || nw < w;
    x = shrink ? at::_upsample_bilinear2d_aa(x, {nh, nw}, /*align_corners=*/false)
               : at::upsample_bilinear2d(x, {nh, nw}, /*align_corners=*/false);
  }
  // The centered placement keeps the floor division of the original center crop.
  const int64_t top = placement.y == 0.5 ? (nh - size) / 2 : std::llround(static_cast<double>(nh - size) * placement.y);
  const int64_t left = placement.x == 0.5 ? (nw - size) / 2 : std::llround(static_cast<double>(nw - size) * placement.x);
  x = x.slice(2, top, top + size).slice(3, left, left + size);
  if (placement.flip) x = x.flip({3});
  x = x.squeeze(0).clamp(0, 255).div(127.5).sub(1.0).contiguous();
  if (transform) {
    // Half-pixel centers: a source pixel center x maps to (x + 0.5) * nw/w - 0.5, then the crop.
    transform->scale_x = static_cast<double>(nw) / static_cast<double>(w);
    transform->scale_y = static_cast<double>(nh) / static_cast<double>(h);
    transform->shift_x = 0.5 * transform->scale_x - 0.5 - static_cast<double>(left);
    transform->shift_y = 0.5 * transform->scale_y - 0.5 - static_cast<double>(top);
    transform->flipped = placement.flip;
    if (placement.flip) {  // x' = (size - 1) - x
      transform->scale_x = -transform->scale_x;
      transform->shift_x = static_cast<double>(size - 1) - transform->shift_x;
    }
  }
  return x;
}

at::Tensor resize_center_crop(const at::Tensor& image, int64_t size, CropTransform* transform) {
  return resize_crop(image, size, CropPlacement{}, transform);
}

at::Tensor flip_landmark_order(const at::Tensor& landmarks) {
  TORCH_CHECK(landmarks.dim() >= 2 && landmarks.size(-2) == 5 && landmarks.size(-1) == 2,
              "flip_landmark_order: expected [..., 5, 2] landmarks, got ", landmarks.sizes());
  return landmarks.index_select(-2, at::tensor({1, 0, 2, 4, 3}, at::kLong).to(landmarks.device()));
}

at::Tensor transform_landmarks(const at::Tensor& landmarks, const CropTransform& t) {
  TORCH_CHECK(landmarks.size(-1) == 2, "transform_landmarks: last dimension must be (x, y), got ", landmarks.sizes());
  at::Tensor out = landmarks.to(at::kFloat).clone();
  auto xs = out.select(-1, 0), ys = out.select(-1, 1);
  xs.mul_(t.scale_x).add_(t.shift_x);
  ys.mul_(t.scale_y).add_(t.shift_y);
  return out;
}

}  // namespace lookahead::data
