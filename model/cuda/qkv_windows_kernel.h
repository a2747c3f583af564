// SPDX-License-Identifier: LGPL-2.1-or-later
// The DiT's q/k/v preparation on CUDA in one pass: the plain C++ interface of qkv_windows_kernel.cu.
// No LibTorch here: callers pass raw device pointers, sizes and the stream to launch on.
//
// Per token t of a grid of f latent frames x h rows x w columns (tokens in (f, h, w) order):
//   q = RoPE(RMSNorm(qkv[t, 0:D]) * norm_q),  k = RoPE(RMSNorm(qkv[t, D:2D]) * norm_k),  v = qkv[t, 2D:3D]
// each written to row  window(t) * 128 + position(t)  of q_out / k_out / v_out (the window partition of
// sparse_attention.h: windows of 2 x 8 x 8 tokens in (f/2, h/8, w/8) order, tokens in (2, 8, 8) order).
// RMSNorm over all D channels in float32 (eps given), rounded to the model dtype before the rotation, as
// the composed operations do; RoPE rotates the consecutive pairs (2j, 2j+1) of each head by the angle of
// table entry [t, j] (cos/sin float32 [f*h*w, head_dim/2]). Requirements: D a multiple of 128, D/8 <= 1024
// threads, head_dim even and a divisor of D, every row 16-byte aligned (row strides multiples of 8).
// The launch is asynchronous (CUDA-graph capturable).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace flashvsr::cuda {

enum class QkvDType { BFloat16, Float16 };

struct QkvWindowsLaunch {
  const void* qkv = nullptr;      // [L, 3D], row stride qkv_row_stride elements
  const void* norm_q = nullptr;   // [D]
  const void* norm_k = nullptr;   // [D]
  const float* cos = nullptr;     // [L, head_dim/2]
  const float* sin = nullptr;     // [L, head_dim/2]
  void* q_out = nullptr;          // [L, D] contiguous, window order
  void* k_out = nullptr;          // [L, D] contiguous, window order
  void* v_out = nullptr;          // [L, D] contiguous, window order
  int64_t frames = 0, rows = 0, cols = 0;  // the token grid (frames even, rows and cols multiples of 8)
  int64_t dim = 0, head_dim = 0, qkv_row_stride = 0;
  float eps = 1e-6f;
  QkvDType dtype = QkvDType::BFloat16;
};

// Validates the arguments, then launches on `stream`. Returns "" on success, else what was wrong.
std::string launch_qkv_windows(const QkvWindowsLaunch& args, cudaStream_t stream);

}  // namespace flashvsr::cuda
