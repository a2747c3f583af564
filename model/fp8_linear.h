// SPDX-License-Identifier: LGPL-2.1-or-later
// Linear layers in e4m3 (float8_e4m3fn) for GPUs with fp8 tensor cores (precision "fp8"):
//   W ≈ diag(sw) Wq   per output channel n: sw[n] = max_k |W[n, k]| / 448   (once, at load)
//   x ≈ diag(sx) xq   per row (token) m:    sx[m] = max_k |x[m, k]| / 448   (every call, on the device)
//   y = x W^T + b ≈ diag(sx) (xq Wq^T) diag(sw) + b
// with xq Wq^T accumulated in float32 by the tensor cores and y rounded to bf16 (LibTorch's row-wise scaled
// matrix product, at::_scaled_mm). 448 is the largest finite e4m3 value, so every row uses the full range.
#pragma once

#include <ATen/ATen.h>

namespace flashvsr {

constexpr double kE4m3Max = 448.0;

// A matrix quantised row by row: values [rows, k] e4m3, scales [rows, 1] float32, values * scales ≈ x.
struct RowQuantized {
  at::Tensor values, scales;
};

// The definition of the row-wise quantisation, in ATen operations (any device, any floating dtype, the
// arithmetic in float32): scale = max(max|row|, 1e-12) * float32(1/448), value = e4m3(clamp(row / scale, ±448))
// (round to nearest even).
// Used for the weights at load, and by the tests as the reference of the CUDA kernel.
RowQuantized quantize_rows(const at::Tensor& x);

// Throws flashvsr::Error naming the device and what is missing unless fp8 linear layers can run on it:
// a CUDA device of compute capability 8.9 or newer (Ada, Hopper, Blackwell) in a build with the CUDA
// kernels. The CPU has no fp8 matrix product: Error(BadSettings).
void check_fp8_support(at::Device device);

class Fp8Linear {
 public:
  Fp8Linear() = default;
  // weight [out, in], bias [out] (bf16, on the device that will run it); in and out multiples of 16.
  static Fp8Linear quantize(const at::Tensor& weight, const at::Tensor& bias);

  bool defined() const { return w_.defined(); }
  const at::Tensor& weight() const { return w_; }              // [out, in] e4m3
  const at::Tensor& weight_scale() const { return w_scale_; }  // [1, out] float32

  // x [M, in] bf16 on CUDA (rows contiguous) -> [M, out] bf16. With gelu_input, GELU(tanh) is applied
  // to x first, in float32 inside the quantisation (so a preceding GEMM need not write GELU's output).
  // One quantisation kernel and one GEMM; no host synchronisation.
  at::Tensor operator()(const at::Tensor& x, bool gelu_input = false) const;
  // The same for an input already quantised (quantize_rows_cuda with a prologue): [M, in] -> [M, out].
  at::Tensor operator()(const RowQuantized& xq) const;

 private:
  at::Tensor w_, w_scale_, b_;
};

// What the quantisation kernel applies to each row (in float32) before quantising it.
struct RowPrologue {
  enum class Kind { None, Gelu, LayerNorm } kind = Kind::None;
  at::Tensor mul, add;  // LayerNorm: [k] in x's dtype; the row becomes LN(row) * mul + add
  double eps = 1e-6;

  static RowPrologue gelu() { return {Kind::Gelu, {}, {}, 1e-6}; }
  // LN(row) * mul + add: an affine LayerNorm (weight, bias), or a modulated one (1 + scale, shift).
  static RowPrologue layer_norm(at::Tensor mul, at::Tensor add, double eps) {
    return {Kind::LayerNorm, std::move(mul), std::move(add), eps};
  }
};

// Row-wise quantisation of activations on CUDA (model/cuda/fp8_rows_kernel.h): the values of
// quantize_rows(prologue(float(x))) in one kernel. x [M, k] bf16/fp16, k a multiple of 8.
RowQuantized quantize_rows_cuda(const at::Tensor& x, const RowPrologue& prologue = {});

}  // namespace flashvsr
