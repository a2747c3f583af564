// SPDX-License-Identifier: LGPL-2.1-or-later
// The CUDA block-sparse attention kernels against the reference implementation: random RMS-normalised
// inputs, masks from empty to dense, both 16-bit dtypes, every kernel this build and device can run;
// empty query windows give exact zeros; results are deterministic; a launch can be captured in a CUDA graph
// (no host synchronisation). Skipped without CUDA kernels in the build or without a GPU.
#include "sparse_attention.h"

#include "error.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#if FLASHVSR_CUDA_KERNELS
#include "cuda/attention_kernel.h"
#include "cuda/block_sparse_attention.h"

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

using namespace flashvsr;

namespace {

#define SKIP_WITHOUT_GPU()                                              \
  do {                                                                  \
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device on this machine"; \
  } while (0)

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// Like real q/k after RMSNorm with a learned gain: per head, unit RMS times a per-channel gain in
// [0.5, 2.5] * sharpness, so q.k/sqrt(128) spreads over O(1..10) (O(10..50) with sharpness 3).
at::Tensor qk_like(int64_t n, int64_t heads, uint64_t seed, at::ScalarType dt, double sharpness = 1.0) {
  auto g = gen(seed);
  auto x = at::randn({n, 128, heads, 128}, g, at::kFloat);
  x = x / (x.pow(2).mean(-1, /*keepdim=*/true) + 1e-6).sqrt();
  auto gain = (at::rand({heads, 128}, g, at::kFloat) * 2.0 + 0.5) * sharpness;
  return (x * gain).view({n, 128, heads * 128}).to(dt).to(at::kCUDA);
}
at::Tensor values(int64_t n, int64_t heads, uint64_t seed, at::ScalarType dt) {
  auto g = gen(seed);
  return at::randn({n, 128, heads * 128}, g, at::kFloat).to(dt).to(at::kCUDA);
}
// Bernoulli(density) mask; density 1 gives a full mask.
at::Tensor random_mask(int64_t heads, int64_t nq, int64_t nk, double density, uint64_t seed) {
  auto g = gen(seed);
  return (at::rand({heads, nq, nk}, g, at::kFloat) < density).to(at::kCUDA);
}

// The kernels this build can run on this device (Auto first).
std::vector<cuda::AttentionKernel> runnable_kernels() {
  std::vector<cuda::AttentionKernel> ks;
  for (auto k : {cuda::AttentionKernel::Auto, cuda::AttentionKernel::Hopper, cuda::AttentionKernel::Ampere}) {
    std::string err;
    cuda::resolve_attention_kernel(k, &err);
    if (err.empty()) ks.push_back(k);
    else if (k != cuda::AttentionKernel::Auto) std::cout << "[ info     ] " << cuda::attention_kernel_name(k) << " not run: " << err << "\n";
  }
  return ks;
}

// Makes the caching allocator hand out NaN-filled memory next, so outputs the kernel fails to write show.
void poison_next_allocation(int64_t nq, int64_t dim, at::ScalarType dt) {
  auto p = at::full({nq, 128, dim}, std::numeric_limits<float>::quiet_NaN(), at::TensorOptions().dtype(dt).device(at::kCUDA));
  (void)p;
}

at::Tensor run_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                      int64_t heads, cuda::AttentionKernel kernel) {
  poison_next_allocation(q.size(0), q.size(2), q.scalar_type());
  return block_sparse_attention_cuda(q, k, v, mask, heads, kernel);
}

// Exact reference in float32 from the same 16-bit values.
at::Tensor reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     int64_t heads) {
  return block_sparse_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), mask, heads,
                                AttentionBackend::Reference);
}

// out vs ref (both [nq, 128, dim]); on failure names the worst element (window, token, head, channel).
::testing::AssertionResult close_to_reference(const at::Tensor& out, const at::Tensor& ref, double tol,
                                               double rel_l2_tol) {
  auto o = out.to(at::kFloat).cpu(), r = ref.to(at::kFloat).cpu();
  if (!o.sizes().equals(r.sizes()))
    return ::testing::AssertionFailure() << "shape " << shape_string(o.sizes().vec()) << " vs reference "
                                         << shape_string(r.sizes().vec());
  const int64_t nonfinite = o.isfinite().logical_not().sum().item<int64_t>();
  auto d = (o - r).abs();
  d = at::where(o.isfinite(), d, at::full({}, std::numeric_limits<float>::infinity()));
  const int64_t worst = d.argmax().item<int64_t>();
  const double max_abs = d.view(-1)[worst].item<double>();
  const double scale = std::max(r.abs().max().item<double>(), 1e-6);
  const double rel_l2 = ((o - r).norm().item<double>()) / std::max(r.norm().item<double>(), 1e-12);
  if (nonfinite == 0 && max_abs <= tol * scale && rel_l2 <= rel_l2_tol)
    return ::testing::AssertionSuccess() << "max abs err " << max_abs << " (scale " << scale << "), rel l2 " << rel_l2;
  const int64_t dim = o.size(2), win = worst / (128 * dim), tok = (worst / dim) % 128, ch = worst % dim;
  return ::testing::AssertionFailure() << nonfinite << " non-finite outputs; max abs err " << max_abs << " > "
                                       << tol << " * " << scale << " or rel l2 " << rel_l2 << " > " << rel_l2_tol
                                       << "; worst at window " << win << ", token " << tok << ", head "
                                       << ch / 128 << ", channel " << ch % 128 << ": kernel "
                                       << o.view(-1)[worst].item<double>() << ", reference "
                                       << r.view(-1)[worst].item<double>();
}

