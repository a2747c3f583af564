// SPDX-License-Identifier: LGPL-2.1-or-later
// flashvsr-bench-attention: times the block-sparse attention at the model's real shapes (12 heads x 128,
// masks from select_key_windows with the released settings: sparse ratio 2.0, local range 11) and prints
// one JSON object per line:
//   cuda-auto     block_sparse_attention_cuda() as the engine calls it (output allocation + the kernel,
//                 which builds its own key-window lists on the device)
//   hopper-wgmma, ampere-mma
//                 the launch of each kernel this build/device can run, prepared as the engine prepares it
//                 (prepare_block_sparse_attention) once into a preallocated output, then only launched
//   reference     the exact LibTorch reference backend (smallest shape only)
//   sdpa-dense    at::scaled_dot_product_attention over all keys (what the sparsity saves)
// TFLOP/s count sparse FLOPs (4 * 128^3 per selected (head, query window, key window)) for the
// block-sparse implementations and dense FLOPs for SDPA; speedup = SDPA time / time.
// Timing: CUDA events around each call, warm-up first, median of --reps runs (default 30) on random data.
//
// Usage: flashvsr-bench-attention [--reps N] [--only SHAPE]
#include "error.h"
#include "sparse_attention.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if FLASHVSR_CUDA_KERNELS
#include "cuda/attention_kernel.h"
#include "cuda/block_sparse_attention.h"

#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

namespace {

using namespace flashvsr;

struct Shape {
  const char* name;
  int64_t height, width;        // padded output size in pixels (DiT tokens are /16, windows /128)
  int64_t q_slices, k_slices;   // query slices against key slices (cache + current)
};

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(2);
  }
}

// Median milliseconds of `reps` calls of f after `warmup` calls, timed with events on the current stream.
template <class F>
double median_ms(F&& f, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) f();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(a, stream), "cudaEventRecord");
    f();
    check(cudaEventRecord(b, stream), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    t.push_back(ms);
  }
  check(cudaGetLastError(), "kernel");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// RMS-normalised per head with a random per-channel gain, like q/k after the model's RMSNorm.
at::Tensor qk_like(int64_t n, int64_t heads, at::Generator& g) {
  auto x = at::randn({n, 128, heads, 128}, g, at::kFloat);
  x = x / (x.pow(2).mean(-1, true) + 1e-6).sqrt();
  auto gain = at::rand({heads, 128}, g, at::kFloat) * 2.0 + 0.5;
  return (x * gain).view({n, 128, heads * 128}).to(at::kBFloat16).to(at::kCUDA);
}

