// SPDX-License-Identifier: LGPL-2.1-or-later
// LibTorch entry of the fused residual update + LayerNorm (residual_norm_kernel.h). Only in builds with CUDA
// kernels (FLASHVSR_CUDA_KERNELS).
#pragma once

#include <ATen/ATen.h>

namespace flashvsr {

// x [rows, d] (bf16/fp16 on CUDA, contiguous) <- x + gate * y in place when y is defined (gate [d], or 1
// when undefined); then returns LN(x) * mul + add [rows, d] (mul, add [d]), or an undefined tensor when mul
// is undefined. One pass over x; no host synchronisation.
at::Tensor residual_norm_cuda(at::Tensor& x, const at::Tensor& gate, const at::Tensor& y, const at::Tensor& mul,
                              const at::Tensor& add, double eps);

}  // namespace flashvsr
