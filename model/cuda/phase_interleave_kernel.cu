// SPDX-License-Identifier: LGPL-2.1-or-later
// One thread per 16 bytes of an output row: the output pixel (f, Y, X) of phase (Y mod 2, X mod 2) reads its
// c channels from one pixel of y, at that phase's channel block. Both sides are read and written in
// consecutive 16-byte pieces along the channels, so a warp moves whole 512-byte spans.
#include "phase_interleave_kernel.h"

#include <algorithm>
#include <cstdint>

namespace flashvsr::cuda {

namespace {

constexpr int kThreads = 256;

// blockIdx.y walks the output rows (f, Y); the threads of a row walk its (X, piece) pairs, so all index
// arithmetic within a row is 32-bit.
__global__ void __launch_bounds__(kThreads) phase_interleave_kernel(const uint4* __restrict__ y, uint4* __restrict__ out,
                                                                    int64_t out_rows, int h, int w,
                                                                    int pieces /* 16-byte pieces per c channels */) {
  const int row_pieces = 2 * w * pieces;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= row_pieces) return;
  const int k = j % pieces, X = j / pieces;
  const int b = X & 1, q = X >> 1;
  for (int64_t row = blockIdx.y; row < out_rows; row += gridDim.y) {
    const int64_t f = row / (2 * h);
    const int Y = static_cast<int>(row - f * 2 * h);
    const int a = Y & 1, p = Y >> 1;
    // y pixel (f, p + a, q + b), channel block 2a + b of 4.
    const int64_t src = ((f * (h + 1) + p + a) * (w + 1) + q + b) * 4 * pieces + (2 * a + b) * pieces + k;
    out[row * row_pieces + j] = __ldg(y + src);
  }
}

}  // namespace

std::string launch_phase_interleave(const PhaseInterleaveLaunch& a, cudaStream_t stream) {
  if (!a.y || !a.out) return "null pointer";
  if (a.frames < 0 || a.h < 0 || a.w < 0 || a.channels <= 0) return "negative or empty sizes";
  if (a.element_bytes != 2 && a.element_bytes != 4) return "element size " + std::to_string(a.element_bytes) + ", expected 2 or 4 bytes";
  const int64_t row_bytes = a.channels * a.element_bytes;
  if (row_bytes % 16 != 0) return std::to_string(a.channels) + " channels are not a multiple of 16 bytes";
  if (reinterpret_cast<uintptr_t>(a.y) % 16 != 0 || reinterpret_cast<uintptr_t>(a.out) % 16 != 0)
    return "a pointer is not 16-byte aligned";
  const int64_t pieces = row_bytes / 16, row_pieces = 2 * a.w * pieces, out_rows = a.frames * 2 * a.h;
  if (row_pieces >= (int64_t(1) << 30) || a.h >= (1 << 29)) return "a row of " + std::to_string(a.w) + " pixels is too long";
  if (out_rows == 0 || row_pieces == 0) return "";
  const dim3 grid(static_cast<unsigned>((row_pieces + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min<int64_t>(out_rows, 65535)));
  phase_interleave_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const uint4*>(a.y), static_cast<uint4*>(a.out),
                                                         out_rows, static_cast<int>(a.h), static_cast<int>(a.w),
                                                         static_cast<int>(pieces));
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("launch failed: ") + cudaGetErrorString(e);
}

}  // namespace flashvsr::cuda
