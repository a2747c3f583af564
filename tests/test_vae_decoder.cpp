// SPDX-License-Identifier: LGPL-2.1-or-later
// FlashVSR Full's stage 3, the Wan2.1 VAE decoder: its causal convolution and RMS norm against naive loops,
// a whole decode against a whole-sequence decoder written here from the spec (zero-padded sequences, no
// caches), chunked decoding in any split == one call, the first latent's special case, reset, strict
// loading without the encoder, and (Shared/*) the reference's own decode of a golden Full fixture.
#include "cli.h"
#include "colour.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "io/torch_archive.h"
#include "test_support.h"
#include "vae_decoder.h"
#include "writers/safetensors_writer.h"
#include "writers/torch_archive_writer.h"

#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

using namespace flashvsr;
namespace t = flashvsr::test;

namespace {

// ---- Test weights: every key of a VideoVAE_(dim = d) state dict, random, encoder included. ----

struct Builder {
  TensorMap map;
  uint64_t seed = 100;
  at::Tensor rnd(std::vector<int64_t> shape, double scale) { return t::seeded_randn(std::move(shape), seed++) * scale; }
  void conv(const std::string& p, std::vector<int64_t> shape) {
    int64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    map[p + ".bias"] = rnd({shape[0]}, 0.1);
    map[p + ".weight"] = rnd(std::move(shape), 1.0 / std::sqrt(double(fan_in)));
  }
  void gamma(const std::string& key, std::vector<int64_t> shape) { map[key] = rnd(std::move(shape), 0.2) + 1; }
  void res(const std::string& p, int64_t i, int64_t o) {
    gamma(p + ".residual.0.gamma", {i, 1, 1, 1});
    conv(p + ".residual.2", {o, i, 3, 3, 3});
    gamma(p + ".residual.3.gamma", {o, 1, 1, 1});
    conv(p + ".residual.6", {o, o, 3, 3, 3});
    if (i != o) conv(p + ".shortcut", {o, i, 1, 1, 1});
  }
};

TensorMap make_vae(int64_t d, uint64_t seed, bool with_encoder = true) {
  Builder b;
  b.seed = seed;
  const int64_t d2 = 2 * d, d4 = 4 * d;
  if (with_encoder) {  // a few encoder-side keys of the release layout (values unused)
    b.conv("conv1", {32, 32, 1, 1, 1});
    b.conv("encoder.conv1", {d, 3, 3, 3, 3});
    b.res("encoder.downsamples.0", d, d);
    b.gamma("encoder.head.0.gamma", {d4, 1, 1, 1});
  }
  b.conv("conv2", {16, 16, 1, 1, 1});
  b.conv("decoder.conv1", {d4, 16, 3, 3, 3});
  b.res("decoder.middle.0", d4, d4);
  b.gamma("decoder.middle.1.norm.gamma", {d4, 1, 1});
  b.conv("decoder.middle.1.to_qkv", {3 * d4, d4, 1, 1});
  b.conv("decoder.middle.1.proj", {d4, d4, 1, 1});
  b.res("decoder.middle.2", d4, d4);
  for (int i : {0, 1, 2}) b.res("decoder.upsamples." + std::to_string(i), d4, d4);
  for (int i : {3, 7}) {
    b.conv("decoder.upsamples." + std::to_string(i) + ".time_conv", {2 * d4, d4, 3, 1, 1});
    b.conv("decoder.upsamples." + std::to_string(i) + ".resample.1", {d2, d4, 3, 3});
  }
  b.res("decoder.upsamples.4", d2, d4);
  for (int i : {5, 6}) b.res("decoder.upsamples." + std::to_string(i), d4, d4);
  for (int i : {8, 9, 10}) b.res("decoder.upsamples." + std::to_string(i), d2, d2);
  b.conv("decoder.upsamples.11.resample.1", {d, d2, 3, 3});
  for (int i : {12, 13, 14}) b.res("decoder.upsamples." + std::to_string(i), d, d);
  b.gamma("decoder.head.0.gamma", {d, 1, 1, 1});
  b.conv("decoder.head.2", {3, d, 3, 3, 3});
  return b.map;
}

TensorMap without_encoder(TensorMap m) {
  for (auto it = m.begin(); it != m.end();)
    it = (it->first.rfind("encoder.", 0) == 0 || it->first.rfind("conv1.", 0) == 0) ? m.erase(it) : std::next(it);
  return m;
}

VaeDecoderWeights bind_cpu(const TensorMap& m, at::ScalarType dtype = at::kFloat) {
  WeightFile f("test-vae.pth", without_encoder(m));
  const auto w = VaeDecoderWeights::bind(f, VaeDecoderConfig::detect(f), at::kCPU, dtype);
  EXPECT_TRUE(f.unused().empty()) << f.unused().front();
  return w;
}

const TensorMap& small_vae() {
  static const TensorMap m = make_vae(4, 7);
  return m;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ---- The whole-sequence decoder of the spec, in float64, from the file's tensors (not from bind). ----

struct Reference {
  TensorMap w;  // float64 copies
  explicit Reference(const TensorMap& m) {
    for (const auto& [k, v] : m) w[k] = v.to(at::kDouble);
  }
  const at::Tensor& operator[](const std::string& k) const { return w.at(k); }

  // x / max(sqrt(sum_C x^2), 1e-12) * sqrt(C) * gamma
  static at::Tensor rms(const at::Tensor& x, const at::Tensor& gamma) {
    const at::Tensor n = (x * x).sum(1, true).sqrt().clamp_min(1e-12);
    return x / n * std::sqrt(double(x.size(1))) * gamma;
  }
  // Zero padding: (k-1)/2 each side spatially, k_t - 1 frames in front; x [1, i, T, h, w].
  at::Tensor causal(const std::string& p, const at::Tensor& x) const {
    const auto& wt = (*this)[p + ".weight"];
    const int64_t kt = wt.size(2), ph = wt.size(3) / 2, pw = wt.size(4) / 2;
    return at::conv3d(at::constant_pad_nd(x, {pw, pw, ph, ph, kt - 1, 0}), wt, (*this)[p + ".bias"]);
  }
  at::Tensor res(const std::string& p, const at::Tensor& x) const {
    const at::Tensor h = w.count(p + ".shortcut.weight") ? causal(p + ".shortcut", x) : x;
    at::Tensor y = causal(p + ".residual.2", at::silu(rms(x, (*this)[p + ".residual.0.gamma"])));
    y = causal(p + ".residual.6", at::silu(rms(y, (*this)[p + ".residual.3.gamma"])));
    return h + y;
  }
  // Per frame, one head, explicit softmax.
  at::Tensor attn(const std::string& p, const at::Tensor& x) const {
    const int64_t c = x.size(1), T = x.size(2), h = x.size(3), wd = x.size(4);
    std::vector<at::Tensor> out;
    for (int64_t f = 0; f < T; ++f) {
      const at::Tensor xf = x.select(2, f);  // [1, c, h, w]
      const at::Tensor qkv = at::conv2d(rms(xf, (*this)[p + ".norm.gamma"]), (*this)[p + ".to_qkv.weight"],
                                        (*this)[p + ".to_qkv.bias"]).reshape({3 * c, h * wd});
      const at::Tensor q = qkv.narrow(0, 0, c).t(), k = qkv.narrow(0, c, c).t(), v = qkv.narrow(0, 2 * c, c).t();
      const at::Tensor a = at::softmax(q.matmul(k.t()) / std::sqrt(double(c)), 1).matmul(v);  // [hw, c]
      const at::Tensor o = at::conv2d(a.t().reshape({1, c, h, wd}), (*this)[p + ".proj.weight"], (*this)[p + ".proj.bias"]);
      out.push_back(xf + o);
    }
    return at::stack(out, 2);
  }
  // Up3d / Up2d over a whole stream: frame 0 passes, frames 1.. -> time_conv (zeros in front) -> 2 frames each.
  at::Tensor up(const std::string& p, const at::Tensor& x, bool temporal) const {
    at::Tensor y = x;
    if (temporal && x.size(2) > 1) {
      const int64_t c = x.size(1);
      const at::Tensor tc = causal(p + ".time_conv", x.narrow(2, 1, x.size(2) - 1));  // [1, 2c, T-1, h, w]
      std::vector<at::Tensor> frames{x.narrow(2, 0, 1)};
      for (int64_t f = 0; f < tc.size(2); ++f) {
        frames.push_back(tc.narrow(2, f, 1).narrow(1, 0, c));
        frames.push_back(tc.narrow(2, f, 1).narrow(1, c, c));
      }
      y = at::cat(frames, 2);
    }
    std::vector<at::Tensor> out;
    for (int64_t f = 0; f < y.size(2); ++f) {
      const at::Tensor up2 = y.select(2, f).repeat_interleave(2, 2).repeat_interleave(2, 3);
      out.push_back(at::conv2d(up2, (*this)[p + ".resample.1.weight"], (*this)[p + ".resample.1.bias"], 1, 1));
    }
    return at::stack(out, 2);
  }
  // latents [1, 16, T, h, w] (a whole stream) -> [1, 3, 4T - 3, 8h, 8w], clamped.
  at::Tensor decode(const at::Tensor& latents) const {
    const std::vector<double> mean{-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                                   0.4134,  -0.0715, 0.5517,  -0.3632, -0.1922, -0.9497, 0.2503, -0.2921};
    const std::vector<double> stdev{2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160};
    const auto opts = at::TensorOptions().dtype(at::kDouble);
    at::Tensor x = latents.to(at::kDouble) * at::tensor(stdev, opts).view({1, 16, 1, 1, 1}) +
                   at::tensor(mean, opts).view({1, 16, 1, 1, 1});
    x = at::conv3d(x, (*this)["conv2.weight"], (*this)["conv2.bias"]);
    x = causal("decoder.conv1", x);
    x = res("decoder.middle.0", x);
    x = attn("decoder.middle.1", x);
    x = res("decoder.middle.2", x);
    for (int i = 0; i < 15; ++i) {
      const std::string p = "decoder.upsamples." + std::to_string(i);
      x = (i == 3 || i == 7 || i == 11) ? up(p, x, i != 11) : res(p, x);
    }
    x = causal("decoder.head.2", at::silu(rms(x, (*this)["decoder.head.0.gamma"])));
    return x.clamp(-1, 1);
  }
};

// ---- Building blocks against naive loops. ----

// out[o, j] = b[o] + sum w[o, i, kt, ky, kx] * in[i, j + kt - 2, y + ky - 1, x + kx - 1] over the sequence
// `history ++ x` (history: the 2 frames before x), zero outside the frame.
at::Tensor naive_causal_conv(const at::Tensor& w, const at::Tensor& b, const at::Tensor& history, const at::Tensor& x) {
  const at::Tensor seq = at::cat({history, x}, 2).to(at::kDouble);
  const int64_t O = w.size(0), I = w.size(1), T = x.size(2), H = x.size(3), W = x.size(4);
  const int64_t kh = w.size(3), kw = w.size(4);
  at::Tensor out = at::zeros({1, O, T, H, W}, at::kDouble);
  auto s = seq.accessor<double, 5>();
  auto wa = w.to(at::kDouble).contiguous();
  auto wv = wa.accessor<double, 5>();
  auto ba = b.to(at::kDouble).contiguous();
  auto bv = ba.accessor<double, 1>();
  auto ov = out.accessor<double, 5>();
  for (int64_t o = 0; o < O; ++o)
    for (int64_t j = 0; j < T; ++j)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t xx = 0; xx < W; ++xx) {
          double acc = bv[o];
          for (int64_t i = 0; i < I; ++i)
            for (int64_t kt = 0; kt < 3; ++kt)
              for (int64_t ky = 0; ky < kh; ++ky)
                for (int64_t kx = 0; kx < kw; ++kx) {
                  const int64_t sy = y + ky - kh / 2, sx = xx + kx - kw / 2;
                  if (sy < 0 || sy >= H || sx < 0 || sx >= W) continue;
                  acc += wv[o][i][kt][ky][kx] * s[0][i][j + kt][sy][sx];  // sequence frame j + kt = x frame j + kt - 2
                }
          ov[0][o][j][y][xx] = acc;
        }
  return out;
}

TEST(VaeDecoder, CausalConvPadsZerosInFrontAndCarriesTheLastTwoFramesOfItsInput) {
  c10::InferenceMode guard;
  const VaeDecoderWeights::Conv conv{t::seeded_randn({3, 2, 3, 3, 3}, 1), t::seeded_randn({3}, 2)};
  const at::Tensor a = t::seeded_randn({1, 2, 4, 3, 5}, 3), b = t::seeded_randn({1, 2, 1, 3, 5}, 4),
                   c = t::seeded_randn({1, 2, 3, 3, 5}, 5);
  const at::Tensor zeros = at::zeros({1, 2, 2, 3, 5});
  at::Tensor cache;
  EXPECT_LE(max_diff(vae::causal_conv3d(conv, cache, a), naive_causal_conv(conv.weight, conv.bias, zeros, a)), 1e-5);
  EXPECT_EQ(max_diff(cache, a.narrow(2, 2, 2)), 0.0);
  // One frame after 4: its history is frames 2, 3 of the first call; then 3 frames after it: frames 3 and b.
  EXPECT_LE(max_diff(vae::causal_conv3d(conv, cache, b), naive_causal_conv(conv.weight, conv.bias, a.narrow(2, 2, 2), b)), 1e-5);
  EXPECT_LE(max_diff(vae::causal_conv3d(conv, cache, c),
                     naive_causal_conv(conv.weight, conv.bias, at::cat({a.narrow(2, 3, 1), b}, 2), c)), 1e-5);
  // A one-frame first call: history of the next frame = a zero frame and that frame.
  at::Tensor fresh;
  vae::causal_conv3d(conv, fresh, b);
  EXPECT_LE(max_diff(vae::causal_conv3d(conv, fresh, c),
                     naive_causal_conv(conv.weight, conv.bias, at::cat({zeros.narrow(2, 0, 1), b}, 2), c)), 1e-5);
  // (3, 1, 1) kernels (time_conv) pad nothing spatially.
  const VaeDecoderWeights::Conv tconv{t::seeded_randn({4, 2, 3, 1, 1}, 6), t::seeded_randn({4}, 7)};
  at::Tensor tcache;
  EXPECT_LE(max_diff(vae::causal_conv3d(tconv, tcache, a), naive_causal_conv(tconv.weight, tconv.bias, zeros, a)), 1e-5);
}

TEST(VaeDecoder, RmsNormDividesByTheChannelNormTimesSqrtCAndGamma) {
  c10::InferenceMode guard;
  at::Tensor x = t::seeded_randn({1, 5, 2, 3, 4}, 11);
  x.select(3, 1).zero_();  // a zero pixel: divided by eps, stays 0
  const at::Tensor gamma = t::seeded_randn({5, 1, 1, 1}, 12);
  const at::Tensor got = vae::rms_norm(x, gamma);
  auto xv = x.accessor<float, 5>();
  auto gv = gamma.accessor<float, 4>();
  auto rv = got.accessor<float, 5>();
  double worst = 0;
  for (int64_t f = 0; f < 2; ++f)
    for (int64_t y = 0; y < 3; ++y)
      for (int64_t z = 0; z < 4; ++z) {
        double ss = 0;
        for (int64_t c = 0; c < 5; ++c) ss += double(xv[0][c][f][y][z]) * xv[0][c][f][y][z];
        const double n = std::max(std::sqrt(ss), 1e-12);
        for (int64_t c = 0; c < 5; ++c)
          worst = std::max(worst, std::abs(rv[0][c][f][y][z] - xv[0][c][f][y][z] / n * std::sqrt(5.0) * gv[c][0][0][0]));
      }
  EXPECT_LE(worst, 1e-5);
}

// The fused form (normalised frames written into the convolution's sequence) against the naive causal
// convolution of silu(x / ||x|| * sqrt(C) * gamma), computed here, over three calls (cache hand-over).
TEST(VaeDecoder, CausalConvOfNormSiluIsTheCausalConvOfTheNormalisedFrames) {
  c10::InferenceMode guard;
  const VaeDecoderWeights::Conv conv{t::seeded_randn({3, 4, 3, 3, 3}, 21), t::seeded_randn({3}, 22)};
  const at::Tensor gamma = t::seeded_randn({4, 1, 1, 1}, 23);
  auto normalised = [&](const at::Tensor& x) {
    const at::Tensor n = (x * x).sum(1, true).sqrt().clamp_min(1e-12);
    return at::silu(x / n * std::sqrt(4.0) * gamma);
  };
  at::Tensor cache;
  at::Tensor history = at::zeros({1, 4, 2, 3, 5});
  for (int64_t call = 0; call < 3; ++call) {
    const at::Tensor x = t::seeded_randn({1, 4, call == 1 ? 1 : 3, 3, 5}, 30 + call);
    const at::Tensor want = naive_causal_conv(conv.weight, conv.bias, history, normalised(x));
    EXPECT_LE(max_diff(vae::causal_conv3d_of_norm_silu(conv, cache, x, gamma), want), 1e-4) << "call " << call;
    history = at::cat({history, normalised(x)}, 2).narrow(2, history.size(2) + x.size(2) - 2, 2);
    EXPECT_LE(max_diff(cache, history), 1e-6) << "call " << call;
  }
}

// ---- The decoder. ----

TEST(VaeDecoder, WholeCallMatchesTheSpecsWholeSequenceDecoder) {
  c10::InferenceMode guard;
  const auto w = bind_cpu(small_vae());
  const at::Tensor latents = t::seeded_randn({1, 16, 4, 2, 3}, 21);
  VaeDecoderState s;
  const at::Tensor got = vae_decode_chunk(w, s, latents);
  const at::Tensor want = Reference(small_vae()).decode(latents);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_EQ(got.sizes(), (at::IntArrayRef{1, 3, 13, 16, 24}));
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  EXPECT_LE(max_diff(got, want), 1e-4);
  // Not a test of the clamp alone: most values lie inside (-1, 1).
  EXPECT_GT((want.abs() < 0.99).to(at::kFloat).mean().item<double>(), 0.5);
}

TEST(VaeDecoder, ChunkedCallsAndGroupsGiveTheFramesOfOneCall) {
  c10::InferenceMode guard;
  const auto w = bind_cpu(small_vae());
  const at::Tensor latents = t::seeded_randn({1, 16, 6, 2, 3}, 22);
  VaeDecoderState whole_state;
  const at::Tensor whole = vae_decode_chunk(w, whole_state, latents);
  ASSERT_EQ(whole.size(2), 21);
  const std::vector<std::vector<int64_t>> splits{{1, 2, 3}, {3, 3}, {1, 1, 1, 1, 1, 1}, {2, 4}, {5, 1}};
  for (const auto& split : splits) {
    VaeDecoderState s;
    std::vector<at::Tensor> parts;
    std::vector<const void*> cache_memory;  // each cache's storage once it exists: later chunks write into it
    int64_t at_ = 0;
    for (int64_t n : split) {
      parts.push_back(vae_decode_chunk(w, s, latents.narrow(2, at_, n)));
      EXPECT_EQ(parts.back().size(2), at_ == 0 ? 4 * n - 3 : 4 * n);
      at_ += n;
      if (cache_memory.empty())
        for (const auto& c : s.caches) cache_memory.push_back(c.defined() ? c.data_ptr() : nullptr);
      else
        for (size_t i = 0; i < s.caches.size(); ++i)
          if (cache_memory[i]) EXPECT_EQ(s.caches[i].data_ptr(), cache_memory[i]) << "cache " << i << " reallocated";
    }
    EXPECT_LE(max_diff(at::cat(parts, 2), whole), 1e-5) << "split starting " << split.front() << " of " << split.size();
  }
  for (int64_t group : {1, 2, 4}) {
    VaeDecoderState s;
    EXPECT_LE(max_diff(vae_decode_chunk(w, s, latents, group), whole), 1e-5) << "group " << group;
  }
  // Every cache has its fixed shape after the first call: [1, c, 2, h, w].
  ASSERT_EQ(whole_state.caches.size(), 32u);
  for (const auto& c : whole_state.caches) {
    ASSERT_TRUE(c.defined());
    EXPECT_EQ(c.size(2), 2);
  }
}

TEST(VaeDecoder, FirstLatentGivesOneFrameAndSkipsTheTimeConvs) {
  c10::InferenceMode guard;
  TensorMap changed = small_vae();
  for (const char* k : {"decoder.upsamples.3.time_conv.weight", "decoder.upsamples.7.time_conv.bias"})
    changed[k] = changed[k] + 0.5;
  const auto w = bind_cpu(small_vae()), w2 = bind_cpu(changed);
  const at::Tensor latents = t::seeded_randn({1, 16, 3, 2, 3}, 23);
  VaeDecoderState s, s2, s1;
  const at::Tensor a = vae_decode_chunk(w, s, latents), b = vae_decode_chunk(w2, s2, latents);
  ASSERT_EQ(a.size(2), 9);
  // Frame 0 comes from latent 0 without time_conv; frames 1.. depend on it.
  EXPECT_EQ(max_diff(a.narrow(2, 0, 1), b.narrow(2, 0, 1)), 0.0);
  EXPECT_GT(max_diff(a.narrow(2, 1, 8), b.narrow(2, 1, 8)), 1e-3);
  // A one-latent first call: one frame, the same.
  const at::Tensor one = vae_decode_chunk(w, s1, latents.narrow(2, 0, 1));
  ASSERT_EQ(one.size(2), 1);
  EXPECT_LE(max_diff(one, a.narrow(2, 0, 1)), 1e-5);
  for (const auto& c : s1.caches) {  // all 32 of fixed shape [1, c, 2, h, w] already, zeros where nothing went in
    ASSERT_TRUE(c.defined());
    EXPECT_EQ(c.size(2), 2);
  }
  EXPECT_LE(max_diff(at::cat({one, vae_decode_chunk(w, s1, latents.narrow(2, 1, 2))}, 2), a), 1e-5);
  // Causal: a change of latent 2 changes frames 5.. only (latent t >= 1 gives frames 4t-3 .. 4t).
  at::Tensor other = latents.clone();
  other.narrow(2, 2, 1).add_(1);
  VaeDecoderState s3;
  const at::Tensor c = vae_decode_chunk(w, s3, other);
  EXPECT_LE(max_diff(c.narrow(2, 0, 5), a.narrow(2, 0, 5)), 1e-6);
  EXPECT_GT(max_diff(c.narrow(2, 5, 4), a.narrow(2, 5, 4)), 1e-3);
}

TEST(VaeDecoder, ResetMidStreamStartsAFreshStream) {
  c10::InferenceMode guard;
  const auto w = bind_cpu(small_vae());
  const at::Tensor first = t::seeded_randn({1, 16, 3, 2, 3}, 24), second = t::seeded_randn({1, 16, 2, 2, 3}, 25);
  VaeDecoderState s;
  vae_decode_chunk(w, s, first);
  s.reset();
  EXPECT_FALSE(s.started);
  const at::Tensor after_reset = vae_decode_chunk(w, s, second);
  VaeDecoderState fresh;
  const at::Tensor want = vae_decode_chunk(w, fresh, second);
  ASSERT_EQ(after_reset.size(2), 5);
  EXPECT_EQ(max_diff(after_reset, want), 0.0);
  // Without the reset, the same latents decode differently (the caches and 4 frames per latent).
  VaeDecoderState kept;
  vae_decode_chunk(w, kept, first);
  EXPECT_EQ(vae_decode_chunk(w, kept, second).size(2), 8);
}

TEST(VaeDecoder, MalformedLatentsAndASizeChangeMidStreamAreErrors) {
  c10::InferenceMode guard;
  const auto w = bind_cpu(small_vae());
  VaeDecoderState s;
  for (const auto& bad : {at::zeros({1, 15, 2, 2, 3}), at::zeros({1, 16, 0, 2, 3}), at::zeros({16, 2, 2, 3}),
                          at::zeros({2, 16, 1, 2, 3}), at::zeros({1, 16, 1, 2, 3}, at::kInt)}) {
    try {
      vae_decode_chunk(w, s, bad);
      ADD_FAILURE() << "accepted " << bad.sizes();
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), Error::Kind::BadInput);
      EXPECT_TRUE(contains(e.what(), "expected floating-point [1, 16, t >= 1, h, w]")) << e.what();
    }
  }
  vae_decode_chunk(w, s, at::zeros({1, 16, 1, 2, 3}));
  const std::string e = error_of([&] { vae_decode_chunk(w, s, at::zeros({1, 16, 1, 2, 4})); });
  EXPECT_TRUE(contains(e, "latents of 2x4 in a stream of 2x3")) << e;
}

