// SPDX-License-Identifier: LGPL-2.1-or-later
// Pre- and post-processing of frames (spec section 1):
//  - PIL-compatible bicubic resampling (Pillow's Resample.c: Keys cubic a = -0.5, support 2 scaled by the
//    down-scaling factor, coefficients normalised per output pixel and quantised to 22-bit fixed point,
//    horizontal pass then vertical pass, each rounded and clipped to uint8), done with torch ops on the
//    frames' device for any scale (up or down, any sizes);
//    and its float variant for deep (10/16-bit) frames: the same taps with unquantised weights, no
//    rounding or clipping between the passes;
//  - uint8 (or float in [0, 255]) <-> [-1, 1] mapping; edge-replication padding to a multiple and cropping back.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace flashvsr {

class BicubicResize {
 public:
  // Precomputes the fixed-point coefficients for in -> out on the host and uploads them to `device`.
  BicubicResize(int64_t in_width, int64_t in_height, int64_t out_width, int64_t out_height,
                at::Device device);

  // frames: uint8 [n, in_height, in_width, C] on the device given above -> uint8 [n, out_h, out_w, C].
  // When a dimension keeps its size, that pass is skipped exactly as Pillow skips it.
  at::Tensor operator()(const at::Tensor& frames) const;
  // frames: floating [n, in_height, in_width, C] in [0, 255] on the device -> float32 [n, out_h, out_w, C]:
  // the same taps as operator() with the normalised weights unquantised, each pass in float32 without
  // rounding or clipping, clamped to [0, 255] at the end (a skipped pass as above). Integral frames give
  // operator()'s result within its two roundings (not bit-exact when a pass runs).
  at::Tensor resize_float(const at::Tensor& frames) const;

  int64_t in_width() const { return in_w_; }
  int64_t in_height() const { return in_h_; }
  int64_t out_width() const { return out_w_; }
  int64_t out_height() const { return out_h_; }

 private:
  struct Pass {
    bool needed = false;
    at::Tensor index;   // int64 [out, ksize]: source indices (clamped to valid for padded taps)
    at::Tensor weight;  // int32 [out, ksize]: fixed-point weights (0 for padded taps)
    at::Tensor weight_float;  // float32 [out, ksize]: the same weights before quantisation
  };
  int64_t in_w_, in_h_, out_w_, out_h_;
  Pass horizontal_, vertical_;
  void check_frames(const at::Tensor& frames, bool floating) const;  // throws Error(BadInput)
};

// The output size of a scale factor, as the reference computes it: (round(w * s), round(h * s)) with
// round-half-to-even on the exact product (Python's round()).
int64_t scaled_size(int64_t size, double scale);

// uint8 [n, H, W, 3] -> [1, 3, n, H, W] of `dtype` in [-1, 1] (u8 / 255 * 2 - 1 computed in float32).
at::Tensor u8_to_unit(const at::Tensor& frames_NHWC, at::ScalarType dtype);
// floating [n, H, W, 3] in [0, 255] -> [1, 3, n, H, W] of `dtype`: x / 255 * 2 - 1 in float32, the same
// operations as u8_to_unit (integral frames give its result bit for bit).
at::Tensor rgb255_to_unit(const at::Tensor& frames_NHWC, at::ScalarType dtype);
// [1, 3, n, H, W] in [-1, 1] -> uint8 [n, H, W, 3]: round((x + 1) * 127.5) clamped to [0, 255].
at::Tensor unit_to_u8(const at::Tensor& video_NCFHW);
// [1, 3, n, H, W] in [-1, 1] -> float32 [n, H, W, 3]: (x + 1) * 127.5 clamped to [0, 255], not rounded;
// NaN maps to 0. unit_to_u8 is exactly its round (half to even).
at::Tensor unit_to_rgb255(const at::Tensor& video_NCFHW);

// Pads the last two dims (H, W) up to multiples of `multiple` by edge replication (bottom/right).
at::Tensor pad_to_multiple(const at::Tensor& x, int64_t multiple);

inline int64_t round_up(int64_t v, int64_t multiple) { return (v + multiple - 1) / multiple * multiple; }

}  // namespace flashvsr
