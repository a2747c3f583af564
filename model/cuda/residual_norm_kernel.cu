// SPDX-License-Identifier: LGPL-2.1-or-later
// One CTA per row, 8 channels per thread held in registers: the row is read once (x and y), updated,
// written back, reduced twice (mean, then the centred variance) and normalised without reading it again.
#include "residual_norm_kernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace flashvsr::cuda {

namespace {

constexpr int kMaxThreads = 1024;  // 8 channels each: rows of up to 8192

__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ inline float to_float(__half x) { return __half2float(x); }
template <typename T> __device__ inline T from_float(float x);
template <> __device__ inline __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
template <> __device__ inline __half from_float(float x) { return __float2half_rn(x); }

template <typename T>
__device__ inline void load8(const T* p, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = to_float(e[i]);
}

// Rounds v to T (and v to the rounded value), stores the 8 values.
template <typename T>
__device__ inline void store8(T* p, float (&v)[8]) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    e[i] = from_float<T>(v[i]);
    v[i] = to_float(e[i]);
  }
  *reinterpret_cast<uint4*>(p) = raw;
}

// Sum over the CTA (blockDim.x a multiple of 32).
__device__ inline float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();  // scratch may still be read by an earlier reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float s = lane < warps ? scratch[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) residual_norm_kernel(ResidualNormLaunch a) {
  __shared__ float scratch[kMaxThreads / 32];
  const int64_t c = int64_t(threadIdx.x) * 8;
  const bool active = c < a.d;
  T* x = static_cast<T*>(a.x) + blockIdx.x * a.d;
  float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (active) {
    load8(x + c, v);
    if (a.y) {
      float y[8], g[8] = {1, 1, 1, 1, 1, 1, 1, 1};
      load8(static_cast<const T*>(a.y) + blockIdx.x * a.d + c, y);
      if (a.gate) load8(static_cast<const T*>(a.gate) + c, g);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] = fmaf(g[i], y[i], v[i]);
      store8(x + c, v);  // v is now the stored (rounded) value, as the unfused norm would read it
    }
  }
  if (!a.out) return;  // uniform over the CTA: no thread is left waiting in a reduction
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) s += v[i];
  const float mean = block_sum(s, scratch) / static_cast<float>(a.d);
  float q = 0.0f;
  if (active) {
#pragma unroll
    for (int i = 0; i < 8; ++i) q += (v[i] - mean) * (v[i] - mean);
  }
  const float rstd = rsqrtf(block_sum(q, scratch) / static_cast<float>(a.d) + a.eps);
  if (!active) return;
  float m[8], d[8];
  load8(static_cast<const T*>(a.mul) + c, m);
  load8(static_cast<const T*>(a.add) + c, d);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = (v[i] - mean) * rstd * m[i] + d[i];
  store8(static_cast<T*>(a.out) + blockIdx.x * a.d + c, v);
}

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

std::string launch_residual_norm(const ResidualNormLaunch& a, cudaStream_t stream) {
  if (!a.x) return "null x";
  if (a.out && (!a.mul || !a.add)) return "a norm without its mul/add vectors";
  if (a.d <= 0 || a.d % 8 != 0 || a.d > 8 * kMaxThreads) return "row of " + std::to_string(a.d) + " channels, expected a multiple of 8 up to 8192";
  if (a.rows < 0 || a.rows > 0x7fffffff) return "rows out of range";
  for (const void* p : {static_cast<const void*>(a.x), a.y, a.gate, a.mul, a.add, static_cast<const void*>(a.out)})
    if (p && !aligned(p)) return "a pointer is not 16-byte aligned";
  if (a.rows == 0) return "";
  const int threads = static_cast<int>(((a.d / 8 + 31) / 32) * 32);
  if (a.dtype == NormDType::Float16)
    residual_norm_kernel<__half><<<static_cast<unsigned>(a.rows), threads, 0, stream>>>(a);
  else
    residual_norm_kernel<__nv_bfloat16><<<static_cast<unsigned>(a.rows), threads, 0, stream>>>(a);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("launch failed: ") + cudaGetErrorString(e);
}

}  // namespace flashvsr::cuda