// Query windows of some head that select nothing must be exactly zero in that head's channels.
::testing::AssertionResult empty_rows_are_zero(const at::Tensor& out, const at::Tensor& mask) {
  auto m = mask.cpu();
  auto o = out.to(at::kFloat).cpu();
  const int64_t heads = m.size(0), nq = m.size(1);
  auto counts = m.sum(-1);  // [heads, nq]
  int64_t empty = 0;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < nq; ++i) {
      if (counts[h][i].item<int64_t>() != 0) continue;
      ++empty;
      auto blk = o[i].narrow(1, h * 128, 128);
      const int64_t nz = blk.ne(0).sum().item<int64_t>();
      if (nz != 0)
        return ::testing::AssertionFailure() << "head " << h << ", query window " << i << " selects nothing but has "
                                             << nz << " nonzero outputs (e.g. " << blk.abs().max().item<double>() << ")";
    }
  return ::testing::AssertionSuccess() << empty << " empty (head, query window) pairs";
}

struct Case {
  int64_t nq, nk, heads;
  double density;
  at::ScalarType dtype;
  double sharpness;
};

std::string describe(const Case& c, cuda::AttentionKernel k) {
  std::ostringstream s;
  s << "nq " << c.nq << ", nk " << c.nk << ", heads " << c.heads << ", density " << c.density << ", "
    << c.dtype << ", sharpness " << c.sharpness << ", kernel " << cuda::attention_kernel_name(k);
  return s.str();
}

void check_case(const Case& c, uint64_t seed, bool blank_rows) {
  c10::InferenceMode guard;
  auto q = qk_like(c.nq, c.heads, seed, c.dtype, c.sharpness);
  auto k = qk_like(c.nk, c.heads, seed + 1, c.dtype, c.sharpness);
  auto v = values(c.nk, c.heads, seed + 2, c.dtype);
  auto mask = random_mask(c.heads, c.nq, c.nk, c.density, seed + 3);
  if (blank_rows) {
    // Every 3rd query window of head 0 and the last query window of every head select nothing.
    mask[0].index_fill_(0, at::arange(0, c.nq, 3, at::kLong).to(at::kCUDA), false);
    mask.select(1, c.nq - 1).fill_(false);
  }
  const auto ref = reference(q, k, v, mask, c.heads);
  for (auto kern : runnable_kernels()) {
    SCOPED_TRACE(describe(c, kern));
    const auto out = run_kernel(q, k, v, mask, c.heads, kern);
    ASSERT_EQ(out.scalar_type(), c.dtype);
    EXPECT_TRUE(close_to_reference(out, ref, 2e-2, 1e-2));
    EXPECT_TRUE(empty_rows_are_zero(out, mask));
  }
}

}  // namespace

TEST(CudaAttention, MatchesReferenceOnRandomMasks) {
  SKIP_WITHOUT_GPU();
  const std::vector<Case> cases = {
      {1, 1, 1, 1.0, at::kBFloat16, 1.0},     // one window against one window
      {5, 7, 1, 0.5, at::kBFloat16, 1.0},     // one head
      {13, 29, 2, 0.1, at::kHalf, 1.0},       // sparse, fp16
      {37, 53, 3, 0.5, at::kBFloat16, 1.0},   // odd sizes
      {24, 40, 12, 1.0, at::kBFloat16, 1.0},  // dense, all 12 heads
      {11, 19, 4, 0.5, at::kHalf, 3.0},       // sharp scores (up to ~50): online-softmax rescaling
      {50, 300, 2, 0.1, at::kHalf, 1.0},      // long key lists
      {66, 264, 12, 0.45, at::kBFloat16, 1.0},  // 768x1408, one query slice against 4 key slices
  };
  uint64_t seed = 100;
  for (const auto& c : cases) {
    check_case(c, seed, /*blank_rows=*/false);
    seed += 10;
  }
}