TEST(VaeDecoder, Bf16OnTheCpuStaysCloseToFloat32) {
  c10::InferenceMode guard;
  const auto w32 = bind_cpu(small_vae()), w16 = bind_cpu(small_vae(), at::kBFloat16);
  EXPECT_EQ(w16.mean.scalar_type(), at::kBFloat16);
  const at::Tensor latents = t::seeded_randn({1, 16, 3, 2, 3}, 26);
  VaeDecoderState a, b;
  const at::Tensor f32 = vae_decode_chunk(w32, a, latents), bf16 = vae_decode_chunk(w16, b, latents);
  EXPECT_EQ(bf16.scalar_type(), at::kBFloat16);
  const double rel = ((bf16.to(at::kFloat) - f32).norm() / f32.norm()).item<double>();
  EXPECT_LT(rel, 5e-2);
}

TEST(VaeDecoder, CudaBf16ChannelsLastMatchesCpuFloat32) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  WeightFile f("test-vae.pth", without_encoder(small_vae()));
  const auto w = VaeDecoderWeights::bind(f, VaeDecoderConfig::detect(f), at::Device(at::kCUDA, 0), at::kBFloat16);
  EXPECT_TRUE(w.channels_last) << w.layout;
  const auto ref = bind_cpu(small_vae());
  const at::Tensor latents = t::seeded_randn({1, 16, 6, 4, 6}, 27);
  VaeDecoderState gpu, cpu;
  std::vector<at::Tensor> parts;
  parts.push_back(vae_decode_chunk(w, gpu, latents.narrow(2, 0, 4).cuda()).cpu());
  parts.push_back(vae_decode_chunk(w, gpu, latents.narrow(2, 4, 2).cuda(), 1).cpu());
  const at::Tensor want = vae_decode_chunk(ref, cpu, latents);
  const at::Tensor got = at::cat(parts, 2).to(at::kFloat);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LT(((got - want).norm() / want.norm()).item<double>(), 5e-2);
  // Float32 on CUDA (NCDHW; cuDNN may use TF32): close to the CPU too.
  WeightFile f32("test-vae.pth", without_encoder(small_vae()));
  const auto w32 = VaeDecoderWeights::bind(f32, VaeDecoderConfig::detect(f32), at::Device(at::kCUDA, 0), at::kFloat);
  EXPECT_FALSE(w32.channels_last) << w32.layout;
  VaeDecoderState s32;
  const at::Tensor got32 = vae_decode_chunk(w32, s32, latents.cuda()).cpu();
  EXPECT_LT(((got32 - want).norm() / want.norm()).item<double>(), 1e-2);
}

