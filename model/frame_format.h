// SPDX-License-Identifier: LGPL-2.1-or-later
// Raw video frame layouts <-> RGB uint8 on the engine's device, so that colour conversion and chroma
// (re)sampling run where the model runs and only the compact frame crosses the bus.
// A "packed" frame is the frame's planes back to back with no row padding (tight strides):
//   RGB: w*h*3; RGBx/BGRx/RGBA/BGRA: w*h*4; I420: Y w*h, U and V cw*ch each; NV12: Y w*h, UV cw*ch*2,
//   with cw = ceil(w/2), ch = ceil(h/2).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <string>

namespace flashvsr {

enum class PixelFormat { RGB, RGBx, BGRx, RGBA, BGRA, I420, NV12 };

// Y'CbCr matrix and range of I420/NV12 frames (ignored for RGB formats).
enum class YuvMatrix { BT601, BT709, BT2020 };
struct YuvSpec {
  YuvMatrix matrix = YuvMatrix::BT709;
  bool full_range = false;
};

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
  // Chroma is upsampled by replication; alpha/padding bytes are ignored.
  at::Tensor to_rgb(const at::Tensor& packed) const;
  // rgb: uint8 [n, height, width, 3] (the converter's device) -> packed uint8 [n, layout().size] on the
  // device. Chroma is the 2x2 box average (edge pixels averaged over what exists); alpha/x bytes are 255.
  at::Tensor from_rgb(const at::Tensor& rgb) const;

 private:
  PixelFormat format_;
  int64_t width_, height_;
  YuvSpec yuv_;
  at::Device device_;
  PlaneLayout layout_;
};

}  // namespace flashvsr
