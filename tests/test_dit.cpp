// SPDX-License-Identifier: LGPL-2.1-or-later
// RoPE and the DiT's streaming behaviour (KV cache, constants). Numerical parity with the reference is
// proven by flashvsr-parity on the fixtures.
#include "dit.h"
#include "engine.h"
#include "model_maker.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <cmath>

using namespace flashvsr;

namespace {

std::shared_ptr<const Model> model() {
  static auto m = Model::from_tensors(make_random_model(ModelSpec::tiny(), 21), LoadOptions{});
  return m;
}

}  // namespace

TEST(Rope, TableHoldsTemporalThenRowThenColumnAngles) {
  Rope rope(128, 3, 5, at::kCPU);
  auto t = rope.table(7, 2);
  ASSERT_EQ(t.cos.sizes().vec(), (std::vector<int64_t>{2 * 3 * 5, 1, 64}));
  // token (f=1, h=2, w=4): pair 1 is temporal (dims 44), pair 22 the first row pair, pair 43 the first column pair.
  const int64_t tok = (1 * 3 + 2) * 5 + 4;
  EXPECT_NEAR(t.cos[tok][0][1].item<float>(), std::cos(8.0 / std::pow(10000.0, 2.0 / 44)), 1e-6);
  EXPECT_NEAR(t.sin[tok][0][22].item<float>(), std::sin(2.0), 1e-6);
  EXPECT_NEAR(t.sin[tok][0][22 + 21].item<float>(), std::sin(4.0), 1e-6);
  EXPECT_NEAR(t.cos[tok][0][22 + 22].item<float>(), std::cos(4.0 / std::pow(10000.0, 2.0 / 42)), 1e-6);
}

// Steady chunks reuse one buffer (fixed addresses for a CUDA graph) and its rows are those of the position.
TEST(Rope, WrittenTableKeepsItsStorageAndHoldsTheAnglesOfItsPosition) {
  Rope rope(128, 3, 5, at::kCPU);
  RopeTable t;
  rope.write_table(0, 6, t);  // chunk 0: 6 latent frames
  rope.write_table(6, 2, t);  // the first steady chunk: a buffer of 2 frames' rows
  const void* cos = t.cos.data_ptr();
  const void* rot = t.rot.data_ptr();
  for (int64_t first : {8, 10, 1000}) {
    rope.write_table(first, 2, t);
    EXPECT_EQ(t.cos.data_ptr(), cos);
    EXPECT_EQ(t.rot.data_ptr(), rot);
    // token (f=1, h=2, w=4), temporal pair 1: the angle of frame first + 1 (as in the test above).
    const int64_t tok = (1 * 3 + 2) * 5 + 4;
    const double angle = static_cast<double>(first + 1) / std::pow(10000.0, 2.0 / 44);
    EXPECT_NEAR(t.cos[tok][0][1].item<float>(), std::cos(angle), 1e-5) << "first frame " << first;
    EXPECT_NEAR(t.sin[tok][0][1].item<float>(), std::sin(angle), 1e-5) << "first frame " << first;
    EXPECT_NEAR(at::imag(t.rot)[tok][0][1].item<float>(), std::sin(angle), 1e-5) << "first frame " << first;
  }
}

TEST(Rope, DotProductsDependOnlyOnPositionDifferences) {
  c10::InferenceMode guard;
  Rope rope(128, 2, 2, at::kCPU);
  auto q = test::seeded_randn({8, 1, 128}, 1), k = test::seeded_randn({8, 1, 128}, 2);
  auto scores = [&](int64_t offset) {
    auto tq = rope.table(10 + offset, 2), tk = rope.table(3 + offset, 2);
    return at::matmul(apply_rope(q, tq).squeeze(1), apply_rope(k, tk).squeeze(1).t());
  };
  // Shifting every position by the same amount leaves attention unchanged: positions may be rebased.
  EXPECT_TRUE(at::allclose(scores(0), scores(1000), 1e-4, 1e-4));
  EXPECT_TRUE(at::allclose(scores(0), scores(123457), 1e-3, 1e-3));
}

TEST(Rope, PreservesNorms) {
  c10::InferenceMode guard;
  Rope rope(128, 4, 4, at::kCPU);
  auto x = test::seeded_randn({32, 2, 128}, 3);
  auto y = apply_rope(x, rope.table(5, 2));
  EXPECT_TRUE(at::allclose(x.norm(2, {-1}), y.norm(2, {-1}), 1e-5, 1e-5));
}

TEST(DitConstants, PromptKeysAndValuesAreComputedOncePerModel) {
  auto m = model();
  const auto& c = m->dit_constants();
  ASSERT_EQ(c.blocks.size(), 2u);
  EXPECT_EQ(c.blocks[0].cross_k.sizes().vec(), (std::vector<int64_t>{1, 2, 16, 128}));
  EXPECT_EQ(c.blocks[0].scale1.sizes().vec(), (std::vector<int64_t>{256}));
}