// ---- Loading. ----

TEST(VaeDecoder, ConfigIsDetectedFromTheHeadAndConv2) {
  const TensorMap m = make_vae(6, 8);
  const WeightFile f("x.pth", m);
  const auto c = VaeDecoderConfig::detect(f);
  EXPECT_EQ(c.dim, 6);
  EXPECT_EQ(c.z_dim, 16);
}

TEST(VaeDecoder, OpeningTheReleaseLayoutNeverReadsTheEncoder) {
  c10::InferenceMode guard;
  const std::string dir = t::scratch_dir("vae-open");
  const std::string path = dir + "/Wan2.1_VAE.pth";
  const TensorMap m = make_vae(4, 9);
  io::write_torch_state_dict(path, m);
  const size_t encoder = m.size() - without_encoder(m).size();
  ASSERT_GT(encoder, 10u);
  // The reader's filter: the encoder's entries are counted, not returned.
  io::SkippedEntries skipped;
  const TensorMap read = io::read_torch_state_dict(path, [](const std::string& k) { return k.rfind("decoder.", 0) == 0; }, &skipped);
  EXPECT_EQ(read.size(), without_encoder(m).size() - 2);  // conv2.* left out too
  EXPECT_EQ(skipped.count, int64_t(encoder + 2));
  std::vector<std::string> logs;
  WeightFile f = open_vae_decoder_file(path, [&](LogLevel l, const std::string& s) {
    if (l == LogLevel::Debug) logs.push_back(s);
  });
  for (const auto& [k, v] : m) EXPECT_EQ(f.has(k), k.rfind("decoder.", 0) == 0 || k.rfind("conv2.", 0) == 0) << k;
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_TRUE(contains(logs[0], path + ": skipped " + std::to_string(encoder) + " encoder tensor(s)")) << logs[0];
  const auto w = VaeDecoderWeights::bind(f, VaeDecoderConfig::detect(f), at::kCPU, at::kFloat);
  EXPECT_TRUE(f.unused().empty());
  EXPECT_TRUE(at::equal(w.head_conv.weight, m.at("decoder.head.2.weight")));
  // A safetensors repack of the same keys: the encoder's entries are dropped before any conversion.
  const std::string st = dir + "/Wan2.1_VAE.safetensors";
  io::write_safetensors(st, m);
  logs.clear();
  WeightFile g = open_vae_decoder_file(st, [&](LogLevel, const std::string& s) { logs.push_back(s); });
  for (const auto& [k, v] : m) EXPECT_EQ(g.has(k), k.rfind("decoder.", 0) == 0 || k.rfind("conv2.", 0) == 0) << k;
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_TRUE(contains(logs[0], st + ": skipped " + std::to_string(encoder) + " encoder tensor(s)")) << logs[0];
  VaeDecoderWeights::bind(g, VaeDecoderConfig::detect(g), at::kCPU, at::kFloat);
  EXPECT_TRUE(g.unused().empty());
}

