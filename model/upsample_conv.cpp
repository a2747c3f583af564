// SPDX-License-Identifier: LGPL-2.1-or-later
#include "upsample_conv.h"

#include "error.h"

#if FLASHVSR_CUDA_KERNELS
#include "cuda/phase_interleave_kernel.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <optional>

namespace flashvsr {

namespace {

// fold[a][u][k]: how much 3x3 tap row k adds to 2x2 tap row u of phase a (columns alike).
at::Tensor tap_fold() {
  const float f[2][2][3] = {{{1, 0, 0}, {0, 1, 1}},   // a = 0: rows p - 1 (tap 0), p (taps 1 + 2)
                            {{1, 1, 0}, {0, 0, 1}}};  // a = 1: rows p (taps 0 + 1), p + 1 (tap 2)
  return at::from_blob(const_cast<float*>(&f[0][0][0]), {2, 2, 3}, at::kFloat).clone();
}

// Why the CUDA kernel does not interleave y (a [n, 4o, h + 1, w + 1] tensor); "" when it does.
std::string kernel_problem(const at::Tensor& y, int64_t o) {
#if FLASHVSR_CUDA_KERNELS
  if (!y.is_cuda()) return "not on CUDA";
  if (!y.is_contiguous(at::MemoryFormat::ChannelsLast)) return "not channels-last";
  if ((o * static_cast<int64_t>(y.element_size())) % 16 != 0 || (y.element_size() != 2 && y.element_size() != 4))
    return std::to_string(o) + " " + c10::toString(y.scalar_type()) + " channels are not whole 16-byte pieces";
  return "";
#else
  (void)y, (void)o;
  return "this build has no CUDA kernels";
#endif
}

}  // namespace

UpsampleConv UpsampleConv::fold(const at::Tensor& w, const at::Tensor& bias) {
  if (w.dim() != 4 || w.size(2) != 3 || w.size(3) != 3)
    throw Error(Error::Kind::Internal, "UpsampleConv::fold: kernel " + shape_string(w.sizes().vec()) + ", expected [o, i, 3, 3]");
  UpsampleConv c;
  c.out_channels = w.size(0);
  const at::Tensor r = tap_fold().to(w.device());
  // phases[a, b, o, i, u, v] = sum_kl r[a, u, k] r[b, v, l] w[o, i, k, l]
  const at::Tensor p = at::einsum("auk,bvl,oikl->aboiuv", {r, r, w.to(at::kFloat)});
  c.phases = p.reshape({4 * w.size(0), w.size(1), 2, 2}).to(w.scalar_type()).contiguous(w.suggest_memory_format());
  if (bias.defined()) c.bias = bias.repeat({4}).contiguous();
  return c;
}

std::string UpsampleConv::interleave_path(const at::Tensor& like) const {
  const at::Tensor probe = at::empty({1, 4 * out_channels, 2, 2}, like.options().memory_format(like.suggest_memory_format()));
  const std::string problem = kernel_problem(probe, out_channels);
  return problem.empty() ? "phase interleave kernel" : "strided copy (" + problem + ")";
}

at::Tensor interleave_phases(const at::Tensor& y, int64_t o) {
  if (y.dim() != 4 || y.size(1) != 4 * o || y.size(2) < 1 || y.size(3) < 1)
    throw Error(Error::Kind::Internal, "interleave_phases: " + shape_string(y.sizes().vec()) + " is not 4 phases of " +
                                           std::to_string(o) + " channels");
  const int64_t n = y.size(0), h = y.size(2) - 1, w = y.size(3) - 1;
  at::Tensor out = at::empty({n, o, 2 * h, 2 * w}, y.options().memory_format(y.suggest_memory_format()));
#if FLASHVSR_CUDA_KERNELS
  if (kernel_problem(y, o).empty()) {
    const c10::cuda::CUDAGuard guard(y.device());
    cuda::PhaseInterleaveLaunch a;
    a.y = y.data_ptr();
    a.out = out.data_ptr();
    a.frames = n, a.h = h, a.w = w, a.channels = o, a.element_bytes = static_cast<int64_t>(y.element_size());
    const std::string err = cuda::launch_phase_interleave(a, c10::cuda::getCurrentCUDAStream().stream());
    if (!err.empty()) throw Error(Error::Kind::Device, "phase interleave: " + err);
    return out;
  }
#endif
  // Both sides as [n, o, h, 2 (a), w, 2 (b)] views: out at (2p + a, 2q + b), y at channel (2a + b) o + k and
  // pixel (p + a, q + b) — offsets linear in every index, so one strided copy does it.
  const auto s = y.strides(), d = out.strides();
  const at::Tensor src = y.as_strided({n, o, h, 2, w, 2}, {s[0], s[1], s[2], 2 * o * s[1] + s[2], s[3], o * s[1] + s[3]},
                                      y.storage_offset());
  out.as_strided({n, o, h, 2, w, 2}, {d[0], d[1], 2 * d[2], d[2], 2 * d[3], d[3]}).copy_(src);
  return out;
}

at::Tensor upsample2x_conv3x3(const UpsampleConv& c, const at::Tensor& x, UpsampleConvEpilogue epilogue) {
  const std::optional<at::Tensor> bias = c.bias.defined() ? std::optional<at::Tensor>(c.bias) : std::nullopt;
  at::Tensor y;
  if (epilogue == UpsampleConvEpilogue::CudnnFusedRelu)
    y = at::cudnn_convolution_relu(x, c.phases, bias, {1, 1}, {1, 1}, {1, 1}, 1);  // ReLU commutes with the interleave
  else
    y = at::conv2d(x, c.phases, c.bias, {1, 1}, {1, 1});
  at::Tensor out = interleave_phases(y, c.out_channels);
  if (epilogue == UpsampleConvEpilogue::Relu) out.relu_();
  return out;
}

}  // namespace flashvsr
