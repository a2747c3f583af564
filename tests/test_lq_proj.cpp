// SPDX-License-Identifier: LGPL-2.1-or-later
// The LQ projection's temporal caches: v1.1 is a causal convolution over the whole stream, v1.0 sees each
// clip on its own; the first clip only primes.
#include "lq_proj.h"

#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

using namespace flashvsr;

namespace {

// The raw checkpoint tensors (Conv3d layout), independent of how the module stores them.
TensorMap& raw() {
  static TensorMap m;
  return m;
}

LqProjWeights small_weights(int64_t h1 = 8, int64_t h2 = 12, int64_t dim = 16) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  auto r = [&](std::vector<int64_t> s, double scale) { return at::randn(s, gen, at::kFloat) * scale; };
  TensorMap m;
  m["conv1.weight"] = r({h1, 768, 4, 3, 3}, 0.02);
  m["conv1.bias"] = r({h1}, 0.1);
  m["norm1.gamma"] = r({h1, 1, 1, 1}, 0.1) + 1;
  m["conv2.weight"] = r({h2, h1, 4, 3, 3}, 0.1);
  m["conv2.bias"] = r({h2}, 0.1);
  m["norm2.gamma"] = r({h2, 1, 1, 1}, 0.1) + 1;
  m["linear_layers.0.weight"] = r({dim, h2}, 0.3);
  m["linear_layers.0.bias"] = r({dim}, 0.1);
  raw() = m;
  WeightFile f("LQ_proj_in.ckpt", m);
  return LqProjWeights::bind(f, LqProjConfig::detect(f), at::kCPU, at::kFloat);
}

at::Tensor video(int64_t frames, int64_t H = 32, int64_t W = 48) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  return at::rand({1, 3, frames, H, W}, gen, at::kFloat) * 2 - 1;
}

// The same per-layer ops as the module, written out over a whole sequence.
at::Tensor unshuffle(const at::Tensor& x) {
  const auto f = x.size(2), H = x.size(3), W = x.size(4);
  return x.view({1, 3, f, H / 16, 16, W / 16, 16}).permute({0, 1, 4, 6, 2, 3, 5}).reshape({1, 768, f, H / 16, W / 16});
}
at::Tensor conv_norm_silu(const at::Tensor& x, const std::string& conv, const at::Tensor& b, const at::Tensor& g) {
  const at::Tensor& w = raw().at(conv + ".weight");
  auto y = at::conv3d(at::pad(x, {1, 1, 1, 1, 0, 0}, "replicate"), w, b, {2, 1, 1});
  y = y / y.norm(2, {1}, true).clamp_min(1e-12) * std::sqrt(static_cast<double>(y.size(1))) * g.view({1, -1, 1, 1, 1});
  return at::silu(y);
}

}  // namespace

TEST(LqProj, FirstClipOnlyPrimesTheCaches) {
  c10::InferenceMode guard;
  auto w = small_weights();
  for (auto version : {LqVersion::V1_0, LqVersion::V1_1}) {
    LqProjState s;
    EXPECT_TRUE(lq_project(w, version, s, video(1)).empty());
    EXPECT_EQ(s.clips, 1);
    EXPECT_EQ(s.conv1_cache.sizes().vec(), (std::vector<int64_t>{1, 768, 2, 2, 3}));
    EXPECT_EQ(s.conv2_cache.sizes().vec(), (std::vector<int64_t>{1, 8, 2, 2, 3}));
  }
}

TEST(LqProj, TokensAreOneLatentFrameInRowMajorOrder) {
  c10::InferenceMode guard;
  auto w = small_weights();
  LqProjState s;
  lq_project(w, LqVersion::V1_1, s, video(1));
  auto out = lq_project(w, LqVersion::V1_1, s, video(4));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].sizes().vec(), (std::vector<int64_t>{1, 2 * 3, 16}));
}

TEST(LqProjV11, StreamingEqualsOneCausalConvolutionOverTheWholeStream) {
  c10::InferenceMode guard;
  auto w = small_weights();
  auto v = video(1 + 4 * 4);  // frame 0, then four 4-frame clips
  LqProjState s;
  std::vector<at::Tensor> streamed;
  lq_project(w, LqVersion::V1_1, s, v.narrow(2, 0, 1));
  for (int c = 0; c < 4; ++c) streamed.push_back(lq_project(w, LqVersion::V1_1, s, v.narrow(2, 1 + 4 * c, 4))[0]);

  // Whole sequence: frame 0 repeated to a 4-frame clip, front context = replicate padding by 2.
  auto seq = at::cat({v.narrow(2, 0, 1).expand({1, 3, 3, -1, -1}), v}, 2);
  auto u = unshuffle(seq);
  u = at::cat({u.narrow(2, 0, 1).expand({-1, -1, 2, -1, -1}), u}, 2);
  auto y = conv_norm_silu(u, "conv1", w.conv1_b, w.norm1_gamma);  // 2 frames per clip
  auto z = conv_norm_silu(y, "conv2", w.conv2_b, w.norm2_gamma);  // no front padding: clip 0 only primes
  ASSERT_EQ(z.size(2), 4);
  for (int c = 0; c < 4; ++c) {
    auto tokens = at::linear(z.narrow(2, c, 1).flatten(2).transpose(1, 2), w.linear_w[0], w.linear_b[0]);
    EXPECT_TRUE(at::allclose(streamed[c], tokens, 1e-4, 1e-5)) << "clip " << c;
  }
}