TEST(VaeDecoder, EncoderOnlyOrMissingFilesAreClearErrors) {
  const std::string dir = t::scratch_dir("vae-bad");
  TensorMap encoder_only;
  for (const auto& [k, v] : make_vae(4, 10))
    if (k.rfind("encoder.", 0) == 0 || k.rfind("conv1.", 0) == 0) encoder_only[k] = v;
  const std::string path = dir + "/encoder.pth";
  io::write_torch_state_dict(path, encoder_only);
  try {
    open_vae_decoder_file(path, nullptr);
    ADD_FAILURE() << "encoder-only file accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadFile);
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, path + ": missing tensor 'decoder.head.0.gamma'")) << what;
    EXPECT_TRUE(contains(what, std::to_string(encoder_only.size()) + " encoder tensor(s)")) << what;
  }
  try {
    open_vae_decoder_file(dir + "/absent.pth", nullptr);
    ADD_FAILURE() << "missing file accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::NotFound);
    EXPECT_TRUE(contains(e.what(), dir + "/absent.pth")) << e.what();
  }
  t::write_file(dir + "/junk.pth", "not a zip");
  const std::string junk = error_of([&] { open_vae_decoder_file(dir + "/junk.pth", nullptr); });
  EXPECT_TRUE(contains(junk, dir + "/junk.pth")) << junk;
}