void line(const Shape& s, int64_t nq, int64_t nk, int64_t heads, int64_t selected, const char* impl, double ms,
          double flops, const char* flop_kind, double sdpa_ms, double max_err) {
  std::printf(
      "{\"shape\": \"%s\", \"nq\": %lld, \"nk\": %lld, \"heads\": %lld, \"selected\": %lld, \"density\": %.4f, "
      "\"impl\": \"%s\", \"ms\": %.4f, \"tflops\": %.1f, \"flops\": \"%s\", \"speedup_vs_sdpa\": %.2f",
      s.name, static_cast<long long>(nq), static_cast<long long>(nk), static_cast<long long>(heads),
      static_cast<long long>(selected), static_cast<double>(selected) / static_cast<double>(heads * nq * nk), impl, ms,
      flops / (ms * 1e-3) / 1e12, flop_kind, sdpa_ms / ms);
  if (max_err >= 0) std::printf(", \"max_abs_err_vs_reference\": %.3g", max_err);
  std::printf("}\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 30;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--reps N] [--only SHAPE]\n", argv[0]);
      return 2;
    }
  }
  if (!at::hasCUDA()) {
    std::printf("{\"error\": \"no CUDA device\"}\n");
    return 1;
  }
  c10::InferenceMode inference;
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::string err;
  const auto auto_kernel = cuda::resolve_attention_kernel(cuda::AttentionKernel::Auto, &err);
  std::printf("{\"device\": \"%s\", \"sm\": \"%d.%d\", \"sms\": %d, \"auto_kernel\": \"%s\"%s%s%s}\n", prop.name,
              prop.major, prop.minor, prop.multiProcessorCount, cuda::attention_kernel_name(auto_kernel),
              err.empty() ? "" : ", \"error\": \"", err.c_str(), err.empty() ? "" : "\"");

  const Shape shapes[] = {
      {"768x1408-slice", 768, 1408, 1, 4},   // steady state: one query slice, 3 cached + current key slices
      {"768x1408-chunk0", 768, 1408, 3, 3},  // first chunk: 3 slices attending to each other
      {"1920x1080", 1152, 1920, 1, 4},       // padded to 1152x1920
      {"3840x2160", 2176, 3840, 1, 4},       // padded to 2176x3840
  };
  const int64_t heads = 12;
  auto g = at::make_generator<at::CPUGeneratorImpl>(1234);
  bool first = true;
  for (const auto& s : shapes) {
    if (!only.empty() && only != s.name) continue;
    const int64_t rows = s.height / 128, cols = s.width / 128, per_slice = rows * cols;
    const int64_t nq = s.q_slices * per_slice, nk = s.k_slices * per_slice;
    auto q = qk_like(nq, heads, g), k = qk_like(nk, heads, g);
    auto v = at::randn({nk, 128, heads * 128}, g, at::kFloat).to(at::kBFloat16).to(at::kCUDA);
    auto local = local_window_mask(rows, cols, 11).to(at::kCUDA);
    const int64_t topk = topk_for(per_slice, topk_ratio_for(2.0, s.height, s.width));
    auto mask = select_key_windows(q, k, heads, per_slice, local, topk);
    const int64_t selected = mask.sum().item<int64_t>();
    const double sparse_flops = 4.0 * 128.0 * 128.0 * 128.0 * static_cast<double>(selected);
    const double dense_flops = 4.0 * static_cast<double>(nq * 128) * static_cast<double>(nk * 128) * 128.0 * heads;
    const int warmup = 3;

    // Dense SDPA over all keys: [1, heads, tokens, 128] contiguous (layout change outside the timing).
    auto to_bhld = [&](const at::Tensor& t) {
      return t.view({-1, heads, 128}).permute({1, 0, 2}).unsqueeze(0).contiguous();
    };
    auto q4 = to_bhld(q), k4 = to_bhld(k), v4 = to_bhld(v);
    const double sdpa_ms = median_ms([&] { (void)at::scaled_dot_product_attention(q4, k4, v4); }, warmup, reps);
    q4 = k4 = v4 = at::Tensor();

    at::Tensor ref;
    if (first) {
      ref = block_sparse_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), mask, heads,
                                   AttentionBackend::Reference);
      const double ref_ms = median_ms(
          [&] { (void)block_sparse_attention(q, k, v, mask, heads, AttentionBackend::Reference); }, 1,
          std::min(reps, 5));
      line(s, nq, nk, heads, selected, "reference", ref_ms, sparse_flops, "sparse", sdpa_ms, -1);
    }
    auto err_vs_ref = [&](const at::Tensor& out) {
      return ref.defined() ? (out.to(at::kFloat) - ref).abs().max().item<double>() : -1.0;
    };

    const double auto_ms = median_ms([&] { (void)block_sparse_attention_cuda(q, k, v, mask, heads, cuda::AttentionKernel::Auto); },
                                     warmup, reps);
    line(s, nq, nk, heads, selected, "cuda-auto", auto_ms, sparse_flops, "sparse", sdpa_ms,
         err_vs_ref(block_sparse_attention_cuda(q, k, v, mask, heads, cuda::AttentionKernel::Auto)));

    for (auto kern : {cuda::AttentionKernel::Hopper, cuda::AttentionKernel::Ampere}) {
      std::string why;
      cuda::resolve_attention_kernel(kern, &why);
      if (!why.empty()) {
        std::printf("{\"shape\": \"%s\", \"impl\": \"%s\", \"skipped\": \"%s\"}\n", s.name,
                    cuda::attention_kernel_name(kern), why.c_str());
        continue;
      }
      // The engine's launch (block_sparse_attention_cuda prepares it the same way), built once into a
      // preallocated output: only the kernel launches are timed.
      const BlockSparseAttentionLaunch launch = prepare_block_sparse_attention(q, k, v, mask, heads, kern);
      const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
      const double ms = median_ms(
          [&] {
            const std::string e = cuda::launch_block_sparse_attention(launch.args, stream);
            if (!e.empty()) {
              std::fprintf(stderr, "%s\n", e.c_str());
              std::exit(2);
            }
          },
          warmup, reps);
      line(s, nq, nk, heads, selected, cuda::attention_kernel_name(kern), ms, sparse_flops, "sparse", sdpa_ms,
           err_vs_ref(launch.out));
    }
    line(s, nq, nk, heads, selected, "sdpa-dense", sdpa_ms, dense_flops, "dense", sdpa_ms, -1);
    first = false;
  }
  return 0;
}

#else  // !FLASHVSR_CUDA_KERNELS

int main() {
  std::printf("{\"error\": \"built without the CUDA kernels (gpu_kernels / nvcc / CUDA LibTorch)\"}\n");
  return 1;
}

#endif
