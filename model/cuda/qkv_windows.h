// SPDX-License-Identifier: LGPL-2.1-or-later
// LibTorch entry of the fused q/k/v preparation (qkv_windows_kernel.h): RMSNorm + RoPE of q and k and the
// window partition of q, k and v in one pass over the QKV projection's output. Only in builds with CUDA
// kernels (FLASHVSR_CUDA_KERNELS).
#pragma once

#include "rope.h"
#include "sparse_attention.h"

#include <ATen/ATen.h>

namespace flashvsr {

// qkv: [L, 3 dim] (L = grid.f * grid.h * grid.w, bf16/fp16 on CUDA, rows 16-byte aligned); norm_q, norm_k:
// [dim]; rope: the chunk's table (cos/sin [L, 1, head_dim/2] float32). Writes q_w, k_w, v_w: each
// [grid.windows(), 128, dim] contiguous, in window order — the same values (up to the rounding of the RMS
// statistic) as to_windows(apply_rope(rms_norm(q) * norm_q)) etc. No host synchronisation.
void qkv_windows_cuda(const at::Tensor& qkv, const at::Tensor& norm_q, const at::Tensor& norm_k, const RopeTable& rope,
                      const WindowGrid& grid, int64_t head_dim, double eps, const at::Tensor& q_w,
                      const at::Tensor& k_w, const at::Tensor& v_w);

}  // namespace flashvsr
