// SPDX-License-Identifier: LGPL-2.1-or-later
// Windows, the local mask, top-k block selection and the exact block-sparse attention.
#include "sparse_attention.h"

#include "error.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <limits>

using namespace flashvsr;

namespace {

}  // namespace

TEST(Windows, PartitionPutsEachTokenInItsTwoByEightByEightWindow) {
  const WindowGrid g{4, 16, 24};  // 2 slices x 2 rows x 3 cols of windows
  auto idx = at::arange(g.f * g.h * g.w, at::kLong).view({-1, 1});
  auto w = to_windows(idx, g);
  ASSERT_EQ(w.sizes().vec(), (std::vector<int64_t>{12, 128, 1}));
  for (int64_t f = 0; f < g.f; ++f)
    for (int64_t h = 0; h < g.h; h += 3)
      for (int64_t x = 0; x < g.w; x += 5) {
        const int64_t token = (f * g.h + h) * g.w + x;
        const int64_t win = ((f / 2) * g.rows() + h / 8) * g.cols() + x / 8;
        const int64_t pos = ((f % 2) * 8 + h % 8) * 8 + x % 8;
        EXPECT_EQ(w[win][pos][0].item<int64_t>(), token);
      }
  EXPECT_TRUE(at::equal(from_windows(w, g), idx));
}

TEST(LocalMask, WindowSeesItsRangeWithoutClampingAtBorders) {
  auto m = local_window_mask(4, 5, 3);  // 4 rows x 5 cols
  auto sees = [&](int r, int c, int r2, int c2) { return m[r * 5 + c][r2 * 5 + c2].item<bool>(); };
  EXPECT_TRUE(sees(1, 1, 0, 0));
  EXPECT_TRUE(sees(1, 1, 2, 2));
  EXPECT_FALSE(sees(1, 1, 3, 1));
  EXPECT_FALSE(sees(1, 1, 1, 3));
  // At the border the window is not shifted inwards: (0,0) sees rows 0..1 and cols 0..1 only.
  EXPECT_EQ(m[0].sum().item<int64_t>(), 4);
  // Even ranges are asymmetric: R = 4 covers r-2 .. r+1.
  auto e = local_window_mask(6, 1, 4);
  EXPECT_TRUE(e[3][1].item<bool>());
  EXPECT_TRUE(e[3][4].item<bool>());
  EXPECT_FALSE(e[3][5].item<bool>());
  // A large range sees everything.
  EXPECT_TRUE(local_window_mask(6, 11, 23).all().item<bool>());
}

TEST(TopK, MatchesTheReferenceFormula) {
  EXPECT_EQ(topk_for(4, 0.6), 8);   // int(16 * 0.6) - 1
  EXPECT_EQ(topk_for(6, 0.5), 17);  // int(36 * 0.5) - 1
  EXPECT_NEAR(topk_ratio_for(2.0, 768, 1408), 2.0 * 768 * 1280 / (768.0 * 1408), 1e-12);
}

// Straightforward selection: per head and query slice, sort the flattened probabilities.
TEST(SelectKeyWindows, MatchesAPlainLoopImplementation) {
  c10::InferenceMode guard;
  const int64_t heads = 2, ws = 6, nq = 12, nk = 18, dim = heads * 128;
  auto q = test::seeded_randn({nq, 128, dim}, 1), k = test::seeded_randn({nk, 128, dim}, 2);
  auto local = local_window_mask(2, 3, 3);
  const int64_t topk = topk_for(ws, 0.9);
  auto mask = select_key_windows(q, k, heads, ws, local, topk);
  ASSERT_EQ(mask.sizes().vec(), (std::vector<int64_t>{heads, nq, nk}));
  auto qm = q.mean(1), km = k.mean(1);
  for (int64_t h = 0; h < heads; ++h) {
    auto s = at::matmul(qm.narrow(1, h * 128, 128), km.narrow(1, h * 128, 128).t()) / std::sqrt(128.0);
    auto allowed = local.repeat({nq / ws, nk / ws});
    s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
    auto p = at::softmax(s, -1);
    for (int64_t sl = 0; sl < nq / ws; ++sl) {
      auto block = p.narrow(0, sl * ws, ws).contiguous();
      std::vector<float> v(block.data_ptr<float>(), block.data_ptr<float>() + block.numel());
      std::vector<float> sorted = v;
      std::sort(sorted.begin(), sorted.end(), std::greater<float>());
      const float thr = sorted[std::min<int64_t>(static_cast<int64_t>(v.size()) - 1, topk)];
      for (int64_t i = 0; i < ws; ++i)
        for (int64_t j = 0; j < nk; ++j)
          EXPECT_EQ(mask[h][sl * ws + i][j].item<bool>(), v[i * nk + j] > thr) << h << " " << sl << " " << i << " " << j;
    }
  }
  // Windows outside the local range are never selected.
  EXPECT_FALSE((mask & local.repeat({nq / ws, nk / ws}).logical_not()).any().item<bool>());
}