TEST(CudaAttention, EmptySelectionsGiveExactZeros) {
  SKIP_WITHOUT_GPU();
  check_case({23, 31, 3, 0.5, at::kBFloat16, 1.0}, 7, /*blank_rows=*/true);
  check_case({9, 12, 2, 0.1, at::kHalf, 1.0}, 8, /*blank_rows=*/true);
  // A mask with nothing selected at all, and no key windows at all.
  c10::InferenceMode guard;
  auto q = qk_like(4, 2, 1, at::kBFloat16), k = qk_like(6, 2, 2, at::kBFloat16), v = values(6, 2, 3, at::kBFloat16);
  auto none = at::zeros({2, 4, 6}, at::TensorOptions().dtype(at::kBool).device(at::kCUDA));
  auto k0 = k.narrow(0, 0, 0), v0 = v.narrow(0, 0, 0);
  auto none0 = none.narrow(2, 0, 0);
  for (auto kern : runnable_kernels()) {
    SCOPED_TRACE(cuda::attention_kernel_name(kern));
    EXPECT_TRUE(run_kernel(q, k, v, none, 2, kern).eq(0).all().item<bool>());
    EXPECT_TRUE(run_kernel(q, k0, v0, none0, 2, kern).eq(0).all().item<bool>());
  }
}

TEST(CudaAttention, RealisticSelectionAt768x1408) {
  SKIP_WITHOUT_GPU();
  c10::InferenceMode guard;
  // 768x1408 output: 6 x 11 windows per slice; one query slice against 4 cached + current key slices.
  const int64_t rows = 6, cols = 11, per_slice = rows * cols, heads = 12, nq = per_slice, nk = 4 * per_slice;
  auto q = qk_like(nq, heads, 21, at::kBFloat16), k = qk_like(nk, heads, 22, at::kBFloat16);
  auto v = values(nk, heads, 23, at::kBFloat16);
  auto local = local_window_mask(rows, cols, 11).to(at::kCUDA);
  const int64_t topk = topk_for(per_slice, topk_ratio_for(2.0, 768, 1408));
  auto mask = select_key_windows(q, k, heads, per_slice, local, topk);
  const double density = mask.to(at::kFloat).mean().item<double>();
  EXPECT_GT(density, 0.2);
  const auto ref = reference(q, k, v, mask, heads);
  for (auto kern : runnable_kernels()) {
    SCOPED_TRACE(std::string(cuda::attention_kernel_name(kern)) + ", density " + std::to_string(density));
    const auto out = run_kernel(q, k, v, mask, heads, kern);
    EXPECT_TRUE(close_to_reference(out, ref, 2e-2, 1e-2));
    EXPECT_TRUE(empty_rows_are_zero(out, mask));
  }
  // The public entry point picks the kernel on CUDA tensors.
  EXPECT_TRUE(close_to_reference(block_sparse_attention(q, k, v, mask, heads, AttentionBackend::Cuda), ref, 2e-2, 1e-2));
  EXPECT_TRUE(close_to_reference(block_sparse_attention(q, k, v, mask, heads, AttentionBackend::Auto), ref, 2e-2, 1e-2));
}

TEST(CudaAttention, StridedInputsAreReadInPlaceOrCopied) {
  SKIP_WITHOUT_GPU();
  c10::InferenceMode guard;
  const int64_t nq = 9, nk = 14, heads = 2, dim = heads * 128;
  // q, k, v as channel slices of wider [n, 128, 2 * dim] tensors (row stride 2 * dim), and a transposed
  // mask view: all must give the contiguous result.
  auto qw = qk_like(nq, 2 * heads, 31, at::kBFloat16), kw = qk_like(nk, 2 * heads, 32, at::kBFloat16);
  auto vw = values(nk, 2 * heads, 33, at::kBFloat16);
  auto q = qw.narrow(2, dim, dim), k = kw.narrow(2, 0, dim), v = vw.narrow(2, dim, dim);
  auto mask = random_mask(heads, nk, nq, 0.5, 34).transpose(1, 2);
  const auto ref = reference(q, k, v, mask, heads);
  for (auto kern : runnable_kernels()) {
    SCOPED_TRACE(cuda::attention_kernel_name(kern));
    const auto strided = run_kernel(q, k, v, mask, heads, kern);
    EXPECT_TRUE(close_to_reference(strided, ref, 2e-2, 1e-2));
    const auto contiguous = run_kernel(q.contiguous(), k.contiguous(), v.contiguous(), mask.contiguous(), heads, kern);
    EXPECT_TRUE(at::equal(strided, contiguous));
  }
}

