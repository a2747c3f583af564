// SPDX-License-Identifier: LGPL-2.1-or-later
#include "fp8_linear.h"

#include "error.h"

#if FLASHVSR_CUDA_KERNELS
#include "cuda/fp8_rows_kernel.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace flashvsr {

RowQuantized quantize_rows(const at::Tensor& x) {
  if (x.dim() != 2 || !at::isFloatingType(x.scalar_type()))
    throw Error(Error::Kind::Internal, "quantize_rows: expected a floating-point matrix, got " +
                                           shape_string(x.sizes().vec()) + " " + c10::toString(x.scalar_type()));
  auto xf = x.to(at::kFloat);
  // A product with the float32 reciprocal (what ATen does for a division by a scalar on CUDA, spelled out
  // so that every device and the kernel compute the same bits).
  auto scales = xf.abs().amax({1}, /*keepdim=*/true).clamp_min(1e-12) * (1.0 / kE4m3Max);  // [rows, 1]
  auto values = (xf / scales).clamp(-kE4m3Max, kE4m3Max).to(at::kFloat8_e4m3fn);
  return {values, scales};
}

void check_fp8_support(at::Device device) {
  if (!device.is_cuda())
    throw Error(Error::Kind::BadSettings, "precision fp8 runs on NVIDIA GPUs with fp8 tensor cores (compute capability "
                                          "8.9 or newer); device " + device.str() + " has none: use bf16 or fp32");
#if FLASHVSR_CUDA_KERNELS
  cudaDeviceProp p{};
  const int index = device.has_index() ? device.index() : 0;
  if (cudaGetDeviceProperties(&p, index) != cudaSuccess)
    throw Error(Error::Kind::Device, "precision fp8: cannot read the properties of " + device.str());
  if (p.major * 10 + p.minor < 89)
    throw Error(Error::Kind::Device, "precision fp8 needs fp8 tensor cores (compute capability 8.9 or newer); " +
                                         device.str() + " (" + p.name + ") has " + std::to_string(p.major) + "." +
                                         std::to_string(p.minor) + ": use bf16");
#else
  throw Error(Error::Kind::BadSettings, "precision fp8 needs the CUDA kernels, and this build has none "
                                        "(configure with meson -Dgpu_kernels=enabled)");
#endif
}

Fp8Linear Fp8Linear::quantize(const at::Tensor& weight, const at::Tensor& bias) {
  if (weight.dim() != 2 || weight.size(0) % 16 != 0 || weight.size(1) % 16 != 0 || bias.dim() != 1 ||
      bias.size(0) != weight.size(0))
    throw Error(Error::Kind::Internal, "Fp8Linear: weight " + shape_string(weight.sizes().vec()) + ", bias " +
                                           shape_string(bias.sizes().vec()) +
                                           ": expected [out, in] (multiples of 16) and [out]");
  Fp8Linear l;
  auto q = quantize_rows(weight);
  l.w_ = q.values.contiguous();                               // [out, in]
  l.w_scale_ = q.scales.view({1, weight.size(0)}).contiguous();  // [1, out]
  l.b_ = bias.to(at::kBFloat16).contiguous();
  return l;
}

at::Tensor Fp8Linear::operator()(const at::Tensor& x, bool gelu_input) const {
  return (*this)(quantize_rows_cuda(x, gelu_input ? RowPrologue::gelu() : RowPrologue{}));
}

at::Tensor Fp8Linear::operator()(const RowQuantized& xq) const {
  // [M, in] x [in, out] (the weight's transpose: column-major, as the product wants) -> [M, out] bf16
  return at::_scaled_mm(xq.values, w_.t(), xq.scales, w_scale_, b_, /*scale_result=*/{}, at::kBFloat16,
                        /*use_fast_accum=*/true);
}

RowQuantized quantize_rows_cuda(const at::Tensor& x, const RowPrologue& prologue) {
#if FLASHVSR_CUDA_KERNELS
  const auto dt = x.scalar_type();
  if (!x.is_cuda() || (dt != at::kBFloat16 && dt != at::kHalf) || x.dim() != 2)
    throw Error(Error::Kind::Internal, "quantize_rows_cuda: x is " + shape_string(x.sizes().vec()) + " " +
                                           c10::toString(dt) + " on " + x.device().str() +
                                           ", expected a bf16/fp16 matrix on CUDA");
  auto xc = x.stride(1) == 1 && x.stride(0) % 8 == 0 ? x : x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1);
  RowQuantized r;
  r.values = at::empty({M, K}, xc.options().dtype(at::kFloat8_e4m3fn));
  r.scales = at::empty({M, 1}, xc.options().dtype(at::kFloat));
  const c10::cuda::CUDAGuard guard(xc.device());
  cuda::Fp8RowsLaunch a;
  a.x = xc.data_ptr();
  a.q = r.values.data_ptr();
  a.scale = r.scales.data_ptr<float>();
  a.rows = M;
  a.k = K;
  a.x_row_stride = xc.stride(0);
  at::Tensor mul, add;  // kept alive until the launch
  switch (prologue.kind) {
    case RowPrologue::Kind::None: a.prologue = cuda::Fp8Prologue::None; break;
    case RowPrologue::Kind::Gelu: a.prologue = cuda::Fp8Prologue::Gelu; break;
    case RowPrologue::Kind::LayerNorm:
      a.prologue = cuda::Fp8Prologue::LayerNorm;
      mul = prologue.mul.to(xc.options()).contiguous();
      add = prologue.add.to(xc.options()).contiguous();
      if (mul.numel() != K || add.numel() != K)
        throw Error(Error::Kind::Internal, "quantize_rows_cuda: LayerNorm vectors of " + std::to_string(mul.numel()) +
                                               " and " + std::to_string(add.numel()) + " values for rows of " +
                                               std::to_string(K));
      a.mul = mul.data_ptr();
      a.add = add.data_ptr();
      a.eps = static_cast<float>(prologue.eps);
      break;
  }
  a.dtype = dt == at::kHalf ? cuda::Fp8InDType::Float16 : cuda::Fp8InDType::BFloat16;
  const std::string err = cuda::launch_fp8_rows(a, c10::cuda::getCurrentCUDAStream().stream());
  if (!err.empty()) throw Error(Error::Kind::Device, "fp8 row quantisation: " + err);
  return r;
#else
  (void)x, (void)prologue;
  throw Error(Error::Kind::BadSettings, "fp8 row quantisation needs the CUDA kernels, and this build has none");
#endif
}

}  // namespace flashvsr