// Exact attention restricted to the selected windows, written densely with a token-level mask.
at::Tensor dense_masked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                        int64_t heads) {
  const int64_t nq = q.size(0), nk = k.size(0), hd = q.size(2) / heads;
  auto out = at::zeros_like(q);
  for (int64_t h = 0; h < heads; ++h) {
    auto qh = q.narrow(2, h * hd, hd).reshape({nq * 128, hd});
    auto kh = k.narrow(2, h * hd, hd).reshape({nk * 128, hd});
    auto vh = v.narrow(2, h * hd, hd).reshape({nk * 128, hd});
    auto s = at::matmul(qh, kh.t()) / std::sqrt(static_cast<double>(hd));
    auto tok = mask[h].repeat_interleave(128, 0).repeat_interleave(128, 1);
    s = s.masked_fill(tok.logical_not(), -std::numeric_limits<float>::infinity());
    auto p = at::softmax(s, -1).nan_to_num(0.0);
    out.narrow(2, h * hd, hd).copy_(at::matmul(p, vh).view({nq, 128, hd}));
  }
  return out;
}

TEST(BlockSparseAttention, ReferenceEqualsDenseAttentionOverTheSelectedWindows) {
  c10::InferenceMode guard;
  const int64_t heads = 2, nq = 5, nk = 9, dim = heads * 128;
  auto q = test::seeded_randn({nq, 128, dim}, 3), k = test::seeded_randn({nk, 128, dim}, 4), v = test::seeded_randn({nk, 128, dim}, 5);
  auto mask = test::seeded_randn({heads, nq, nk}, 6) > 0.3;
  mask[1][2].fill_(false);  // a query window that selects nothing
  auto got = block_sparse_attention(q, k, v, mask, heads, AttentionBackend::Reference);
  auto want = dense_masked(q, k, v, mask, heads);
  EXPECT_TRUE(at::allclose(got, want, 1e-4, 1e-5));
  EXPECT_TRUE(got[2].narrow(1, 128, 128).eq(0).all().item<bool>()) << "empty selection must give zeros";
}

TEST(BlockSparseAttention, FullMaskIsDenseSoftmaxAttention) {
  c10::InferenceMode guard;
  const int64_t heads = 1, nq = 2, nk = 3;
  auto q = test::seeded_randn({nq, 128, 128}, 7), k = test::seeded_randn({nk, 128, 128}, 8), v = test::seeded_randn({nk, 128, 128}, 9);
  auto mask = at::ones({heads, nq, nk}, at::kBool);
  auto got = block_sparse_attention(q, k, v, mask, heads, AttentionBackend::Reference);
  auto want = at::scaled_dot_product_attention(q.reshape({1, 1, nq * 128, 128}), k.reshape({1, 1, nk * 128, 128}),
                                               v.reshape({1, 1, nk * 128, 128}))
                  .view({nq, 128, 128});
  EXPECT_TRUE(at::allclose(got, want, 1e-4, 1e-5));
}

