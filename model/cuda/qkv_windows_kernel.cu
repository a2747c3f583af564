// SPDX-License-Identifier: LGPL-2.1-or-later
// One CTA per (token, part): part 0 = q, 1 = k (RMSNorm + RoPE), 2 = v (copy). Each thread holds 8
// consecutive channels (one 16-byte load and store); the RMS statistic is a block reduction in float32.
#include "qkv_windows_kernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace flashvsr::cuda {

namespace {

__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ inline float to_float(__half x) { return __half2float(x); }
template <typename T> __device__ inline T from_float(float x);
template <> __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ inline __half from_float<__half>(float x) { return __float2half(x); }

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024), the same value in every thread.
__device__ inline float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float s = lane < warps ? scratch[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

template <typename T>
__global__ void qkv_windows_kernel(QkvWindowsLaunch a) {
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  const int part = blockIdx.y;
  const int64_t c0 = int64_t{threadIdx.x} * 8;
  const bool active = c0 < a.dim;

  // Window partition: token (fr, y, x) -> window ((fr/2, y/8, x/8)), position (fr%2, y%8, x%8).
  const int64_t fr = t / (a.rows * a.cols), y = (t / a.cols) % a.rows, x = t % a.cols;
  const int64_t window = ((fr / 2) * (a.rows / 8) + y / 8) * (a.cols / 8) + x / 8;
  const int64_t row = window * 128 + ((fr % 2) * 8 + y % 8) * 8 + x % 8;

  const T* src = static_cast<const T*>(a.qkv) + t * a.qkv_row_stride + part * a.dim;
  T* dst = static_cast<T*>(part == 0 ? a.q_out : part == 1 ? a.k_out : a.v_out) + row * a.dim;
  uint4 raw = make_uint4(0, 0, 0, 0);
  if (active) raw = *reinterpret_cast<const uint4*>(src + c0);
  if (part == 2) {  // v: the partition only (uniform per block: no thread reaches the barrier below)
    if (active) *reinterpret_cast<uint4*>(dst + c0) = raw;
    return;
  }
  const T* xs = reinterpret_cast<const T*>(&raw);
  float v[8];
  float ss = 0.0f;
  for (int i = 0; i < 8; ++i) {
    v[i] = to_float(xs[i]);
    ss += v[i] * v[i];
  }
  const float rstd = rsqrtf(block_sum(ss, scratch) / static_cast<float>(a.dim) + a.eps);
  if (!active) return;
  const uint4 graw = *reinterpret_cast<const uint4*>(static_cast<const T*>(part == 0 ? a.norm_q : a.norm_k) + c0);
  const T* g = reinterpret_cast<const T*>(&graw);
  // RMSNorm rounded to the model dtype (as the composed at::rms_norm output), then rotated in float32.
  for (int i = 0; i < 8; ++i) v[i] = to_float(from_float<T>(v[i] * rstd * to_float(g[i])));
  const int64_t pairs = a.head_dim / 2;
  const float* cs = a.cos + t * pairs;
  const float* sn = a.sin + t * pairs;
  uint4 out;
  T* o = reinterpret_cast<T*>(&out);
  for (int p = 0; p < 4; ++p) {
    const int64_t j = ((c0 + 2 * p) % a.head_dim) / 2;
    const float re = v[2 * p], im = v[2 * p + 1], c = cs[j], s = sn[j];
    o[2 * p] = from_float<T>(re * c - im * s);
    o[2 * p + 1] = from_float<T>(re * s + im * c);
  }
  *reinterpret_cast<uint4*>(dst + c0) = out;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

std::string launch_qkv_windows(const QkvWindowsLaunch& a, cudaStream_t stream) {
  if (!a.qkv || !a.norm_q || !a.norm_k || !a.cos || !a.sin || !a.q_out || !a.k_out || !a.v_out)
    return "a null pointer";
  if (a.dim <= 0 || a.dim % 128 != 0 || a.dim / 8 > 1024)
    return "dim " + std::to_string(a.dim) + ": expected a multiple of 128, at most 8192";
  if (a.head_dim <= 0 || a.head_dim % 2 != 0 || a.dim % a.head_dim != 0)
    return "head dim " + std::to_string(a.head_dim) + ": expected even and a divisor of dim " + std::to_string(a.dim);
  if (a.frames <= 0 || a.frames % 2 != 0 || a.rows <= 0 || a.rows % 8 != 0 || a.cols <= 0 || a.cols % 8 != 0)
    return "token grid " + std::to_string(a.frames) + "x" + std::to_string(a.rows) + "x" + std::to_string(a.cols) +
           ": expected even frames and rows, columns multiples of 8";
  if (a.qkv_row_stride < 3 * a.dim || a.qkv_row_stride % 8 != 0)
    return "qkv row stride " + std::to_string(a.qkv_row_stride) + ": expected >= 3 * dim and a multiple of 8";
  for (const void* p : {a.qkv, a.norm_q, a.norm_k, static_cast<const void*>(a.q_out), static_cast<const void*>(a.k_out),
                        static_cast<const void*>(a.v_out)})
    if (!aligned16(p)) return "a base pointer is not 16-byte aligned";
  const int64_t tokens = a.frames * a.rows * a.cols;
  if (tokens > 0x7fffffff) return "too many tokens for one launch: " + std::to_string(tokens);
  const int threads = static_cast<int>(((a.dim / 8 + 31) / 32) * 32);
  const dim3 grid(static_cast<unsigned>(tokens), 3);
  if (a.dtype == QkvDType::BFloat16)
    qkv_windows_kernel<__nv_bfloat16><<<grid, threads, 0, stream>>>(a);
  else
    qkv_windows_kernel<__half><<<grid, threads, 0, stream>>>(a);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? std::string() : std::string("launch failed: ") + cudaGetErrorString(e);
}

}  // namespace flashvsr::cuda
