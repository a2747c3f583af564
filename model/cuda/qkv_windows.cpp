// SPDX-License-Identifier: LGPL-2.1-or-later
#include "qkv_windows.h"

#include "error.h"
#include "qkv_windows_kernel.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace flashvsr {

void qkv_windows_cuda(const at::Tensor& qkv, const at::Tensor& norm_q, const at::Tensor& norm_k, const RopeTable& rope,
                      const WindowGrid& grid, int64_t head_dim, double eps, const at::Tensor& q_w,
                      const at::Tensor& k_w, const at::Tensor& v_w) {
  const auto dt = qkv.scalar_type();
  if (!qkv.is_cuda() || (dt != at::kBFloat16 && dt != at::kHalf))
    throw Error(Error::Kind::Internal, std::string("qkv_windows_cuda: qkv is ") + c10::toString(dt) + " on " +
                                           qkv.device().str() + ", expected bf16/fp16 on CUDA");
  const int64_t L = grid.f * grid.h * grid.w;
  if (qkv.dim() != 2 || qkv.size(0) != L || qkv.size(1) % 3 != 0 || qkv.stride(1) != 1)
    throw Error(Error::Kind::Internal, "qkv_windows_cuda: qkv " + shape_string(qkv.sizes().vec()) + ", expected [" +
                                           std::to_string(L) + ", 3 dim] with contiguous rows");
  const int64_t D = qkv.size(1) / 3;
  for (const auto* n : {&norm_q, &norm_k})
    if (!n->is_contiguous() || n->numel() != D || n->scalar_type() != dt || n->device() != qkv.device())
      throw Error(Error::Kind::Internal, "qkv_windows_cuda: a norm weight does not match qkv");
  const std::vector<int64_t> rope_shape{L, 1, head_dim / 2};
  for (const auto* r : {&rope.cos, &rope.sin})
    if (r->sizes().vec() != rope_shape || r->scalar_type() != at::kFloat || !r->is_contiguous() || r->device() != qkv.device())
      throw Error(Error::Kind::Internal, "qkv_windows_cuda: rope table " + shape_string(r->sizes().vec()) +
                                             ", expected contiguous float32 " + shape_string(rope_shape));
  const std::vector<int64_t> out_shape{grid.windows(), kWindowTokens, D};
  for (const auto* o : {&q_w, &k_w, &v_w})
    if (o->sizes().vec() != out_shape || !o->is_contiguous() || o->scalar_type() != dt || o->device() != qkv.device())
      throw Error(Error::Kind::Internal, "qkv_windows_cuda: output " + shape_string(o->sizes().vec()) +
                                             ", expected contiguous " + shape_string(out_shape));
  if (L == 0) return;

  const c10::cuda::CUDAGuard guard(qkv.device());
  cuda::QkvWindowsLaunch a;
  a.qkv = qkv.data_ptr();
  a.norm_q = norm_q.data_ptr();
  a.norm_k = norm_k.data_ptr();
  a.cos = rope.cos.data_ptr<float>();
  a.sin = rope.sin.data_ptr<float>();
  a.q_out = q_w.data_ptr();
  a.k_out = k_w.data_ptr();
  a.v_out = v_w.data_ptr();
  a.frames = grid.f;
  a.rows = grid.h;
  a.cols = grid.w;
  a.dim = D;
  a.head_dim = head_dim;
  a.qkv_row_stride = qkv.stride(0);
  a.eps = static_cast<float>(eps);
  a.dtype = dt == at::kHalf ? cuda::QkvDType::Float16 : cuda::QkvDType::BFloat16;
  const std::string err = cuda::launch_qkv_windows(a, c10::cuda::getCurrentCUDAStream().stream());
  if (!err.empty()) throw Error(Error::Kind::Device, "fused q/k/v windows: " + err);
}

}  // namespace flashvsr
