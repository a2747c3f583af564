// SPDX-License-Identifier: LGPL-2.1-or-later
// The sub-pixel interleave of upsample_conv.h on CUDA: the plain C++ interface of
// phase_interleave_kernel.cu (no LibTorch: raw device pointers, sizes and the stream to launch on).
//
// y is [frames, h + 1, w + 1, 4 c] and out [frames, 2h, 2w, c], both dense channels-last (NHWC) with
// elements of `element_bytes` bytes; the copy moves bytes, so any 2- or 4-byte dtype works:
//   out[f, 2p + a, 2q + b, k] = y[f, p + a, q + b, (2a + b) c + k]     a, b in {0, 1}
// Requirements: c * element_bytes a multiple of 16, both pointers 16-byte aligned. The launch is
// asynchronous (CUDA-graph capturable).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace flashvsr::cuda {

struct PhaseInterleaveLaunch {
  const void* y = nullptr;
  void* out = nullptr;
  int64_t frames = 0, h = 0, w = 0, channels = 0, element_bytes = 2;
};

// Validates the arguments, then launches on `stream`. Returns "" on success, else what was wrong.
std::string launch_phase_interleave(const PhaseInterleaveLaunch& args, cudaStream_t stream);

}  // namespace flashvsr::cuda
