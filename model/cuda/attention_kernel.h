// SPDX-License-Identifier: LGPL-2.1-or-later
// Block-sparse window attention on CUDA: the plain C++ interface of the kernels in attention_kernel.cu.
// No LibTorch here: callers pass raw device pointers, sizes and strides, and the stream to launch on.
//
// Shapes (all tensors on the same CUDA device, head_dim fixed at 128, windows of 128 tokens):
//   q: [nq * 128 rows, heads * 128 channels], row stride q_row_stride elements (window i = rows i*128..)
//   k, v: [nk * 128 rows, heads * 128 channels], row strides k_row_stride, v_row_stride
//   mask: bool/uint8 [heads, nq, nk], contiguous; nonzero = query window i of head h sees key window j
//   out: [nq * 128 rows, heads * 128 channels], row stride out_row_stride
// Head h occupies channels [h*128, (h+1)*128) of every row. Every row stride is a multiple of 8 elements
// and every base pointer 16-byte aligned. out = per head softmax(scale * q k^T) v over the tokens of the
// selected key windows (in ascending window order), zeros for a query window with no selected window.
// The launch is asynchronous: nothing waits for the device, so it can be captured in a CUDA graph.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace flashvsr::cuda {

enum class AttentionDType { BFloat16, Float16 };

enum class AttentionKernel {
  Auto,    // Hopper when the device is compute capability 9.x and this build holds sm_90a code, else Ampere
  Hopper,  // sm_90a: TMA loads, wgmma tensor-core products, a producer warp and two consumer warpgroups
  Ampere,  // sm_80+: cp.async loads, mma.sync m16n8k16 tensor-core products, eight warps
};
const char* attention_kernel_name(AttentionKernel k);

// The largest key-window count a launch supports (the per-block index list lives in shared memory).
constexpr int64_t kMaxAttentionKeyWindows = 16384;

struct AttentionLaunch {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const uint8_t* mask = nullptr;
  void* out = nullptr;
  int64_t nq = 0, nk = 0, heads = 0;
  int64_t q_row_stride = 0, k_row_stride = 0, v_row_stride = 0, out_row_stride = 0;
  AttentionDType dtype = AttentionDType::BFloat16;
  float scale = 0.0f;  // softmax scale, 1/sqrt(128) for this model
  AttentionKernel kernel = AttentionKernel::Auto;
};

// Which kernel `requested` resolves to on the current device ("" in *error when it can run; otherwise the
// reason, e.g. no kernel image for this device, or Hopper requested where the build lacks sm_90a code).
AttentionKernel resolve_attention_kernel(AttentionKernel requested, std::string* error);

// Validates the arguments, then launches on `stream`. Returns "" on success, else a message naming what
// was wrong (bad sizes or alignment, no suitable kernel, a CUDA launch error). Never synchronises.
// *used (optional) receives the kernel that ran.
std::string launch_block_sparse_attention(const AttentionLaunch& args, cudaStream_t stream,
                                          AttentionKernel* used = nullptr);

}  // namespace flashvsr::cuda
