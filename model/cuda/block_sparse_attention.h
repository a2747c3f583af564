// SPDX-License-Identifier: LGPL-2.1-or-later
// LibTorch side of the block-sparse attention kernels (attention_kernel.h): tensors in, a checked launch
// out. The engine (sparse_attention.cpp) calls block_sparse_attention_cuda; the tests and the attention
// micro-benchmark reach the same launch with an explicit kernel choice, or build it once with
// prepare_block_sparse_attention and time the bare kernel launches. Only in builds with the CUDA kernels.
#pragma once

#include "cuda/attention_kernel.h"

#include <ATen/ATen.h>

#include <cstdint>

namespace flashvsr {

// The tensors a launch reads and writes (kept alive with it) and its arguments, on q_w's device.
struct BlockSparseAttentionLaunch {
  at::Tensor q, k, v, mask;  // the inputs in a layout the kernel reads in place (copies where needed)
  at::Tensor out;            // [nq, 128, dim]
  cuda::AttentionLaunch args;
};

// Checks q_w: [nq, 128, dim], k_w, v_w: [nk, 128, dim] (bf16 or fp16, CUDA, dim = heads x 128) and
// mask: bool [heads, nq, nk] (Error(BadInput) or Error(BadSettings) with the shapes otherwise), and
// builds the launch into `out` (allocated when undefined; else [nq, 128, dim] of q_w's dtype and
// device, rows of dim contiguous elements). Kernel Auto follows FLASHVSR_ATTENTION_KERNEL when it is set.
BlockSparseAttentionLaunch prepare_block_sparse_attention(const at::Tensor& q_w, const at::Tensor& k_w,
                                                          const at::Tensor& v_w, const at::Tensor& mask,
                                                          int64_t heads, cuda::AttentionKernel kernel,
                                                          at::Tensor out = at::Tensor());

// -> [nq, 128, dim]: see block_sparse_attention in sparse_attention.h. Launches on the current CUDA stream
// without waiting for the device; Error(Device) naming the failure when the launch fails.
at::Tensor block_sparse_attention_cuda(const at::Tensor& q_w, const at::Tensor& k_w, const at::Tensor& v_w,
                                       const at::Tensor& mask, int64_t heads,
                                       cuda::AttentionKernel kernel = cuda::AttentionKernel::Auto);

}  // namespace flashvsr
