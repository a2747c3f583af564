// SPDX-License-Identifier: LGPL-2.1-or-later
// One CTA per row, 8 channels per 16-byte load: with the LayerNorm prologue two first passes give the
// row's mean and variance (block reductions); the next pass finds the largest magnitude of the
// prologue's output (a block reduction makes the scale); the last reads the row again (from L1/L2), applies
// the prologue and writes 8 e4m3 bytes per thread-step.
#include "fp8_rows_kernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

namespace flashvsr::cuda {

namespace {

constexpr float kE4m3Max = 448.0f;
constexpr int kThreads = 256;

__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ inline float to_float(__half x) { return __half2float(x); }

// GELU with the tanh approximation, in float32: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
__device__ inline float gelu_tanh(float x) {
  const float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * x * (1.0f + tanhf(kBeta * (x + 0.044715f * x * x * x)));
}

// The 8 channels [c, c + 8) of a row as float.
template <typename T>
__device__ inline void load8(const T* row, int64_t c, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(row + c);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = to_float(e[i]);
}

// The prologue's output for channels [c, c + 8): GELU, or (v - mean) * rstd * mul + add.
template <typename T>
__device__ inline void prologue8(const Fp8RowsLaunch& a, const T* row, int64_t c, float mean, float rstd, float (&v)[8]) {
  load8(row, c, v);
  if (a.prologue == Fp8Prologue::Gelu) {
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = gelu_tanh(v[i]);
  } else if (a.prologue == Fp8Prologue::LayerNorm) {
    float m[8], d[8];
    load8(static_cast<const T*>(a.mul), c, m);
    load8(static_cast<const T*>(a.add), c, d);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = (v[i] - mean) * rstd * m[i] + d[i];
  }
}

__device__ inline float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by an earlier reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float s = lane < kThreads / 32 ? scratch[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

__device__ inline float block_max(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by an earlier reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = lane < kThreads / 32 ? scratch[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  return m;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fp8_rows_kernel(Fp8RowsLaunch a) {
  __shared__ float scratch[kThreads / 32];
  const T* row = static_cast<const T*>(a.x) + blockIdx.x * a.x_row_stride;
  float mean = 0.0f, rstd = 1.0f;
  if (a.prologue == Fp8Prologue::LayerNorm) {
    // Two passes (mean, then the mean square deviation): no cancellation for rows far from zero mean.
    const float n = static_cast<float>(a.k);
    float sum = 0.0f, sq = 0.0f;
    for (int64_t c = int64_t{threadIdx.x} * 8; c < a.k; c += kThreads * 8) {
      float v[8];
      load8(row, c, v);
#pragma unroll
      for (int i = 0; i < 8; ++i) sum += v[i];
    }
    mean = block_sum(sum, scratch) / n;
    for (int64_t c = int64_t{threadIdx.x} * 8; c < a.k; c += kThreads * 8) {
      float v[8];
      load8(row, c, v);
#pragma unroll
      for (int i = 0; i < 8; ++i) sq += (v[i] - mean) * (v[i] - mean);
    }
    rstd = rsqrtf(block_sum(sq, scratch) / n + a.eps);
  }
  float amax = 0.0f;
  for (int64_t c = int64_t{threadIdx.x} * 8; c < a.k; c += kThreads * 8) {
    float v[8];
    prologue8(a, row, c, mean, rstd, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(v[i]));
  }
  amax = block_max(amax, scratch);
  const float scale = fmaxf(amax, 1e-12f) * (1.0f / kE4m3Max);  // as quantize_rows: the reciprocal's product
  if (threadIdx.x == 0) a.scale[blockIdx.x] = scale;
  unsigned char* out = static_cast<unsigned char*>(a.q) + blockIdx.x * a.k;
  for (int64_t c = int64_t{threadIdx.x} * 8; c < a.k; c += kThreads * 8) {
    float v[8];
    prologue8(a, row, c, mean, rstd, v);
    unsigned char b[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float s = fminf(fmaxf(v[i] / scale, -kE4m3Max), kE4m3Max);
      b[i] = static_cast<unsigned char>(__nv_cvt_float_to_fp8(s, __NV_SATFINITE, __NV_E4M3));
    }
    *reinterpret_cast<uint2*>(out + c) = *reinterpret_cast<const uint2*>(b);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

std::string launch_fp8_rows(const Fp8RowsLaunch& a, cudaStream_t stream) {
  if (!a.x || !a.q || !a.scale) return "a null pointer";
  if (a.k <= 0 || a.k % 8 != 0) return "row length " + std::to_string(a.k) + ": expected a positive multiple of 8";
  if (a.x_row_stride < a.k || a.x_row_stride % 8 != 0)
    return "row stride " + std::to_string(a.x_row_stride) + ": expected >= the row length and a multiple of 8";
  if (!aligned16(a.x) || !aligned16(a.q)) return "a base pointer is not 16-byte aligned";
  if (a.prologue == Fp8Prologue::LayerNorm && (!a.mul || !a.add || !aligned16(a.mul) || !aligned16(a.add)))
    return "the LayerNorm's vectors are missing or not 16-byte aligned";
  if (a.rows > 0x7fffffff) return "too many rows for one launch: " + std::to_string(a.rows);
  if (a.rows == 0) return "";
  if (a.dtype == Fp8InDType::BFloat16)
    fp8_rows_kernel<__nv_bfloat16><<<static_cast<unsigned>(a.rows), kThreads, 0, stream>>>(a);
  else
    fp8_rows_kernel<__half><<<static_cast<unsigned>(a.rows), kThreads, 0, stream>>>(a);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? std::string() : std::string("launch failed: ") + cudaGetErrorString(e);
}

}  // namespace flashvsr::cuda
