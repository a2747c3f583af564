// SPDX-License-Identifier: LGPL-2.1-or-later
// Raw frame layouts <-> RGB (uint8 or float), with torch ops on the converter's device (see frame_format.h).
//
// Y'CbCr arithmetic at bit depth d (8, 10 or 16), with Kr, Kb of the matrix and Kg = 1 - Kr - Kb, and
// k = 2^(d - 8) (GStreamer's gst_video_color_range_offsets):
//   limited range: Y = 16 k + 219 k E'y,     Cb/Cr = 128 k + 224 k E'cb/cr
//   full range:    Y = (2^d - 1) E'y,        Cb/Cr = 128 k + (2^d - 1) E'cb/cr
//   E'y = Kr R + Kg G + Kb B,  E'cb = (B - E'y) / (2 (1 - Kb)),  E'cr = (R - E'y) / (2 (1 - Kr))
// with R, G, B in [0, 1]; computed in float32, codes rounded (half to even) and clamped to [0, 2^d - 1].
// At d = 8 this is 16 + 219 E'y, 128 + 224 E'c (limited) and 255 E'y, 128 + 255 E'c (full).
#include "frame_format.h"

#include "error.h"

#include <c10/core/InferenceMode.h>

#include <cmath>
#include <string>

namespace flashvsr {

namespace {

bool is_subsampled(PixelFormat f) { return is_yuv(f) && f != PixelFormat::Y444_16LE; }
bool is_semi_planar(PixelFormat f) { return f == PixelFormat::NV12 || f == PixelFormat::P010_10LE; }
// The bit position of the code in a 16-bit word: P010 keeps its 10 bits at the top.
int word_shift(PixelFormat f) { return f == PixelFormat::P010_10LE ? 6 : 0; }

struct Coefficients {
  double kr, kb;
};

Coefficients coefficients(YuvMatrix m) {
  switch (m) {
    case YuvMatrix::BT601: return {0.299, 0.114};
    case YuvMatrix::BT709: return {0.2126, 0.0722};
    case YuvMatrix::BT2020: return {0.2627, 0.0593};
  }
  throw Error(Error::Kind::BadSettings, "unknown Y'CbCr matrix");
}

// Offsets and scales of the code values (luma, chroma) at a bit depth, and the largest code.
struct Range {
  double y_offset, y_scale, c_offset, c_scale, max;
};

Range range_of(bool full, int depth) {
  const double k = std::ldexp(1.0, depth - 8), top = std::ldexp(1.0, depth) - 1.0;
  return full ? Range{0.0, top, 128.0 * k, top, top} : Range{16.0 * k, 219.0 * k, 128.0 * k, 224.0 * k, top};
}

at::Tensor to_u8(const at::Tensor& v) { return v.round().clamp(0.0, 255.0).to(at::kByte); }

// bytes: uint8 [n, 2k], 16-bit little-endian words -> int32 [n, k]: each word >> shift, its low `depth`
// bits (bits above the code are ignored; P010's low 6 bits too).
at::Tensor read_words(const at::Tensor& bytes, int shift, int depth) {
  const at::Tensor b = bytes.reshape({bytes.size(0), -1, 2}).to(at::kInt);
  const at::Tensor word = b.select(2, 0) + b.select(2, 1) * 256;
  return at::bitwise_and(at::bitwise_right_shift(word, shift), (1 << depth) - 1);
}

// codes: integral [n, k] in [0, 2^16 >> shift) -> uint8 [n, 2k], each code << shift as a 16-bit
// little-endian word (P010's low 6 bits are 0).
at::Tensor write_words(const at::Tensor& codes, int shift) {
  const at::Tensor word = at::bitwise_left_shift(codes.to(at::kInt), shift);
  const at::Tensor lo = at::bitwise_and(word, 255), hi = at::bitwise_right_shift(word, 8);
  return at::stack({lo, hi}, 2).to(at::kByte).reshape({codes.size(0), -1});
}

// x: [..., size, ...] along `dim` -> [..., size + 2, ...], the first and last sample repeated once (edge
// clamping of the neighbours at -1 and size).
at::Tensor clamp_pad(const at::Tensor& x, int64_t dim) {
  const int64_t size = x.size(dim);
  return at::cat({x.narrow(dim, 0, 1), x, x.narrow(dim, size - 1, 1)}, dim);
}

// c: [..., m, ...] chroma samples along `dim` -> [..., size, ...] on the luma grid, size in {2m - 1, 2m}.
at::Tensor upsample_axis(const at::Tensor& c, int64_t dim, int64_t size, ChromaSiting siting) {
  const int64_t m = c.size(dim);
  const at::Tensor p = clamp_pad(c, dim);  // p[j + 1] = c[j]
  const at::Tensor prev = p.narrow(dim, 0, m), next = p.narrow(dim, 2, m);
  at::Tensor even, odd;  // the luma samples 2j and 2j + 1
  if (siting == ChromaSiting::Centred) {
    even = 0.75 * c + 0.25 * prev;
    odd = 0.75 * c + 0.25 * next;
  } else {
    even = c;
    odd = 0.5 * (c + next);
  }
  return at::stack({even, odd}, dim + 1).flatten(dim, dim + 1).narrow(dim, 0, size);
}

// x: [..., size, ...] luma-grid samples along `dim` -> [..., ceil(size / 2), ...] chroma samples. Only
// half-size tensors are built (no padded copy of the full-resolution plane).
at::Tensor downsample_axis(const at::Tensor& x, int64_t dim, ChromaSiting siting) {
  const int64_t size = x.size(dim), m = (size + 1) / 2;
  const at::Tensor centre = x.slice(dim, 0, size, 2);  // x[2j], m samples
  const at::Tensor odd = x.slice(dim, 1, size, 2);     // x[2j + 1], size / 2 samples
  // x[2j + 1], clamped: x[2j] itself past an odd size's end.
  const at::Tensor right = size % 2 == 0 ? odd : at::cat({odd, x.narrow(dim, size - 1, 1)}, dim);
  if (siting == ChromaSiting::Centred) return 0.5 * (centre + right);
  // x[2j - 1], clamped: x[0] for j = 0.
  const at::Tensor left = at::cat({x.narrow(dim, 0, 1), odd.narrow(dim, 0, m - 1)}, dim);
  return 0.25 * (left + right) + 0.5 * centre;
}

// Throws BadInput unless t is a floating-point tensor of at least 2 dimensions whose last two are
// [rows, cols] (any sizes >= 1 where rows/cols are 0).
void check_chroma_tensor(const at::Tensor& t, const char* what, int64_t rows, int64_t cols) {
  const auto fits = [&](int64_t dim, int64_t want) { return want > 0 ? t.size(dim) == want : t.size(dim) >= 1; };
  if (t.defined() && t.dim() >= 2 && at::isFloatingType(t.scalar_type()) && fits(-2, rows) && fits(-1, cols)) return;
  const auto size = [](int64_t want) { return want > 0 ? std::to_string(want) : std::string(">= 1"); };
  throw Error(Error::Kind::BadInput,
              std::string(what) + " has shape " + (t.defined() ? shape_string(t.sizes().vec()) : "(none)") +
                  (t.defined() ? " and dtype " + std::string(c10::toString(t.scalar_type())) : "") +
                  ", expected floating point [..., " + size(rows) + ", " + size(cols) + "]");
}

}  // namespace

const char* pixel_format_name(PixelFormat f) {
  switch (f) {
    case PixelFormat::RGB: return "RGB";
    case PixelFormat::RGBx: return "RGBx";
    case PixelFormat::BGRx: return "BGRx";
    case PixelFormat::RGBA: return "RGBA";
    case PixelFormat::BGRA: return "BGRA";
    case PixelFormat::I420: return "I420";
    case PixelFormat::NV12: return "NV12";
    case PixelFormat::I420_10LE: return "I420_10LE";
    case PixelFormat::P010_10LE: return "P010_10LE";
    case PixelFormat::Y444_16LE: return "Y444_16LE";
  }
  return "?";
}

int bit_depth(PixelFormat f) {
  switch (f) {
    case PixelFormat::I420_10LE:
    case PixelFormat::P010_10LE: return 10;
    case PixelFormat::Y444_16LE: return 16;
    default: return 8;
  }
}

bool is_yuv(PixelFormat f) {
  switch (f) {
    case PixelFormat::I420:
    case PixelFormat::NV12:
    case PixelFormat::I420_10LE:
    case PixelFormat::P010_10LE:
    case PixelFormat::Y444_16LE: return true;
    default: return false;
  }
}

at::Tensor upsample_chroma(const at::Tensor& chroma, int64_t height, int64_t width, ChromaSite site) {
  if (height < 1 || width < 1)
    throw Error(Error::Kind::BadSettings, "chroma upsampling to " + std::to_string(width) + "x" +
                                              std::to_string(height) + ": expected a size of at least 1x1");
  check_chroma_tensor(chroma, "chroma to upsample", (height + 1) / 2, (width + 1) / 2);
  const int64_t rows = chroma.dim() - 2, cols = chroma.dim() - 1;
  return upsample_axis(upsample_axis(chroma, rows, height, site.vertical), cols, width, site.horizontal);
}

at::Tensor downsample_chroma(const at::Tensor& plane, ChromaSite site) {
  check_chroma_tensor(plane, "plane to downsample", 0, 0);
  const int64_t rows = plane.dim() - 2, cols = plane.dim() - 1;
  return downsample_axis(downsample_axis(plane, cols, site.horizontal), rows, site.vertical);
}

PlaneLayout plane_layout(PixelFormat format, int64_t width, int64_t height) {
  if (width < 1 || height < 1 || width > (int64_t{1} << 20) || height > (int64_t{1} << 20))
    throw Error(Error::Kind::BadSettings, std::string(pixel_format_name(format)) + " frame size " + std::to_string(width) +
                                              "x" + std::to_string(height) + ": expected 1..1048576 per side");
  PlaneLayout l;
  const int64_t cw = (width + 1) / 2, ch = (height + 1) / 2;
  switch (format) {
    case PixelFormat::RGB:
      l.planes = 1;
      l.row_bytes = {width * 3, 0, 0};
      l.rows = {height, 0, 0};
      break;
    case PixelFormat::RGBx:
    case PixelFormat::BGRx:
    case PixelFormat::RGBA:
    case PixelFormat::BGRA:
      l.planes = 1;
      l.row_bytes = {width * 4, 0, 0};
      l.rows = {height, 0, 0};
      break;
    case PixelFormat::I420:
      l.planes = 3;
      l.row_bytes = {width, cw, cw};
      l.rows = {height, ch, ch};
      break;
    case PixelFormat::NV12:
      l.planes = 2;
      l.row_bytes = {width, cw * 2, 0};
      l.rows = {height, ch, 0};
      break;
    case PixelFormat::I420_10LE:
      l.planes = 3;
      l.row_bytes = {width * 2, cw * 2, cw * 2};
      l.rows = {height, ch, ch};
      break;
    case PixelFormat::P010_10LE:
      l.planes = 2;
      l.row_bytes = {width * 2, cw * 4, 0};
      l.rows = {height, ch, 0};
      break;
    case PixelFormat::Y444_16LE:
      l.planes = 3;
      l.row_bytes = {width * 2, width * 2, width * 2};
      l.rows = {height, height, height};
      break;
    default:
      throw Error(Error::Kind::BadSettings, "unknown pixel format");
  }
  int64_t offset = 0;
  for (int p = 0; p < l.planes; ++p) {
    l.offset[p] = offset;
    offset += l.row_bytes[p] * l.rows[p];
  }
  l.size = offset;
  return l;
}

FrameConverter::FrameConverter(PixelFormat format, int64_t width, int64_t height, YuvSpec yuv, at::Device device)
    : format_(format), width_(width), height_(height), yuv_(yuv), device_(device),
      layout_(plane_layout(format, width, height)) {
  if (is_yuv(format)) coefficients(yuv.matrix);  // validates the matrix
}

at::Tensor FrameConverter::to_rgb(const at::Tensor& packed) const {
  c10::InferenceMode inference;
  check_packed(packed);
  if (!is_yuv(format_)) return rgb_of(packed);
  return to_u8(decode_yuv(packed));
}

at::Tensor FrameConverter::to_rgb_float(const at::Tensor& packed) const {
  c10::InferenceMode inference;
  check_packed(packed);
  if (!is_yuv(format_)) return rgb_of(packed).to(at::kFloat);
  return decode_yuv(packed).clamp(0.0, 255.0);
}

at::Tensor FrameConverter::from_rgb(const at::Tensor& rgb) const {
  c10::InferenceMode inference;
  check_rgb(rgb, /*floating=*/false);
  const at::Tensor x = rgb.to(device_).contiguous();
  if (!is_yuv(format_)) return pack_rgb(x);
  return encode_yuv(x.to(at::kFloat));
}

at::Tensor FrameConverter::from_rgb_float(const at::Tensor& rgb) const {
  c10::InferenceMode inference;
  check_rgb(rgb, /*floating=*/true);
  const at::Tensor x = rgb.to(device_).to(at::kFloat).clamp(0.0, 255.0).contiguous();
  if (!is_yuv(format_)) return pack_rgb(to_u8(x));
  return encode_yuv(x);
}

void FrameConverter::check_packed(const at::Tensor& packed) const {
  if (!packed.defined() || packed.dim() != 2 || packed.size(1) != layout_.size || packed.scalar_type() != at::kByte)
    throw Error(Error::Kind::BadInput,
                std::string(pixel_format_name(format_)) + " " + std::to_string(width_) + "x" + std::to_string(height_) +
                    " frames have shape " + (packed.defined() ? shape_string(packed.sizes().vec()) : "(none)") +
                    (packed.defined() ? " and dtype " + std::string(c10::toString(packed.scalar_type())) : "") +
                    ", expected uint8 [n, " + std::to_string(layout_.size) + "]");
}

void FrameConverter::check_rgb(const at::Tensor& rgb, bool floating) const {
  const bool dtype_ok = rgb.defined() && (floating ? at::isFloatingType(rgb.scalar_type()) : rgb.scalar_type() == at::kByte);
  if (dtype_ok && rgb.dim() == 4 && rgb.size(1) == height_ && rgb.size(2) == width_ && rgb.size(3) == 3) return;
  throw Error(Error::Kind::BadInput,
              std::string("RGB frames for ") + pixel_format_name(format_) + " have shape " +
                  (rgb.defined() ? shape_string(rgb.sizes().vec()) : "(none)") +
                  (rgb.defined() ? " and dtype " + std::string(c10::toString(rgb.scalar_type())) : "") +
                  ", expected " + (floating ? "floating point" : "uint8") + " [n, " + std::to_string(height_) + ", " +
                  std::to_string(width_) + ", 3]");
}

at::Tensor FrameConverter::rgb_of(const at::Tensor& packed) const {
  const int64_t n = packed.size(0), w = width_, h = height_;
  // Asynchronous from pinned memory (the element packs frames into pinned buffers on CUDA).
  const at::Tensor x = packed.to(device_, /*non_blocking=*/true).contiguous();
  switch (format_) {
    case PixelFormat::RGB:
      return x.view({n, h, w, 3});
    case PixelFormat::RGBx:
    case PixelFormat::RGBA:
      return x.view({n, h, w, 4}).narrow(3, 0, 3).contiguous();
    case PixelFormat::BGRx:
    case PixelFormat::BGRA:
      return x.view({n, h, w, 4}).narrow(3, 0, 3).flip({3}).contiguous();
    default:
      throw Error(Error::Kind::Internal, std::string(pixel_format_name(format_)) + " is not an RGB format");
  }
}

at::Tensor FrameConverter::pack_rgb(const at::Tensor& x) const {
  const int64_t n = x.size(0), w = width_, h = height_;
  const auto opaque = [&]() { return at::full({n, h, w, 1}, 255, x.options()); };
  switch (format_) {
    case PixelFormat::RGB:
      return x.view({n, layout_.size});
    case PixelFormat::RGBx:
    case PixelFormat::RGBA:
      return at::cat({x, opaque()}, 3).view({n, layout_.size});
    case PixelFormat::BGRx:
    case PixelFormat::BGRA:
      return at::cat({x.flip({3}), opaque()}, 3).view({n, layout_.size});
    default:
      throw Error(Error::Kind::Internal, std::string(pixel_format_name(format_)) + " is not an RGB format");
  }
}

at::Tensor FrameConverter::decode_yuv(const at::Tensor& packed) const {
  const int64_t n = packed.size(0), w = width_, h = height_;
  // Asynchronous from pinned memory (the element packs frames into pinned buffers on CUDA).
  const at::Tensor x = packed.to(device_, /*non_blocking=*/true).contiguous();
  const int depth = bit_depth(format_);
  // The code values of plane p, float [n, samples of the plane].
  const auto codes = [&](int p) {
    const at::Tensor bytes = x.narrow(1, layout_.offset[p], layout_.row_bytes[p] * layout_.rows[p]);
    return (depth == 8 ? bytes : read_words(bytes, word_shift(format_), depth)).to(at::kFloat);
  };
  const bool sub = is_subsampled(format_);
  const int64_t cw = sub ? (w + 1) / 2 : w, ch = sub ? (h + 1) / 2 : h;
  const at::Tensor y = codes(0).view({n, h, w});
  at::Tensor u, v;  // [n, ch, cw]
  if (is_semi_planar(format_)) {
    const at::Tensor uv = codes(1).view({n, ch, cw, 2});
    u = uv.select(3, 0);
    v = uv.select(3, 1);
  } else {
    u = codes(1).view({n, ch, cw});
    v = codes(2).view({n, ch, cw});
  }
  // Chroma on the luma grid, interpolated at its siting where subsampled: [n, 2, ch, cw] -> [n, 2, h, w].
  const at::Tensor uv = at::stack({u, v}, 1);
  const at::Tensor chroma = sub ? upsample_chroma(uv, h, w, yuv_.site) : uv;
  const Coefficients k = coefficients(yuv_.matrix);
  const Range r = range_of(yuv_.full_range, depth);
  const double kg = 1.0 - k.kr - k.kb;
  const at::Tensor ey = (y - r.y_offset) / r.y_scale;
  const at::Tensor ecb = (chroma.select(1, 0) - r.c_offset) / r.c_scale;
  const at::Tensor ecr = (chroma.select(1, 1) - r.c_offset) / r.c_scale;
  const at::Tensor red = ey + (2.0 * (1.0 - k.kr)) * ecr;
  const at::Tensor blue = ey + (2.0 * (1.0 - k.kb)) * ecb;
  const at::Tensor green = ey - (2.0 * k.kb * (1.0 - k.kb) / kg) * ecb - (2.0 * k.kr * (1.0 - k.kr) / kg) * ecr;
  return at::stack({red, green, blue}, 3) * 255.0;  // [n, h, w, 3], not clamped
}

at::Tensor FrameConverter::encode_yuv(const at::Tensor& x) const {
  const int64_t n = x.size(0);
  const int depth = bit_depth(format_);
  const Coefficients k = coefficients(yuv_.matrix);
  const Range r = range_of(yuv_.full_range, depth);
  const double kg = 1.0 - k.kr - k.kb;
  const at::Tensor f = x / 255.0;  // [n, h, w, 3]
  const at::Tensor red = f.select(3, 0), green = f.select(3, 1), blue = f.select(3, 2);
  const at::Tensor ey = k.kr * red + kg * green + k.kb * blue;
  // E'cb, E'cr at full resolution [n, 2, h, w], then filtered down to the chroma grid at the siting.
  const at::Tensor chroma = at::stack({(blue - ey) / (2.0 * (1.0 - k.kb)), (red - ey) / (2.0 * (1.0 - k.kr))}, 1);
  const at::Tensor pooled = is_subsampled(format_) ? downsample_chroma(chroma, yuv_.site) : chroma;  // [n, 2, ch, cw]
  // Codes [n, ...] -> the plane's bytes [n, ...].
  const auto store = [&](const at::Tensor& codes) {
    const at::Tensor c = codes.round().clamp(0.0, r.max).reshape({n, -1});
    return depth == 8 ? c.to(at::kByte) : write_words(c, word_shift(format_));
  };
  const at::Tensor y = store(ey * r.y_scale + r.y_offset);
  const at::Tensor c = pooled * r.c_scale + r.c_offset;
  if (is_semi_planar(format_)) return at::cat({y, store(c.permute({0, 2, 3, 1}))}, 1);  // U V interleaved
  return at::cat({y, store(c.select(1, 0)), store(c.select(1, 1))}, 1);
}

}  // namespace flashvsr
