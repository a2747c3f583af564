// SPDX-License-Identifier: LGPL-2.1-or-later
// Raw frame layouts <-> RGB uint8, with torch ops on the converter's device (see frame_format.h).
//
// Y'CbCr arithmetic (8 bit), with Kr, Kb of the matrix and Kg = 1 - Kr - Kb:
//   limited range: Y = 16 + 219 E'y,  Cb/Cr = 128 + 224 E'cb/cr
//   full range:    Y =      255 E'y,  Cb/Cr = 128 + 255 E'cb/cr
//   E'y = Kr R + Kg G + Kb B,  E'cb = (B - E'y) / (2 (1 - Kb)),  E'cr = (R - E'y) / (2 (1 - Kr))
// with R, G, B in [0, 1]; computed in float32 and rounded (half to even) and clamped to [0, 255].
#include "frame_format.h"

#include "error.h"

#include <c10/core/InferenceMode.h>

#include <string>

namespace flashvsr {

namespace {

const char* format_name(PixelFormat f) {
  switch (f) {
    case PixelFormat::RGB: return "RGB";
    case PixelFormat::RGBx: return "RGBx";
    case PixelFormat::BGRx: return "BGRx";
    case PixelFormat::RGBA: return "RGBA";
    case PixelFormat::BGRA: return "BGRA";
    case PixelFormat::I420: return "I420";
    case PixelFormat::NV12: return "NV12";
  }
  return "?";
}

bool is_yuv(PixelFormat f) { return f == PixelFormat::I420 || f == PixelFormat::NV12; }

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

// Offsets and scales of the 8-bit code values (luma, chroma).
struct Range {
  double y_offset, y_scale, c_offset, c_scale;
};

Range range_of(bool full) { return full ? Range{0.0, 255.0, 128.0, 255.0} : Range{16.0, 219.0, 128.0, 224.0}; }

at::Tensor to_u8(const at::Tensor& v) { return v.round().clamp(0.0, 255.0).to(at::kByte); }

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
    throw Error(Error::Kind::BadSettings, std::string(format_name(format)) + " frame size " + std::to_string(width) +
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
  if (!packed.defined() || packed.dim() != 2 || packed.size(1) != layout_.size || packed.scalar_type() != at::kByte)
    throw Error(Error::Kind::BadInput,
                std::string(format_name(format_)) + " " + std::to_string(width_) + "x" + std::to_string(height_) +
                    " frames have shape " + (packed.defined() ? shape_string(packed.sizes().vec()) : "(none)") +
                    (packed.defined() ? " and dtype " + std::string(c10::toString(packed.scalar_type())) : "") +
                    ", expected uint8 [n, " + std::to_string(layout_.size) + "]");
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
    case PixelFormat::I420:
    case PixelFormat::NV12:
      break;
  }

  const int64_t cw = (w + 1) / 2, ch = (h + 1) / 2;
  const auto plane = [&](int p) { return x.narrow(1, layout_.offset[p], layout_.row_bytes[p] * layout_.rows[p]); };
  const at::Tensor y = plane(0).view({n, h, w});
  at::Tensor u, v;  // [n, ch, cw]
  if (format_ == PixelFormat::I420) {
    u = plane(1).view({n, ch, cw});
    v = plane(2).view({n, ch, cw});
  } else {
    const at::Tensor uv = plane(1).view({n, ch, cw, 2});
    u = uv.select(3, 0);
    v = uv.select(3, 1);
  }
  // Chroma interpolated at its siting: [n, 2, ch, cw] -> [n, 2, h, w].
  const at::Tensor chroma = upsample_chroma(at::stack({u, v}, 1).to(at::kFloat), h, w, yuv_.site);
  const Coefficients k = coefficients(yuv_.matrix);
  const Range r = range_of(yuv_.full_range);
  const double kg = 1.0 - k.kr - k.kb;
  const at::Tensor ey = (y.to(at::kFloat) - r.y_offset) / r.y_scale;
  const at::Tensor ecb = (chroma.select(1, 0) - r.c_offset) / r.c_scale;
  const at::Tensor ecr = (chroma.select(1, 1) - r.c_offset) / r.c_scale;
  const at::Tensor red = ey + (2.0 * (1.0 - k.kr)) * ecr;
  const at::Tensor blue = ey + (2.0 * (1.0 - k.kb)) * ecb;
  const at::Tensor green = ey - (2.0 * k.kb * (1.0 - k.kb) / kg) * ecb - (2.0 * k.kr * (1.0 - k.kr) / kg) * ecr;
  return to_u8(at::stack({red, green, blue}, 3) * 255.0);
}

at::Tensor FrameConverter::from_rgb(const at::Tensor& rgb) const {
  c10::InferenceMode inference;
  if (!rgb.defined() || rgb.dim() != 4 || rgb.size(1) != height_ || rgb.size(2) != width_ || rgb.size(3) != 3 ||
      rgb.scalar_type() != at::kByte)
    throw Error(Error::Kind::BadInput,
                std::string("RGB frames for ") + format_name(format_) + " have shape " +
                    (rgb.defined() ? shape_string(rgb.sizes().vec()) : "(none)") +
                    (rgb.defined() ? " and dtype " + std::string(c10::toString(rgb.scalar_type())) : "") +
                    ", expected uint8 [n, " + std::to_string(height_) + ", " + std::to_string(width_) + ", 3]");
  const int64_t n = rgb.size(0), w = width_, h = height_;
  const at::Tensor x = rgb.to(device_).contiguous();
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
    case PixelFormat::I420:
    case PixelFormat::NV12:
      break;
  }

  const Coefficients k = coefficients(yuv_.matrix);
  const Range r = range_of(yuv_.full_range);
  const double kg = 1.0 - k.kr - k.kb;
  const at::Tensor f = x.to(at::kFloat) / 255.0;  // [n, h, w, 3]
  const at::Tensor red = f.select(3, 0), green = f.select(3, 1), blue = f.select(3, 2);
  const at::Tensor ey = k.kr * red + kg * green + k.kb * blue;
  // E'cb, E'cr at full resolution [n, 2, h, w], then filtered down to the chroma grid at the siting.
  const at::Tensor chroma = at::stack({(blue - ey) / (2.0 * (1.0 - k.kb)), (red - ey) / (2.0 * (1.0 - k.kr))}, 1);
  const at::Tensor pooled = downsample_chroma(chroma, yuv_.site);  // [n, 2, ch, cw]
  const at::Tensor y = to_u8(ey * r.y_scale + r.y_offset).view({n, layout_.row_bytes[0] * layout_.rows[0]});
  const at::Tensor c = to_u8(pooled * r.c_scale + r.c_offset);
  if (format_ == PixelFormat::I420) return at::cat({y, c.select(1, 0).reshape({n, -1}), c.select(1, 1).reshape({n, -1})}, 1);
  return at::cat({y, c.permute({0, 2, 3, 1}).reshape({n, -1})}, 1);  // NV12: U V interleaved
}

}  // namespace flashvsr