TEST(Dit, KvCacheKeepsAtMostKvRatioSlices) {
  c10::InferenceMode guard;
  auto m = model();
  for (int64_t kv_slices : {1, 2, 3}) {
    SparseAttentionSettings s;
    s.topk_ratio = 2.0;
    s.local_range = 3;
    s.kv_slices = kv_slices;
    auto plan = AttentionPlan::make(s, 1, 2, at::kCPU);  // 128 x 256 pixels: 1 x 2 windows per slice
    Rope rope(128, 8, 16, at::kCPU);
    DitState st;
    auto lat0 = test::seeded_randn({1, 16, 6, 16, 32}, 4);
    auto out0 = dit_forward(m->dit(), m->dit_constants(), st, lat0, {}, rope.table(0, 6), plan);
    EXPECT_EQ(out0.sizes(), lat0.sizes());
    const int64_t ws = 2;
    ASSERT_EQ(st.blocks.size(), 2u);
    // Chunk 0 holds 3 slices, and drops at most one per chunk.
    EXPECT_EQ(st.blocks[0].held, std::min<int64_t>(3, std::max<int64_t>(kv_slices, 2)));
    const void* ring = st.blocks[1].k.data_ptr();
    for (int c = 1; c < 4; ++c) {
      auto lat = test::seeded_randn({1, 16, 2, 16, 32}, 5 + c);
      dit_forward(m->dit(), m->dit_constants(), st, lat, {}, rope.table(4 + 2 * c, 2), plan);
      EXPECT_LE(st.blocks[1].held, std::max<int64_t>(kv_slices, 1) + 1);
      EXPECT_EQ(st.blocks[1].held_in_time_order(st.blocks[1].k).size(0), st.blocks[1].held * ws);
      // The ring of max(3, max(kv, 2) + 1) slices is allocated once: steady chunks write into it.
      EXPECT_EQ(st.blocks[1].capacity(), std::max<int64_t>(3, std::max<int64_t>(kv_slices, 2) + 1));
      EXPECT_EQ(st.blocks[1].k.data_ptr(), ring) << "chunk " << c;
    }
    EXPECT_EQ(st.blocks[0].held, std::max<int64_t>(kv_slices, 2)) << "kv_slices " << kv_slices;
  }
}

// The ring's slot order is not time order once it wraps. The same held slices copied into a fresh ring in
// time order (no wrap) must give the same next chunk, and the slices held must be the ones the last chunks
// wrote: the newest slot after chunk c still holds chunk c's keys two chunks later.
TEST(Dit, KvRingGivesTheSameChunkAsTheHeldSlicesInTimeOrder) {
  c10::InferenceMode guard;
  auto m = model();
  SparseAttentionSettings s;
  s.topk_ratio = 2.0;
  s.local_range = 3;
  s.kv_slices = 3;
  auto plan = AttentionPlan::make(s, 1, 2, at::kCPU);
  Rope rope(128, 8, 16, at::kCPU);
  const int64_t ws = 2;
  DitState st;
  dit_forward(m->dit(), m->dit_constants(), st, test::seeded_randn({1, 16, 6, 16, 32}, 61), {}, rope.table(0, 6), plan);
  std::vector<at::Tensor> newest;  // block 0's keys of each steady chunk's slice, right after it
  for (int c = 1; c <= 3; ++c) {
    dit_forward(m->dit(), m->dit_constants(), st, test::seeded_randn({1, 16, 2, 16, 32}, 61 + c), {}, rope.table(4 + 2 * c, 2), plan);
    const auto& kc = st.blocks[0];
    newest.push_back(kc.k.narrow(0, ((kc.first + kc.held - 1) % kc.capacity()) * ws, ws).clone());
  }
  ASSERT_EQ(st.blocks[0].held, 3);
  ASSERT_NE(st.blocks[0].first, 0) << "the ring has wrapped";
  const at::Tensor k_held = st.blocks[0].held_in_time_order(st.blocks[0].k);
  for (int c = 0; c < 3; ++c) EXPECT_TRUE(at::equal(k_held.narrow(0, c * ws, ws), newest[c])) << "slice of chunk " << c + 1;
  // The kept key means are the means of the held keys (computed once, when each slice was written).
  EXPECT_TRUE(at::allclose(st.blocks[0].held_in_time_order(st.blocks[0].k_mean), window_means(k_held), 1e-6, 1e-6));

  DitState ordered;
  ordered.blocks.resize(st.blocks.size());
  for (size_t b = 0; b < st.blocks.size(); ++b) {
    const auto& a = st.blocks[b];
    const at::Tensor k = a.held_in_time_order(a.k), v = a.held_in_time_order(a.v), m = a.held_in_time_order(a.k_mean);
    auto& o = ordered.blocks[b];
    o.k = at::cat({k, at::zeros_like(k.narrow(0, 0, ws))});  // slots 0..2 in time order, slot 3 free
    o.v = at::cat({v, at::zeros_like(v.narrow(0, 0, ws))});
    o.k_mean = at::cat({m, at::zeros_like(m.narrow(0, 0, ws))});
    o.slice_windows = ws, o.first = 0, o.held = 3;
  }
  const at::Tensor next = test::seeded_randn({1, 16, 2, 16, 32}, 70);
  const at::Tensor a = dit_forward(m->dit(), m->dit_constants(), st, next, {}, rope.table(12, 2), plan);
  const at::Tensor b = dit_forward(m->dit(), m->dit_constants(), ordered, next, {}, rope.table(12, 2), plan);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-4 * std::max(1.0, b.abs().max().item<double>()));
}

