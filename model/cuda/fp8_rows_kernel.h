// SPDX-License-Identifier: LGPL-2.1-or-later
// Row-wise e4m3 quantisation of activations on CUDA: the plain C++ interface of fp8_rows_kernel.cu (no
// LibTorch: raw device pointers, sizes and the stream to launch on).
//
// Per row m of x [rows, k] (bf16/fp16, row stride x_row_stride elements), v = float(x[m, :]) and then
// the prologue: GELU_tanh(v), or the LayerNorm (mean and variance of the row in float32, eps given)
// followed by an affine map with per-channel vectors: (v - mean) * rsqrt(var + eps) * mul + add.
//   scale[m] = max(max_k |v|, 1e-12) * float32(1/448)
//   q[m, k]  = e4m3(clamp(v / scale[m], -448, 448))   (round to nearest even, finite)
// the same values as fp8_linear.h's quantize_rows of the float row v. q is [rows, k] contiguous e4m3 bytes,
// scale [rows] float32. Requirements: k a multiple of 8, rows 16-byte aligned (row stride a multiple of 8),
// q 16-byte aligned. The launch is asynchronous (CUDA-graph capturable).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace flashvsr::cuda {

enum class Fp8InDType { BFloat16, Float16 };
enum class Fp8Prologue { None, Gelu, LayerNorm };

struct Fp8RowsLaunch {
  const void* x = nullptr;  // [rows, k], row stride x_row_stride elements
  void* q = nullptr;        // [rows, k] e4m3, contiguous
  float* scale = nullptr;   // [rows]
  const void* mul = nullptr;  // LayerNorm: [k], the input dtype
  const void* add = nullptr;  // LayerNorm: [k], the input dtype
  int64_t rows = 0, k = 0, x_row_stride = 0;
  Fp8Prologue prologue = Fp8Prologue::None;
  float eps = 1e-6f;
  Fp8InDType dtype = Fp8InDType::BFloat16;
};

// Validates the arguments, then launches on `stream`. Returns "" on success, else what was wrong.
std::string launch_fp8_rows(const Fp8RowsLaunch& args, cudaStream_t stream);

}  // namespace flashvsr::cuda