// A CUDA graph of a steady chunk replays fixed addresses: the caches keep their storage from the second clip on.
TEST(LqProj, CachesKeepTheirStorageFromTheSecondClipOn) {
  c10::InferenceMode guard;
  auto w = small_weights();
  auto v = video(1 + 4 * 3);
  for (LqVersion version : {LqVersion::V1_0, LqVersion::V1_1}) {
    LqProjState s;
    lq_project(w, version, s, v.narrow(2, 0, 1));
    const void* c1 = s.conv1_cache.data_ptr();
    const void* c2 = s.conv2_cache.data_ptr();
    for (int c = 0; c < 3; ++c) {
      lq_project(w, version, s, v.narrow(2, 1 + 4 * c, 4));
      EXPECT_EQ(s.conv1_cache.data_ptr(), c1) << "clip " << c + 1;
      EXPECT_EQ(s.conv2_cache.data_ptr(), c2) << "clip " << c + 1;
    }
  }
}

TEST(LqProjV10, EachClipSeesOnlyItself) {
  c10::InferenceMode guard;
  auto w = small_weights();
  auto a = video(9), b = video(9) * -0.5;
  // The same clip after different histories gives the same tokens.
  LqProjState s1, s2;
  lq_project(w, LqVersion::V1_0, s1, a.narrow(2, 0, 1));
  lq_project(w, LqVersion::V1_0, s1, a.narrow(2, 1, 4));
  auto t1 = lq_project(w, LqVersion::V1_0, s1, a.narrow(2, 5, 4))[0];
  lq_project(w, LqVersion::V1_0, s2, b.narrow(2, 0, 1));
  lq_project(w, LqVersion::V1_0, s2, b.narrow(2, 1, 4));
  auto t2 = lq_project(w, LqVersion::V1_0, s2, a.narrow(2, 5, 4))[0];
  EXPECT_TRUE(at::equal(t1, t2));
  // ... and equals conv1 over [x[-2:], x], conv2 over [y, y].
  auto u = unshuffle(a.narrow(2, 5, 4));
  auto y = conv_norm_silu(at::cat({u.narrow(2, 2, 2), u}, 2), "conv1", w.conv1_b, w.norm1_gamma);
  auto z = conv_norm_silu(at::cat({y, y}, 2), "conv2", w.conv2_b, w.norm2_gamma);
  auto want = at::linear(z.flatten(2).transpose(1, 2), w.linear_w[0], w.linear_b[0]);
  EXPECT_TRUE(at::allclose(t1, want, 1e-4, 1e-5));
}

TEST(LqProjV11, HistoryMatters) {
  c10::InferenceMode guard;
  auto w = small_weights();
  auto a = video(9), b = video(9) * -0.5;
  LqProjState s1, s2;
  lq_project(w, LqVersion::V1_1, s1, a.narrow(2, 0, 1));
  lq_project(w, LqVersion::V1_1, s1, a.narrow(2, 1, 4));
  auto t1 = lq_project(w, LqVersion::V1_1, s1, a.narrow(2, 5, 4))[0];
  lq_project(w, LqVersion::V1_1, s2, b.narrow(2, 0, 1));
  lq_project(w, LqVersion::V1_1, s2, b.narrow(2, 1, 4));
  auto t2 = lq_project(w, LqVersion::V1_1, s2, a.narrow(2, 5, 4))[0];
  EXPECT_FALSE(at::allclose(t1, t2));
}

TEST(LqProj, ResetStartsOver) {
  c10::InferenceMode guard;
  auto w = small_weights();
  auto v = video(5);
  LqProjState s;
  lq_project(w, LqVersion::V1_1, s, v.narrow(2, 0, 1));
  auto first = lq_project(w, LqVersion::V1_1, s, v.narrow(2, 1, 4))[0];
  s.reset();
  EXPECT_EQ(s.clips, 0);
  EXPECT_TRUE(lq_project(w, LqVersion::V1_1, s, v.narrow(2, 0, 1)).empty());
  EXPECT_TRUE(at::equal(first, lq_project(w, LqVersion::V1_1, s, v.narrow(2, 1, 4))[0]));
}

TEST(LqProj, WrongClipShapeIsAnError) {
  c10::InferenceMode guard;
  auto w = small_weights();
  LqProjState s;
  EXPECT_THROW(lq_project(w, LqVersion::V1_1, s, video(4)), Error);  // first clip must be 1 frame
  lq_project(w, LqVersion::V1_1, s, video(1));
  EXPECT_THROW(lq_project(w, LqVersion::V1_1, s, video(4, 30, 48)), Error);  // H not a multiple of 16
}

TEST(LqProj, VersionStringsParse) {
  EXPECT_EQ(parse_lq_version("1.0"), LqVersion::V1_0);
  EXPECT_EQ(parse_lq_version("1.1"), LqVersion::V1_1);
  EXPECT_THROW(parse_lq_version("2.0"), Error);
  EXPECT_STREQ(lq_version_name(LqVersion::V1_0), "1.0");
}