TEST(Dit, LqTokensAndCacheChangeTheResult) {
  c10::InferenceMode guard;
  auto m = model();
  SparseAttentionSettings s;
  s.topk_ratio = 2.0;
  s.local_range = 3;
  auto plan = AttentionPlan::make(s, 1, 1, at::kCPU);
  Rope rope(128, 8, 8, at::kCPU);
  auto lat = test::seeded_randn({1, 16, 2, 16, 16}, 1);
  DitState fresh1, fresh2, warmed;
  auto a = dit_forward(m->dit(), m->dit_constants(), fresh1, lat, {}, rope.table(6, 2), plan);
  auto b = dit_forward(m->dit(), m->dit_constants(), fresh2, lat, {}, rope.table(6, 2), plan);
  EXPECT_TRUE(at::equal(a, b));  // deterministic
  auto tokens = test::seeded_randn({1, 128, 256}, 2);
  DitState s3;
  auto c = dit_forward(m->dit(), m->dit_constants(), s3, lat, {tokens}, rope.table(6, 2), plan);
  EXPECT_FALSE(at::allclose(a, c));
  dit_forward(m->dit(), m->dit_constants(), warmed, test::seeded_randn({1, 16, 6, 16, 16}, 3), {}, rope.table(0, 6), plan);
  auto d = dit_forward(m->dit(), m->dit_constants(), warmed, lat, {}, rope.table(6, 2), plan);
  EXPECT_FALSE(at::allclose(a, d));
  warmed.reset();
  EXPECT_TRUE(warmed.blocks.empty());
}

TEST(Dit, RejectsLatentsOfTheWrongShape) {
  c10::InferenceMode guard;
  auto m = model();
  SparseAttentionSettings s;
  s.topk_ratio = 2.0;
  auto plan = AttentionPlan::make(s, 1, 1, at::kCPU);
  Rope rope(128, 8, 8, at::kCPU);
  DitState st;
  EXPECT_THROW(dit_forward(m->dit(), m->dit_constants(), st, test::seeded_randn({1, 16, 3, 16, 16}, 1), {}, rope.table(0, 3), plan), Error);
  EXPECT_THROW(dit_forward(m->dit(), m->dit_constants(), st, test::seeded_randn({1, 8, 2, 16, 16}, 1), {}, rope.table(0, 2), plan), Error);
}

#if FLASHVSR_CUDA_KERNELS
#include "cuda/qkv_windows.h"
#endif

