// SPDX-License-Identifier: LGPL-2.1-or-later
#include "residual_norm.h"

#include "error.h"
#include "residual_norm_kernel.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace flashvsr {

at::Tensor residual_norm_cuda(at::Tensor& x, const at::Tensor& gate, const at::Tensor& y, const at::Tensor& mul,
                              const at::Tensor& add, double eps) {
  const auto dt = x.scalar_type();
  if (!x.is_cuda() || (dt != at::kBFloat16 && dt != at::kHalf) || x.dim() != 2 || !x.is_contiguous())
    throw Error(Error::Kind::Internal, "residual_norm_cuda: x is " + shape_string(x.sizes().vec()) + " " + c10::toString(dt) +
                                           " on " + x.device().str() + ", expected a contiguous bf16/fp16 matrix on CUDA");
  const int64_t rows = x.size(0), d = x.size(1);
  auto check = [&](const at::Tensor& t, int64_t numel, const char* name) {
    if (t.defined() && (t.numel() != numel || !t.is_contiguous() || t.scalar_type() != dt || t.device() != x.device()))
      throw Error(Error::Kind::Internal, std::string("residual_norm_cuda: ") + name + " " + shape_string(t.sizes().vec()) +
                                             ", expected " + std::to_string(numel) + " contiguous values like x");
  };
  check(y, rows * d, "y");
  check(gate, d, "gate");
  check(mul, d, "mul");
  check(add, d, "add");
  if (mul.defined() != add.defined()) throw Error(Error::Kind::Internal, "residual_norm_cuda: mul without add");
  at::Tensor out = mul.defined() ? at::empty_like(x) : at::Tensor();
  const c10::cuda::CUDAGuard guard(x.device());
  cuda::ResidualNormLaunch a;
  a.x = x.data_ptr();
  a.y = y.defined() ? y.data_ptr() : nullptr;
  a.gate = gate.defined() ? gate.data_ptr() : nullptr;
  a.mul = mul.defined() ? mul.data_ptr() : nullptr;
  a.add = add.defined() ? add.data_ptr() : nullptr;
  a.out = out.defined() ? out.data_ptr() : nullptr;
  a.rows = rows;
  a.d = d;
  a.eps = static_cast<float>(eps);
  a.dtype = dt == at::kHalf ? cuda::NormDType::Float16 : cuda::NormDType::BFloat16;
  const std::string err = cuda::launch_residual_norm(a, c10::cuda::getCurrentCUDAStream().stream());
  if (!err.empty()) throw Error(Error::Kind::Device, "fused residual + norm: " + err);
  return out;
}

}  // namespace flashvsr