TEST(AttentionPlan, RejectsBadSettings) {
  SparseAttentionSettings s;
  s.topk_ratio = 1.0;
  EXPECT_NO_THROW(AttentionPlan::make(s, 2, 3, at::kCPU));
  auto bad = s;
  bad.local_range = 0;
  EXPECT_THROW(AttentionPlan::make(bad, 2, 3, at::kCPU), Error);
  bad = s;
  bad.kv_slices = 0;
  EXPECT_THROW(AttentionPlan::make(bad, 2, 3, at::kCPU), Error);
  bad = s;
  bad.topk_ratio = 0;
  EXPECT_THROW(AttentionPlan::make(bad, 2, 3, at::kCPU), Error);
  if (!cuda_attention_available()) {
    bad = s;
    bad.backend = AttentionBackend::Cuda;
    EXPECT_THROW(AttentionPlan::make(bad, 2, 3, at::kCPU), Error);
  }
}


namespace {

// The key slices each chunk attends over, following the spec's cache rule step by step: chunk 0 sees its
// 3 slices; the cache then holds them, minus the oldest when more than kv_slices; every later chunk sees the
// cache plus its 1 new slice and keeps them, minus the oldest when more than kv_slices.
int64_t largest_key_slices_over(int64_t kv_slices, int64_t chunks) {
  int64_t seen = 3, largest = 3;
  int64_t cache = seen > kv_slices ? seen - 1 : seen;
  for (int64_t c = 1; c < chunks; ++c) {
    seen = cache + 1;
    largest = std::max(largest, seen);
    cache = seen > kv_slices ? seen - 1 : seen;
  }
  return largest;
}

}  // namespace

TEST(AttentionPlan, KeySlicesFollowTheCacheRuleAndKvRatiosOneAndTwoBothKeepTwo) {
  EXPECT_EQ(max_key_slices(1), 3);
  EXPECT_EQ(max_key_slices(2), 3);
  EXPECT_EQ(max_key_slices(3), 4);
  EXPECT_EQ(max_key_slices(64), 65);
  for (int64_t kv = 1; kv <= 70; ++kv) EXPECT_EQ(max_key_slices(kv), largest_key_slices_over(kv, 200)) << kv;
}

TEST(AttentionPlan, StreamsBeyondTheKeyWindowLimitAreRefusedUpFrontWithTheNumbers) {
  SparseAttentionSettings s;
  s.topk_ratio = 1.0;
  // 2048x2048 pixels: 16x16 = 256 windows per slice; kv ratio 64 needs 65 slices = 16640 > 16384 windows.
  s.kv_slices = 64;
  try {
    AttentionPlan::make(s, 16, 16, at::kCPU);
    ADD_FAILURE() << "kv ratio 64 at 2048x2048 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadSettings);
    const std::string what = e.what();
    EXPECT_NE(what.find("16640 key windows"), std::string::npos) << what;
    EXPECT_NE(what.find("16384"), std::string::npos) << what;
    EXPECT_NE(what.find("at most 63"), std::string::npos) << what;
  }
  s.kv_slices = 63;  // 64 slices x 256 = 16384: exactly the limit
  EXPECT_NO_THROW(AttentionPlan::make(s, 16, 16, at::kCPU));
  // 8192x8192 pixels: 4096 windows per slice; kv ratio 3 (4 slices) is exactly the limit, 4 is beyond it.
  s.kv_slices = 3;
  EXPECT_NO_THROW(AttentionPlan::make(s, 64, 64, at::kCPU));
  s.kv_slices = 4;
  EXPECT_THROW(AttentionPlan::make(s, 64, 64, at::kCPU), Error);
  // 12288x12288 pixels: 9216 windows per slice; the 3 slices of chunk 0 already exceed the limit.
  s.kv_slices = 1;
  try {
    AttentionPlan::make(s, 96, 96, at::kCPU);
    ADD_FAILURE() << "12288x12288 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too large for any kv ratio"), std::string::npos) << e.what();
  }
}
TEST(AttentionBackendName, ParsesAndPrints) {
  EXPECT_EQ(parse_attention_backend("reference"), AttentionBackend::Reference);
  EXPECT_EQ(parse_attention_backend("auto"), AttentionBackend::Auto);
  EXPECT_EQ(parse_attention_backend("cuda"), AttentionBackend::Cuda);
  EXPECT_THROW(parse_attention_backend("flash"), Error);
  EXPECT_STREQ(attention_backend_name(AttentionBackend::Reference), "reference");
}