TEST(VaeDecoder, BindingIsStrictAndNamesFileKeyAndShapes) {
  auto bind_error = [](TensorMap m) {
    return error_of([&] {
      WeightFile f("dir/Wan2.1_VAE.pth", without_encoder(std::move(m)));
      VaeDecoderWeights::bind(f, VaeDecoderConfig::detect(f), at::kCPU, at::kFloat);
    });
  };
  TensorMap missing = make_vae(4, 12);
  missing.erase("decoder.upsamples.7.time_conv.weight");
  EXPECT_EQ(bind_error(missing), "dir/Wan2.1_VAE.pth: missing tensor 'decoder.upsamples.7.time_conv.weight' (expected shape "
                                 "[32, 16, 3, 1, 1])");
  TensorMap wrong = make_vae(4, 12);
  wrong["decoder.middle.1.to_qkv.weight"] = at::zeros({48, 16, 1, 1, 1});
  EXPECT_EQ(bind_error(wrong), "dir/Wan2.1_VAE.pth: tensor 'decoder.middle.1.to_qkv.weight' has shape [48, 16, 1, 1, 1], "
                               "expected [48, 16, 1, 1]");
  TensorMap no_shortcut = make_vae(4, 12);
  no_shortcut.erase("decoder.upsamples.4.shortcut.bias");
  EXPECT_TRUE(contains(bind_error(no_shortcut), "'decoder.upsamples.4.shortcut.bias'"));
  TensorMap z8 = make_vae(4, 12);
  z8["conv2.weight"] = at::zeros({8, 8, 1, 1, 1});
  EXPECT_TRUE(contains(bind_error(z8), "dir/Wan2.1_VAE.pth: conv2.weight output channels")) << bind_error(z8);
  TensorMap no_head = make_vae(4, 12);
  no_head.erase("decoder.head.0.gamma");
  EXPECT_EQ(bind_error(no_head), "dir/Wan2.1_VAE.pth: missing tensor 'decoder.head.0.gamma'");
  TensorMap int_gamma = make_vae(4, 12);
  int_gamma["decoder.head.0.gamma"] = at::ones({16, 1, 1, 1}, at::kInt).narrow(0, 0, 4);
  EXPECT_TRUE(contains(bind_error(int_gamma), "'decoder.head.0.gamma' has dtype Int")) << bind_error(int_gamma);
}

