// SPDX-License-Identifier: LGPL-2.1-or-later
// One pass of preprocess.h's Pillow-exact bicubic resampling on CUDA: the plain C++ interface of
// bicubic_kernel.cu (no LibTorch: raw device pointers, sizes and the stream to launch on).
//
// in [n, H, W, C] and out (the resampled axis `axis`, 1 = rows or 2 = columns, of length out_len) are
// contiguous; index int64 [out_len, ksize] (source sample of each tap), weight [out_len, ksize]:
//   uint8 frames, int32 weights:  out = clamp((2^21 + sum_k in[.., index[j, k], ..] * weight[j, k]) >> 22, 0, 255)
//   float32 frames and weights:   out = sum_k in[.., index[j, k], ..] * weight[j, k], each product and sum
//                                 rounded to float32 in tap order (no fused multiply-add)
// which is exactly what preprocess.cpp's LibTorch passes compute. The launch is asynchronous.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace flashvsr::cuda {

struct ResamplePassLaunch {
  const void* in = nullptr;
  void* out = nullptr;
  const int64_t* index = nullptr;
  const void* weight = nullptr;
  int64_t n = 0, h = 0, w = 0, channels = 0, out_len = 0, ksize = 0;
  int axis = 2;
  bool floating = false;  // float32 frames and weights; else uint8 frames, int32 weights
};

// Validates the arguments, then launches on `stream`. Returns "" on success, else what was wrong.
std::string launch_resample_pass(const ResamplePassLaunch& args, cudaStream_t stream);

}  // namespace flashvsr::cuda