TEST(CudaAttention, IsDeterministic) {
  SKIP_WITHOUT_GPU();
  c10::InferenceMode guard;
  const int64_t nq = 40, nk = 120, heads = 12;
  auto q = qk_like(nq, heads, 41, at::kBFloat16), k = qk_like(nk, heads, 42, at::kBFloat16);
  auto v = values(nk, heads, 43, at::kBFloat16);
  auto mask = random_mask(heads, nq, nk, 0.4, 44);
  for (auto kern : runnable_kernels()) {
    SCOPED_TRACE(cuda::attention_kernel_name(kern));
    const auto a = run_kernel(q, k, v, mask, heads, kern);
    const auto b = run_kernel(q, k, v, mask, heads, kern);
    EXPECT_TRUE(at::equal(a, b));
  }
}

TEST(CudaAttention, CapturesInACudaGraphWithoutHostSync) {
  SKIP_WITHOUT_GPU();
  c10::InferenceMode guard;
  const int64_t nq = 30, nk = 90, heads = 4;
  auto q = qk_like(nq, heads, 51, at::kBFloat16), k = qk_like(nk, heads, 52, at::kBFloat16);
  auto v = values(nk, heads, 53, at::kBFloat16);
  auto mask = random_mask(heads, nq, nk, 0.3, 54);
  for (auto kern : runnable_kernels()) {
    SCOPED_TRACE(cuda::attention_kernel_name(kern));
    (void)block_sparse_attention_cuda(q, k, v, mask, heads, kern);  // warm-up outside the capture
    at::cuda::CUDAGraph graph;
    at::Tensor out;
    {
      c10::cuda::CUDAStreamGuard side(c10::cuda::getStreamFromPool());
      graph.capture_begin();
      out = block_sparse_attention_cuda(q, k, v, mask, heads, kern);
      graph.capture_end();
    }
    // New inputs in the captured buffers, then replay: the graph must compute on them.
    q.copy_(qk_like(nq, heads, 61, at::kBFloat16));
    k.copy_(qk_like(nk, heads, 62, at::kBFloat16));
    v.copy_(values(nk, heads, 63, at::kBFloat16));
    mask.copy_(random_mask(heads, nq, nk, 0.6, 64));
    graph.replay();
    c10::cuda::getCurrentCUDAStream().synchronize();
    const auto eager = block_sparse_attention_cuda(q, k, v, mask, heads, kern);
    EXPECT_TRUE(at::equal(out, eager));
    EXPECT_TRUE(close_to_reference(out, reference(q, k, v, mask, heads), 2e-2, 1e-2));
  }
}

TEST(CudaAttention, RejectsWhatItCannotRun) {
  SKIP_WITHOUT_GPU();
  c10::InferenceMode guard;
  auto q = qk_like(3, 2, 1, at::kBFloat16), k = qk_like(5, 2, 2, at::kBFloat16), v = values(5, 2, 3, at::kBFloat16);
  auto mask = random_mask(2, 3, 5, 0.5, 4);
  auto kind = [&](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.kind();
    }
    return Error::Kind::Internal;  // nothing thrown
  };
  const auto Auto = cuda::AttentionKernel::Auto;
  EXPECT_EQ(kind([&] { block_sparse_attention_cuda(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), mask, 2, Auto); }),
            Error::Kind::BadSettings);
  EXPECT_EQ(kind([&] { block_sparse_attention_cuda(q.cpu(), k.cpu(), v.cpu(), mask.cpu(), 2, Auto); }),
            Error::Kind::BadSettings);
  EXPECT_EQ(kind([&] { block_sparse_attention_cuda(q, k, v, mask, 3, Auto); }), Error::Kind::BadInput);
  EXPECT_EQ(kind([&] { block_sparse_attention_cuda(q, k, v.narrow(0, 0, 4), mask, 2, Auto); }), Error::Kind::BadInput);
  EXPECT_EQ(kind([&] { block_sparse_attention_cuda(q, k, v, mask.to(at::kFloat), 2, Auto); }), Error::Kind::BadInput);
  EXPECT_EQ(kind([&] { block_sparse_attention_cuda(q, k.to(at::kHalf), v, mask, 2, Auto); }), Error::Kind::BadInput);
}

#else  // !FLASHVSR_CUDA_KERNELS

TEST(CudaAttention, NotInThisBuild) { GTEST_SKIP() << "built without the CUDA kernels (gpu_kernels / nvcc / CUDA LibTorch)"; }

#endif