// ---- The golden Full fixtures: the reference's own decode. ----

class VaeDecoderFixture : public t::AnyVariantFixtureTest {};

std::vector<std::string> full_only(std::vector<std::string> dirs) {
  std::vector<std::string> out;
  for (auto& d : dirs)
    if (t::fixture_variant(d) == "full") out.push_back(d);
  return out;
}

// The fixture's latents (the DiT's outputs, `latents_all`) decoded chunk by chunk (6, then 2 per chunk, the
// spec's schedule) are the reference's VAE output: `chunkK.decoded` where stored, and after AdaIN against the
// LQ frames, the fixture's output frames (PSNR per 8-bit frame, the fixtures' criterion).
TEST_P(VaeDecoderFixture, DecodesTheReferenceLatentsChunkByChunk) {
  c10::InferenceMode guard;
  const std::string dir = fixture();
  WeightFile f = open_vae_decoder_file(dir + "/model/Wan2.1_VAE.pth", nullptr);
  const auto w = VaeDecoderWeights::bind(f, VaeDecoderConfig::detect(f), at::kCPU, at::kFloat);
  EXPECT_TRUE(f.unused().empty());
  const TensorMap expected = io::read_safetensors(dir + "/expected.safetensors");
  const TensorMap input = io::read_safetensors(dir + "/input.safetensors");
  ASSERT_TRUE(expected.count("latents_all")) << dir;
  const at::Tensor latents = expected.at("latents_all");
  const int64_t T = latents.size(2);
  VaeDecoderState s;
  std::vector<at::Tensor> chunks;
  int checked = 0;
  for (int64_t begin = 0, k = 0; begin < T; ++k) {
    const int64_t n = k == 0 ? std::min<int64_t>(6, T) : std::min<int64_t>(2, T - begin);
    chunks.push_back(vae_decode_chunk(w, s, latents.narrow(2, begin, n)));
    begin += n;
    const std::string key = "chunk" + std::to_string(k) + ".decoded";
    if (!expected.count(key)) continue;
    const at::Tensor want = expected.at(key).to(at::kFloat);
    ASSERT_EQ(chunks.back().sizes(), want.sizes()) << key;
    const double diff = max_diff(chunks.back(), want);
    std::printf("%s: %s max |ours - reference| %.3g\n", dir.c_str(), key.c_str(), diff);
    EXPECT_LE(diff, 2e-3) << key;  // F16 storage: half an ulp near 1 is 4.9e-4
    ++checked;
  }
  EXPECT_GT(checked, 0) << "no chunkK.decoded in " << dir;
  const at::Tensor decoded = at::cat(chunks, 2);  // [1, 3, 4T - 3, H, W]
  ASSERT_EQ(decoded.size(2), 4 * T - 3);
  // Colour fix as the pipeline does it (AdaIN per frame) against LQ frames 0 .. 4T - 4.
  const at::Tensor lq_u8 = input.at("lq_video_u8").narrow(0, 0, 4 * T - 3);  // [n, H, W, 3]
  const at::Tensor lq = (lq_u8.to(at::kFloat) / 255 * 2 - 1).permute({3, 0, 1, 2}).unsqueeze(0);
  const ColorFix fix = parse_color_fix(io::json_get<std::string>(io::read_json_file(dir + "/params.json"), "color_fix", dir + "/params.json"));
  const at::Tensor out = colour_correct(decoded, lq, fix);
  const at::Tensor want_u8 = cli::reference_frames_u8(expected, dir + "/expected.safetensors");
  const int64_t N = std::min(want_u8.size(0), out.size(2));
  const at::Tensor got_u8 = ((out.squeeze(0).permute({1, 2, 3, 0}).narrow(0, 0, N) + 1) * 127.5).round().clamp(0, 255).to(at::kByte);
  const auto psnr = cli::psnr_per_frame(got_u8, want_u8.narrow(0, 0, N));
  for (size_t i = 0; i < psnr.size(); ++i) EXPECT_GE(psnr[i], 45.0) << "frame " << i;
  std::printf("%s: %lld frames after %s, PSNR min %s dB\n", dir.c_str(), static_cast<long long>(N), color_fix_name(fix),
              cli::format_db(*std::min_element(psnr.begin(), psnr.end())).c_str());
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(VaeDecoderFixture);
INSTANTIATE_TEST_SUITE_P(Vendored, VaeDecoderFixture, ::testing::ValuesIn(full_only(t::vendored_fixture_dirs())),
                         t::fixture_case_name);
INSTANTIATE_TEST_SUITE_P(Shared, VaeDecoderFixture, ::testing::ValuesIn(full_only(t::extra_fixture_dirs())),
                         t::fixture_case_name);

}  // namespace
