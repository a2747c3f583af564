// SPDX-License-Identifier: LGPL-2.1-or-later
// One thread per output value: its ksize taps along the resampled axis, in tap order.
#include "bicubic_kernel.h"

#include <algorithm>

namespace flashvsr::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kPrecisionBits = 22;

template <bool Floating>
__global__ void __launch_bounds__(kThreads) resample_pass_kernel(ResamplePassLaunch a) {
  const int64_t H2 = a.axis == 1 ? a.out_len : a.h, W2 = a.axis == 2 ? a.out_len : a.w;
  const int64_t total = a.n * H2 * W2 * a.channels;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % a.channels;
    int64_t r = i / a.channels;
    const int64_t x = r % W2;
    r /= W2;
    const int64_t y = r % H2;
    const int64_t f = r / H2;
    const int64_t j = a.axis == 1 ? y : x;
    const int64_t* idx = a.index + j * a.ksize;
    // Source offset of tap k: the resampled coordinate replaced by idx[k].
    const int64_t base = a.axis == 1 ? (f * a.h * a.w + x) * a.channels + c : (f * a.h + y) * a.w * a.channels + c;
    const int64_t step = a.axis == 1 ? a.w * a.channels : a.channels;
    if constexpr (Floating) {
      const float* in = static_cast<const float*>(a.in);
      const float* wt = static_cast<const float*>(a.weight) + j * a.ksize;
      float acc = 0.0f;
      for (int64_t k = 0; k < a.ksize; ++k) acc = __fadd_rn(acc, __fmul_rn(in[base + idx[k] * step], wt[k]));
      static_cast<float*>(a.out)[i] = acc;
    } else {
      const uint8_t* in = static_cast<const uint8_t*>(a.in);
      const int32_t* wt = static_cast<const int32_t*>(a.weight) + j * a.ksize;
      int32_t acc = int32_t(1) << (kPrecisionBits - 1);
      for (int64_t k = 0; k < a.ksize; ++k) acc += int32_t(in[base + idx[k] * step]) * wt[k];
      static_cast<uint8_t*>(a.out)[i] = static_cast<uint8_t>(min(max(acc >> kPrecisionBits, 0), 255));
    }
  }
}

}  // namespace

std::string launch_resample_pass(const ResamplePassLaunch& a, cudaStream_t stream) {
  if (!a.in || !a.out || !a.index || !a.weight) return "null pointer";
  if (a.axis != 1 && a.axis != 2) return "axis " + std::to_string(a.axis) + ", expected 1 (rows) or 2 (columns)";
  if (a.n < 0 || a.h < 1 || a.w < 1 || a.channels < 1 || a.out_len < 1 || a.ksize < 1) return "empty or negative sizes";
  const int64_t total = a.n * (a.axis == 1 ? a.out_len : a.h) * (a.axis == 2 ? a.out_len : a.w) * a.channels;
  if (total == 0) return "";
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 16);
  if (a.floating)
    resample_pass_kernel<true><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
  else
    resample_pass_kernel<false><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("launch failed: ") + cudaGetErrorString(e);
}

}  // namespace flashvsr::cuda