// The fused q/k/v preparation of the CUDA path against the composed operations of the reference path
// (RMSNorm, RoPE, window partition), on random inputs, with the outputs poisoned first.
TEST(Dit, CudaFusedQkvWindowsMatchTheComposedOperations) {
#if FLASHVSR_CUDA_KERNELS
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  const at::Device dev(at::kCUDA, 0);
  for (const auto dtype : {at::kBFloat16, at::kHalf}) {
    const int64_t D = 384, hd = 128, heads = D / hd;
    const WindowGrid grid{4, 16, 24};
    const int64_t L = grid.f * grid.h * grid.w, nw = grid.windows();
    auto gen = at::make_generator<at::CPUGeneratorImpl>(41);
    const auto o = at::TensorOptions().device(dev).dtype(dtype);
    auto qkv = (at::randn({L, 3 * D}, gen, at::kFloat) * 3).to(o);
    auto nq = (at::rand({D}, gen, at::kFloat) + 0.5).to(o), nk = (at::rand({D}, gen, at::kFloat) + 0.5).to(o);
    Rope rope(hd, grid.h, grid.w, dev);
    const RopeTable table = rope.table(5, grid.f);
    auto nan = [&] { return at::full({nw, kWindowTokens, D}, NAN, o); };
    at::Tensor q_w = nan(), k_w = nan(), v_w = nan();
    qkv_windows_cuda(qkv, nq, nk, table, grid, hd, 1e-6, q_w, k_w, v_w);

    auto composed = [&](int part, const at::Tensor& w) {
      auto x = qkv.narrow(1, part * D, D);
      if (w.defined()) x = apply_rope(at::rms_norm(x, {D}, w, 1e-6).view({L, heads, hd}), table).view({L, D});
      return to_windows(x, grid).to(at::kFloat);
    };
    auto rel = [](const at::Tensor& a, const at::Tensor& ref) { return ((a.to(at::kFloat) - ref).norm() / ref.norm()).item<double>(); };
    EXPECT_TRUE(q_w.isfinite().all().item<bool>() && k_w.isfinite().all().item<bool>()) << "every element written";
    EXPECT_LT(rel(q_w, composed(0, nq)), 1e-2) << c10::toString(dtype);
    EXPECT_LT(rel(k_w, composed(1, nk)), 1e-2) << c10::toString(dtype);
    EXPECT_TRUE(at::equal(v_w.to(at::kFloat), composed(2, {}))) << "v is only partitioned";
  }
#else
  GTEST_SKIP() << "built without the CUDA kernels (gpu_kernels / nvcc / CUDA LibTorch)";
#endif
}

#if FLASHVSR_CUDA_KERNELS
#include "cuda/residual_norm.h"
#endif

// The fused residual update + LayerNorm of the CUDA path against at::addcmul and at::layer_norm in float32
// on the same bf16/fp16 inputs: the updated x, the norm with an affine map, the update alone, the norm alone.
TEST(Dit, CudaFusedResidualNormMatchesAddcmulThenLayerNorm) {
#if FLASHVSR_CUDA_KERNELS
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  const at::Device dev(at::kCUDA, 0);
  for (const auto dtype : {at::kBFloat16, at::kHalf}) {
    for (const int64_t D : {1536, 40}) {  // the released width; a row narrower than a warp's 8-channel pieces
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " d " + std::to_string(D));
      const int64_t L = 300;
      auto gen = at::make_generator<at::CPUGeneratorImpl>(51);
      const auto o = at::TensorOptions().device(dev).dtype(dtype);
      auto rnd = [&](at::IntArrayRef s, double scale, double offset) { return (at::randn(s, gen, at::kFloat) * scale + offset).to(o); };
      const at::Tensor x0 = rnd({L, D}, 2, 0.5), y = rnd({L, D}, 1, 0), gate = rnd({D}, 0.3, 0);
      const at::Tensor mul = rnd({D}, 0.2, 1), add = rnd({D}, 0.1, 0);
      auto f32 = [](const at::Tensor& t) { return t.to(at::kFloat).cpu(); };
      // Expectation: the update rounded to the dtype (as the unfused addcmul stores it), the norm in float32.
      const at::Tensor x_expected = f32(at::addcmul(x0, gate, y));
      const at::Tensor n_expected = at::layer_norm(x_expected, {D}, f32(mul), f32(add), 1e-6);
      at::Tensor x = x0.clone();
      const at::Tensor n = residual_norm_cuda(x, gate, y, mul, add, 1e-6);
      // Within one step of the dtype (the float32 product may be contracted into an FMA on either side).
      const double step = dtype == at::kBFloat16 ? 1.0 / 128 : 1.0 / 1024;
      EXPECT_TRUE(((f32(x) - x_expected).abs() <= x_expected.abs() * step + 1e-6).all().item<bool>()) << "x + gate * y";
      auto rel = [](const at::Tensor& a, const at::Tensor& ref) { return ((a - ref).norm() / ref.norm()).item<double>(); };
      EXPECT_LT(rel(f32(n), n_expected), 1e-2);
      // The update alone (no norm), with gate 1.
      at::Tensor x2 = x0.clone();
      EXPECT_FALSE(residual_norm_cuda(x2, {}, y, {}, {}, 1e-6).defined());
      EXPECT_TRUE(at::equal(f32(x2), f32(x0 + y)));
      // The norm alone leaves x as it is.
      at::Tensor x3 = x0.clone();
      const at::Tensor n3 = residual_norm_cuda(x3, {}, {}, mul, add, 1e-6);
      EXPECT_TRUE(at::equal(x3, x0));
      EXPECT_LT(rel(f32(n3), at::layer_norm(f32(x0), {D}, f32(mul), f32(add), 1e-6)), 1e-2);
    }
  }
#else
  GTEST_SKIP() << "built without the CUDA kernels (gpu_kernels / nvcc / CUDA LibTorch)";
#endif
}
