// SPDX-License-Identifier: LGPL-2.1-or-later
// The DiT's residual update fused with the LayerNorm after it, on CUDA: the plain C++ interface of
// residual_norm_kernel.cu (no LibTorch: raw device pointers, sizes and the stream to launch on).
//
// Per row m of x [rows, d] (bf16/fp16, contiguous):
//   x[m]   <- round(x[m] + gate * y[m])          when y is given (gate [d], or 1 when null), in place
//   out[m]  = round((v - mean) * rsqrt(var + eps) * mul + add)   v = float(x[m]) after the update,
// mean and (biased) variance of the row in float32; mul, add [d]. out may be null (update only). The
// same values as at::addcmul and then at::layer_norm with an affine map, up to float32 rounding.
// Requirements: d a multiple of 8 and at most 8192, every pointer 16-byte aligned. The launch is
// asynchronous (CUDA-graph capturable).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace flashvsr::cuda {

enum class NormDType { BFloat16, Float16 };

struct ResidualNormLaunch {
  void* x = nullptr;           // [rows, d], updated in place when y is given
  const void* y = nullptr;     // [rows, d] or null
  const void* gate = nullptr;  // [d] or null (gate 1)
  const void* mul = nullptr;   // [d]
  const void* add = nullptr;   // [d]
  void* out = nullptr;         // [rows, d] or null
  int64_t rows = 0, d = 0;
  float eps = 1e-6f;
  NormDType dtype = NormDType::BFloat16;
};

// Validates the arguments, then launches on `stream`. Returns "" on success, else what was wrong.
std::string launch_residual_norm(const ResidualNormLaunch& args, cudaStream_t stream);

}  // namespace flashvsr::cuda
