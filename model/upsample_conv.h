// SPDX-License-Identifier: LGPL-2.1-or-later
// "Upsample x2 (nearest), then a 3x3 convolution with padding 1" computed on the low-resolution input: the
// sub-pixel (phase) form, used by both decoders (TAEHV stages, the Wan VAE's resample).
//
// Output pixel (2p + a, 2q + b) of conv3x3(up(x), w) reads up(x) rows 2p + a - 1 .. 2p + a + 1, which are x
// rows {p - 1, p} for a = 0 (taps 0 | 1 + 2) and {p, p + 1} for a = 1 (taps 0 + 1 | 2); likewise columns.
// So each of the four phases (a, b) is a 2x2 convolution of x whose taps are w's taps summed over the rows
// and columns that land on the same input pixel: 16 instead of 36 multiply-adds per input pixel and
// channel pair, and the 4x larger upsampled tensor is never written. All four phases run as one
// convolution with 4o output channels and padding 1 (output (h + 1) x (w + 1); phase (a, b) sits at offset
// (a, b)), then one pass interleaves them into the [2h, 2w] output.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace flashvsr {

struct UpsampleConv {
  at::Tensor phases;  // [4o, i, 2, 2]: rows [(2a + b) o, (2a + b + 1) o) hold phase (a, b)'s 2x2 kernel
  at::Tensor bias;    // [4o] (the bias repeated per phase) or undefined
  int64_t out_channels = 0;
  // Folds a 3x3 kernel w [o, i, 3, 3] (and bias [o]) in float32, stored in w's dtype, device and memory format.
  static UpsampleConv fold(const at::Tensor& w, const at::Tensor& bias = {});
  // Which pass interleaves the phases for input of this kind (for the load log): the CUDA kernel, or
  // LibTorch's strided copy and why.
  std::string interleave_path(const at::Tensor& like) const;
};

enum class UpsampleConvEpilogue { None, Relu, CudnnFusedRelu };

// x [n, i, h, w] -> relu?(conv3x3(upsample_nearest_2x(x), w) + bias) [n, o, 2h, 2w], in x's memory format.
// CudnnFusedRelu runs the ReLU in cuDNN's convolution epilogue (CUDA bf16/fp16, see tc_decoder.cpp's probe).
at::Tensor upsample2x_conv3x3(const UpsampleConv& c, const at::Tensor& x,
                              UpsampleConvEpilogue epilogue = UpsampleConvEpilogue::None);

// The interleave alone: y [n, 4o, h + 1, w + 1] (the phase convolution's output) -> [n, o, 2h, 2w] with
// out[:, k, 2p + a, 2q + b] = y[:, (2a + b) o + k, p + a, q + b].
at::Tensor interleave_phases(const at::Tensor& y, int64_t out_channels);

}  // namespace flashvsr
