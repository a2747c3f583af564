// SPDX-License-Identifier: LGPL-2.1-or-later
// LibTorch side of the block-sparse attention kernels: checks the tensors, picks strides, allocates the
// output and launches on the current CUDA stream. No host synchronisation (CUDA-graph capturable): the
// mask goes to the kernel as is, and each block builds its own list of selected key windows on the device.
#include "cuda/block_sparse_attention.h"

#include "error.h"
#include "sparse_attention.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

namespace flashvsr {

static_assert(cuda::kMaxAttentionKeyWindows == kMaxKeyWindows,
              "the engine's key-window limit must be the kernel's");

namespace {

std::string shape_of(const at::Tensor& t) { return shape_string(t.sizes().vec()); }

// FLASHVSR_ATTENTION_KERNEL=auto|hopper|ampere (read once): forces one kernel, for debugging and timing.
cuda::AttentionKernel kernel_from_environment() {
  static const cuda::AttentionKernel k = [] {
    const char* s = std::getenv("FLASHVSR_ATTENTION_KERNEL");
    if (!s || !*s || std::strcmp(s, "auto") == 0) return cuda::AttentionKernel::Auto;
    if (std::strcmp(s, "hopper") == 0) return cuda::AttentionKernel::Hopper;
    if (std::strcmp(s, "ampere") == 0) return cuda::AttentionKernel::Ampere;
    throw Error(Error::Kind::BadSettings,
                std::string("FLASHVSR_ATTENTION_KERNEL='") + s + "': expected auto, hopper or ampere");
  }();
  return k;
}

// A [n, 128, dim] tensor the kernel can read in place: channels contiguous, windows of 128 consecutive rows
// (stride(0) == 128 * stride(1)), row stride a multiple of 8 elements, 16-byte aligned base. Else a copy.
at::Tensor kernel_layout(const at::Tensor& t) {
  const bool ok = t.stride(2) == 1 && t.stride(0) == 128 * t.stride(1) && t.stride(1) % 8 == 0 &&
                  (reinterpret_cast<uintptr_t>(t.data_ptr()) & 15) == 0;
  return ok ? t : t.contiguous();
}

}  // namespace

BlockSparseAttentionLaunch prepare_block_sparse_attention(const at::Tensor& q_w, const at::Tensor& k_w,
                                                          const at::Tensor& v_w, const at::Tensor& mask,
                                                          int64_t heads, cuda::AttentionKernel kernel,
                                                          at::Tensor out) {
  for (const auto* t : {&q_w, &k_w, &v_w, &mask})
    if (!t->defined()) throw Error(Error::Kind::BadInput, "block-sparse attention: undefined tensor");
  if (!q_w.is_cuda() || !k_w.is_cuda() || !v_w.is_cuda() || !mask.is_cuda())
    throw Error(Error::Kind::BadSettings, "CUDA block-sparse attention: q, k, v and mask must be CUDA tensors (q on " +
                                              q_w.device().str() + ", mask on " + mask.device().str() + ")");
  const auto dt = q_w.scalar_type();
  if (dt != at::kBFloat16 && dt != at::kHalf)
    throw Error(Error::Kind::BadSettings, std::string("CUDA block-sparse attention: dtype ") + c10::toString(dt) +
                                              ": expected BFloat16 or Half (use the reference backend for others)");
  if (k_w.scalar_type() != dt || v_w.scalar_type() != dt)
    throw Error(Error::Kind::BadInput, std::string("CUDA block-sparse attention: k/v dtype ") +
                                           c10::toString(k_w.scalar_type()) + "/" + c10::toString(v_w.scalar_type()) +
                                           ", expected " + c10::toString(dt) + " like q");
  if (k_w.device() != q_w.device() || v_w.device() != q_w.device() || mask.device() != q_w.device())
    throw Error(Error::Kind::BadInput, "CUDA block-sparse attention: q, k, v and mask must be on one device");
  if (heads < 1) throw Error(Error::Kind::BadInput, "block-sparse attention: heads " + std::to_string(heads));
  const int64_t dim = heads * 128;
  if (q_w.dim() != 3 || q_w.size(1) != 128 || q_w.size(2) != dim)
    throw Error(Error::Kind::BadInput, "block-sparse attention: q_w " + shape_of(q_w) + ", expected [nq, 128, " +
                                           std::to_string(dim) + "] (" + std::to_string(heads) + " heads x 128)");
  const int64_t nq = q_w.size(0);
  if (k_w.dim() != 3 || k_w.size(1) != 128 || k_w.size(2) != dim || !v_w.sizes().equals(k_w.sizes()))
    throw Error(Error::Kind::BadInput, "block-sparse attention: k_w " + shape_of(k_w) + ", v_w " + shape_of(v_w) +
                                           ", expected both [nk, 128, " + std::to_string(dim) + "]");
  const int64_t nk = k_w.size(0);
  if (mask.scalar_type() != at::kBool || mask.dim() != 3 || mask.size(0) != heads || mask.size(1) != nq ||
      mask.size(2) != nk)
    throw Error(Error::Kind::BadInput, "block-sparse attention: mask " + shape_of(mask) + " " +
                                           c10::toString(mask.scalar_type()) + ", expected bool [" +
                                           std::to_string(heads) + ", " + std::to_string(nq) + ", " +
                                           std::to_string(nk) + "]");
  if (nk > cuda::kMaxAttentionKeyWindows)
    throw Error(Error::Kind::BadSettings, "CUDA block-sparse attention: " + std::to_string(nk) +
                                              " key windows, at most " +
                                              std::to_string(cuda::kMaxAttentionKeyWindows) + " supported");
  const c10::cuda::CUDAGuard guard(q_w.device());
  BlockSparseAttentionLaunch l;
  l.q = kernel_layout(q_w);
  l.k = kernel_layout(k_w);
  l.v = kernel_layout(v_w);
  l.mask = mask.contiguous();
  if (!out.defined()) {
    out = at::empty({nq, 128, dim}, q_w.options());
  } else if (!out.sizes().equals({nq, 128, dim}) || out.scalar_type() != dt || out.device() != q_w.device() ||
             out.stride(2) != 1 || out.stride(0) != 128 * out.stride(1)) {  // row stride, alignment: the launch checks
    throw Error(Error::Kind::BadInput, "block-sparse attention: out " + shape_of(out) + " " +
                                           c10::toString(out.scalar_type()) + " on " + out.device().str() +
                                           ", expected [" + std::to_string(nq) + ", 128, " + std::to_string(dim) +
                                           "] " + c10::toString(dt) + " on " + q_w.device().str() +
                                           " with windows of 128 rows of contiguous channels");
  }
  l.out = out;

  cuda::AttentionLaunch& a = l.args;
  a.q = l.q.data_ptr();
  a.k = l.k.data_ptr();
  a.v = l.v.data_ptr();
  a.mask = reinterpret_cast<const uint8_t*>(l.mask.data_ptr<bool>());
  a.out = l.out.data_ptr();
  a.nq = nq;
  a.nk = nk;
  a.heads = heads;
  a.q_row_stride = l.q.stride(1);
  a.k_row_stride = l.k.stride(1);
  a.v_row_stride = l.v.stride(1);
  a.out_row_stride = l.out.stride(1);
  a.dtype = dt == at::kHalf ? cuda::AttentionDType::Float16 : cuda::AttentionDType::BFloat16;
  a.scale = static_cast<float>(1.0 / std::sqrt(128.0));
  a.kernel = kernel == cuda::AttentionKernel::Auto ? kernel_from_environment() : kernel;
  return l;
}

at::Tensor block_sparse_attention_cuda(const at::Tensor& q_w, const at::Tensor& k_w, const at::Tensor& v_w,
                                       const at::Tensor& mask, int64_t heads, cuda::AttentionKernel kernel) {
  const BlockSparseAttentionLaunch l = prepare_block_sparse_attention(q_w, k_w, v_w, mask, heads, kernel);
  if (l.args.nq == 0) return l.out;
  const c10::cuda::CUDAGuard guard(q_w.device());
  const std::string err = cuda::launch_block_sparse_attention(l.args, c10::cuda::getCurrentCUDAStream().stream());
  if (!err.empty()) throw Error(Error::Kind::Device, "CUDA block-sparse attention: " + err);
  return l.out;
}

}  // namespace flashvsr
