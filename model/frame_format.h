// SPDX-License-Identifier: LGPL-2.1-or-later
// Raw video frame layouts <-> RGB (uint8, or float in [0, 255] scale) on the engine's device, so that
// colour conversion and chroma (re)sampling run where the model runs and only the compact frame crosses
// the bus.
// A "packed" frame is the frame's planes back to back with no row padding (tight strides), in bytes:
//   RGB: w*h*3; RGBx/BGRx/RGBA/BGRA: w*h*4; I420: Y w*h, U and V cw*ch each; NV12: Y w*h, UV cw*ch*2;
//   I420_10LE: Y w*h*2, U and V cw*ch*2 each (16-bit little-endian words, the code in bits 0-9);
//   P010_10LE: Y w*h*2, UV cw*ch*4 (interleaved 16-bit little-endian words, the code in bits 6-15);
//   Y444_16LE: Y, U and V w*h*2 each (16-bit little-endian codes, no subsampling);
//   with cw = ceil(w/2), ch = ceil(h/2).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <string>

namespace flashvsr {

enum class PixelFormat { RGB, RGBx, BGRx, RGBA, BGRA, I420, NV12, I420_10LE, P010_10LE, Y444_16LE };

// GStreamer's name of the format ("I420_10LE").
const char* pixel_format_name(PixelFormat format);
// Bits per Y'CbCr or RGB code value: 8, 10 (I420_10LE, P010_10LE) or 16 (Y444_16LE).
int bit_depth(PixelFormat format);
// Whether frames of the format are Y'CbCr (I420, NV12 and the 10/16-bit formats).
bool is_yuv(PixelFormat format);

// Y'CbCr matrix and range of the Y'CbCr formats (ignored for RGB formats).
enum class YuvMatrix { BT601, BT709, BT2020 };

// Where the subsampled chroma samples of I420/NV12 sit on the luma grid, along one axis: chroma sample j
// at luma position 2j (Cosited, with the first luma sample of its pair) or 2j + 0.5 (Centred, between the
// two luma samples of its pair).
enum class ChromaSiting { Centred, Cosited };
struct ChromaSite {
  ChromaSiting horizontal = ChromaSiting::Centred;
  ChromaSiting vertical = ChromaSiting::Centred;
};
// The sitings GStreamer names: "jpeg" (and "none"), "mpeg2" (H.264/HEVC/MPEG-2 4:2:0), "cosited".
inline constexpr ChromaSite kChromaSiteJpeg{ChromaSiting::Centred, ChromaSiting::Centred};
inline constexpr ChromaSite kChromaSiteMpeg2{ChromaSiting::Cosited, ChromaSiting::Centred};
inline constexpr ChromaSite kChromaSiteCosited{ChromaSiting::Cosited, ChromaSiting::Cosited};

struct YuvSpec {
  YuvMatrix matrix = YuvMatrix::BT709;
  bool full_range = false;
  ChromaSite site = kChromaSiteJpeg;
};

// Chroma resampling between the chroma grid and the luma grid of a frame, per axis after `site`, in the
// tensor's dtype and on its device (floating point). Along each axis, with c the chroma samples and x the
// luma-grid samples, indices clamped to the frame (an odd size's last chroma sample covers one luma sample):
//   upsampling, Centred: x[2j] = 0.75 c[j] + 0.25 c[j-1], x[2j+1] = 0.75 c[j] + 0.25 c[j+1]
//               Cosited: x[2j] = c[j],                    x[2j+1] = (c[j] + c[j+1]) / 2
//   downsampling, Centred: c[j] = (x[2j] + x[2j+1]) / 2 (x[2j] alone at an odd size's end)
//                 Cosited: c[j] = (x[2j-1] + 2 x[2j] + x[2j+1]) / 4
// chroma: float [..., ceil(height/2), ceil(width/2)] -> [..., height, width].
at::Tensor upsample_chroma(const at::Tensor& chroma, int64_t height, int64_t width, ChromaSite site);
// plane: float [..., height, width] -> [..., ceil(height/2), ceil(width/2)].
at::Tensor downsample_chroma(const at::Tensor& plane, ChromaSite site);

struct PlaneLayout {
  int planes = 1;
  std::array<int64_t, 3> offset{};     // byte offset of each plane in the packed frame
  std::array<int64_t, 3> row_bytes{};  // tight stride of each plane
  std::array<int64_t, 3> rows{};       // rows of each plane
  int64_t size = 0;                    // packed frame size in bytes
};

PlaneLayout plane_layout(PixelFormat format, int64_t width, int64_t height);

class FrameConverter {
 public:
  FrameConverter(PixelFormat format, int64_t width, int64_t height, YuvSpec yuv, at::Device device);

  const PlaneLayout& layout() const { return layout_; }
  PixelFormat format() const { return format_; }

  // packed: uint8 [n, layout().size] (any device) -> RGB uint8 [n, height, width, 3] on the device.
  // Chroma is interpolated to the luma grid at the spec's siting (upsample_chroma); alpha/padding bytes
  // are ignored. Equals to_rgb_float rounded (half to even): for 10/16-bit formats this quantises to 8 bits.
  at::Tensor to_rgb(const at::Tensor& packed) const;
  // packed: uint8 [n, layout().size] (any device) -> RGB float32 [n, height, width, 3] on the device, in
  // [0, 255] scale (clamped, not rounded): the full precision of 10/16-bit frames. For the 8-bit RGB
  // formats the values are the bytes.
  at::Tensor to_rgb_float(const at::Tensor& packed) const;
  // rgb: uint8 [n, height, width, 3] (the converter's device) -> packed uint8 [n, layout().size] on the
  // device. Chroma is filtered at the spec's siting (downsample_chroma: the 2x2 box for Centred both
  // ways); alpha/x bytes are 255 (opaque). Equals from_rgb_float of the same values.
  at::Tensor from_rgb(const at::Tensor& rgb) const;
  // rgb: floating point [n, height, width, 3] in [0, 255] scale (values outside clamp) -> packed uint8
  // [n, layout().size] on the device; each code is rounded (half to even) at the format's bit depth.
  at::Tensor from_rgb_float(const at::Tensor& rgb) const;

 private:
  void check_packed(const at::Tensor& packed) const;             // throws Error(BadInput)
  void check_rgb(const at::Tensor& rgb, bool floating) const;    // throws Error(BadInput)
  at::Tensor rgb_of(const at::Tensor& packed) const;             // RGB family: uint8 [n, h, w, 3]
  at::Tensor pack_rgb(const at::Tensor& rgb_u8) const;           // RGB family: uint8 [n, size]
  at::Tensor decode_yuv(const at::Tensor& packed) const;         // float [n, h, w, 3], 0..255, not clamped
  at::Tensor encode_yuv(const at::Tensor& rgb_float) const;      // float [n, h, w, 3] 0..255 -> uint8 [n, size]

  PixelFormat format_;
  int64_t width_, height_;
  YuvSpec yuv_;
  at::Device device_;
  PlaneLayout layout_;
};

}  // namespace flashvsr
