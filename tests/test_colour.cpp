// SPDX-License-Identifier: LGPL-2.1-or-later
// Tests of model/colour: AdaIN and wavelet colour correction, method names.
#include "colour.h"

#include "error.h"
#include "io/file_util.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "test_support.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

using namespace flashvsr::io;

namespace flashvsr {
namespace {

at::Generator gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

// float32 [1, 3, n, h, w] ~ N(mean, stddev^2)
at::Tensor normal_video(int64_t n, int64_t h, int64_t w, double mean, double stddev, uint64_t seed) {
  return at::normal(mean, stddev, {1, 3, n, h, w}, gen(seed));
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// ---------------------------------------------------------------------------------------------------
// Straightforward per-pixel references in double precision, written from the spec's description.

// hq, lq: [1, 3, n, h, w] -> double [1, 3, n, h, w]
at::Tensor reference_adain(const at::Tensor& hq_in, const at::Tensor& lq_in) {
  const at::Tensor hq = hq_in.to(at::kDouble).contiguous();
  const at::Tensor lq = lq_in.to(at::kDouble).contiguous();
  at::Tensor out = at::empty_like(hq);
  auto H = hq.accessor<double, 5>();
  auto L = lq.accessor<double, 5>();
  auto O = out.accessor<double, 5>();
  const int64_t n = hq.size(2), h = hq.size(3), w = hq.size(4);
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t f = 0; f < n; ++f) {
      double sh = 0, sl = 0;
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          sh += H[0][c][f][y][x];
          sl += L[0][c][f][y][x];
        }
      const double mh = sh / double(h * w), ml = sl / double(h * w);
      double vh = 0, vl = 0;
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          vh += (H[0][c][f][y][x] - mh) * (H[0][c][f][y][x] - mh);
          vl += (L[0][c][f][y][x] - ml) * (L[0][c][f][y][x] - ml);
        }
      const double dh = std::sqrt(vh / double(h * w) + 1e-5), dl = std::sqrt(vl / double(h * w) + 1e-5);
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const double v = (H[0][c][f][y][x] - mh) / dh * dl + ml;
          O[0][c][f][y][x] = std::min(1.0, std::max(-1.0, v));
        }
    }
  return out;
}

using Plane = std::vector<std::vector<double>>;

// One level: explicit replicate padding by r on all sides, then a 3x3 dilated convolution.
Plane reference_blur(const Plane& img, int r) {
  const int h = int(img.size()), w = int(img[0].size());
  Plane padded(static_cast<size_t>(h + 2 * r), std::vector<double>(static_cast<size_t>(w + 2 * r)));
  for (int y = 0; y < h + 2 * r; ++y)
    for (int x = 0; x < w + 2 * r; ++x) {
      const int sy = std::min(std::max(y - r, 0), h - 1), sx = std::min(std::max(x - r, 0), w - 1);
      padded[size_t(y)][size_t(x)] = img[size_t(sy)][size_t(sx)];
    }
  const double k[3][3] = {{1, 2, 1}, {2, 4, 2}, {1, 2, 1}};
  Plane out(static_cast<size_t>(h), std::vector<double>(static_cast<size_t>(w)));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      double s = 0;
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) s += k[i][j] / 16.0 * padded[size_t(y + i * r)][size_t(x + j * r)];
      out[size_t(y)][size_t(x)] = s;
    }
  return out;
}

// Returns (high, low) of a plane after 5 levels.
std::pair<Plane, Plane> reference_decompose(Plane img) {
  Plane high(img.size(), std::vector<double>(img[0].size(), 0.0));
  for (int i = 0; i < 5; ++i) {
    Plane low = reference_blur(img, 1 << i);
    for (size_t y = 0; y < img.size(); ++y)
      for (size_t x = 0; x < img[0].size(); ++x) high[y][x] += img[y][x] - low[y][x];
    img = std::move(low);
  }
  return {high, img};
}

at::Tensor reference_wavelet(const at::Tensor& hq_in, const at::Tensor& lq_in) {
  const at::Tensor hq = hq_in.to(at::kDouble).contiguous();
  const at::Tensor lq = lq_in.to(at::kDouble).contiguous();
  at::Tensor out = at::empty_like(hq);
  auto H = hq.accessor<double, 5>();
  auto L = lq.accessor<double, 5>();
  auto O = out.accessor<double, 5>();
  const int64_t n = hq.size(2), h = hq.size(3), w = hq.size(4);
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t f = 0; f < n; ++f) {
      Plane ph(static_cast<size_t>(h), std::vector<double>(static_cast<size_t>(w)));
      Plane pl = ph;
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          ph[size_t(y)][size_t(x)] = H[0][c][f][y][x];
          pl[size_t(y)][size_t(x)] = L[0][c][f][y][x];
        }
      const Plane high = reference_decompose(ph).first;
      const Plane low = reference_decompose(pl).second;
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const double v = high[size_t(y)][size_t(x)] + low[size_t(y)][size_t(x)];
          O[0][c][f][y][x] = std::min(1.0, std::max(-1.0, v));
        }
    }
  return out;
}

// ---------------------------------------------------------------------------------------------------

TEST(ColourFix, ParseAndName) {
  for (ColorFix f : {ColorFix::None, ColorFix::AdaIN, ColorFix::Wavelet}) {
    EXPECT_EQ(parse_color_fix(color_fix_name(f)), f);
  }
  EXPECT_STREQ(color_fix_name(ColorFix::AdaIN), "adain");
  EXPECT_STREQ(color_fix_name(ColorFix::Wavelet), "wavelet");
  EXPECT_STREQ(color_fix_name(ColorFix::None), "none");
  for (const char* bad : {"", "AdaIN", "wavelets", "box", " none"}) {
    try {
      parse_color_fix(bad);
      ADD_FAILURE() << "no exception for \"" << bad << "\"";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), Error::Kind::BadSettings);
      EXPECT_NE(std::string(e.what()).find("wavelet"), std::string::npos) << e.what();  // lists the choices
    }
  }
}

TEST(ColourFix, NoneIsIdentity) {
  const at::Tensor hq = normal_video(2, 5, 6, 0.0, 2.0, 1);  // values beyond [-1, 1] are kept too
  const at::Tensor lq = normal_video(2, 5, 6, 0.0, 0.1, 2);
  const at::Tensor out = colour_correct(hq, lq, ColorFix::None);
  EXPECT_TRUE(out.is_same(hq));
  EXPECT_TRUE(colour_correct(hq, at::Tensor(), ColorFix::None).equal(hq));
}

TEST(AdaIN, TakesOverLqStatistics) {
  const at::Tensor hq = normal_video(3, 24, 32, -0.1, 0.3, 3);
  // lq with per-channel and per-frame different statistics, well inside [-1, 1].
  const at::Tensor scale = at::tensor({0.05, 0.1, 0.15}, at::kFloat).view({1, 3, 1, 1, 1});
  const at::Tensor shift = at::tensor({-0.2, 0.0, 0.3}, at::kFloat).view({1, 3, 1, 1, 1}) +
                           at::tensor({0.0, 0.05, -0.05}, at::kFloat).view({1, 1, 3, 1, 1});
  const at::Tensor lq = normal_video(3, 24, 32, 0.0, 1.0, 4) * scale + shift;
  const at::Tensor out = colour_correct(hq, lq, ColorFix::AdaIN);
  ASSERT_EQ(out.sizes(), hq.sizes());
  ASSERT_EQ(out.scalar_type(), at::kFloat);
  const at::Tensor mo = out.mean({3, 4}), ml = lq.mean({3, 4});
  const at::Tensor so = at::var(out, {3, 4}, false, false), sl = at::var(lq, {3, 4}, false, false);
  EXPECT_LT(max_abs_diff(mo, ml), 1e-5);
  // std_out = std_hq * sqrt(var_lq + eps) / sqrt(var_hq + eps): equal to std_lq up to the eps terms.
  EXPECT_LT(max_abs_diff(so.sqrt(), sl.sqrt()), 1e-3);
  // Exactly: std_out * sqrt(var_hq + eps) / std_hq == sqrt(var_lq + eps).
  const at::Tensor vh = at::var(hq, {3, 4}, false, false);
  EXPECT_LT(max_abs_diff(so.sqrt() * vh.add(1e-5).sqrt() / vh.sqrt(), sl.add(1e-5).sqrt()), 1e-5);
}

TEST(AdaIN, SameInputIsIdentity) {
  const at::Tensor x = normal_video(2, 16, 20, 0.1, 0.2, 5).clamp(-0.95, 0.95);
  EXPECT_LT(max_abs_diff(colour_correct(x, x, ColorFix::AdaIN), x), 1e-5);
}

TEST(AdaIN, MatchesLoopReference) {
  for (auto dims : std::vector<std::vector<int64_t>>{{2, 5, 6}, {1, 4, 4}, {3, 1, 7}, {1, 1, 1}}) {
    SCOPED_TRACE(::testing::Message() << "n, h, w = " << dims[0] << ", " << dims[1] << ", " << dims[2]);
    // Spread wide enough that clamping takes effect.
    const at::Tensor hq = normal_video(dims[0], dims[1], dims[2], 0.2, 0.6, 6);
    const at::Tensor lq = normal_video(dims[0], dims[1], dims[2], -0.1, 0.7, 7).clamp(-1, 1);
    const at::Tensor out = colour_correct(hq, lq, ColorFix::AdaIN);
    EXPECT_LT(max_abs_diff(out, reference_adain(hq, lq)), 2e-6);
    EXPECT_LE(out.abs().max().item<float>(), 1.0f);
  }
}

TEST(Wavelet, HighPlusLowReconstructsInput) {
  const at::Tensor x = normal_video(2, 37, 29, 0.0, 0.7, 8);  // partly beyond [-1, 1]
  const at::Tensor out = colour_correct(x, x, ColorFix::Wavelet);
  EXPECT_LT(max_abs_diff(out, x.clamp(-1, 1)), 1e-5);
}

TEST(Wavelet, ConstantLqGivesConstantLow) {
  const at::Tensor c = at::full({1, 3, 2, 20, 24}, 0.25, at::kFloat);
  // A constant hq has no high band: the output is lq's (constant) low band.
  EXPECT_LT(max_abs_diff(colour_correct(at::full_like(c, -0.6), c, ColorFix::Wavelet), c), 1e-6);
  // With a textured hq the output is high(hq) + 0.25, i.e. the result against lq = 0 shifted by 0.25.
  const at::Tensor hq = normal_video(2, 20, 24, 0.3, 0.1, 9);
  const at::Tensor zero_low = colour_correct(hq, at::zeros_like(c), ColorFix::Wavelet);
  EXPECT_LT(zero_low.abs().max().item<float>(), 0.7f);  // nothing clamped in either
  EXPECT_LT(max_abs_diff(colour_correct(hq, c, ColorFix::Wavelet), zero_low + 0.25), 1e-6);
  // The high band of hq has (almost) no mean: the output mean is lq's, not hq's 0.3.
  EXPECT_NEAR(colour_correct(hq, c, ColorFix::Wavelet).mean().item<double>(), 0.25, 0.02);
}

TEST(Wavelet, MatchesLoopReference) {
  // Sizes below, at and above the largest padding radius (16), tiny frames included.
  for (auto dims : std::vector<std::vector<int64_t>>{{2, 7, 9}, {1, 4, 4}, {1, 1, 1}, {1, 3, 20}, {1, 40, 35}}) {
    SCOPED_TRACE(::testing::Message() << "n, h, w = " << dims[0] << ", " << dims[1] << ", " << dims[2]);
    const at::Tensor hq = normal_video(dims[0], dims[1], dims[2], 0.0, 0.6, 10);
    const at::Tensor lq = normal_video(dims[0], dims[1], dims[2], 0.2, 0.5, 11).clamp(-1, 1);
    const at::Tensor out = colour_correct(hq, lq, ColorFix::Wavelet);
    ASSERT_EQ(out.sizes(), hq.sizes());
    EXPECT_LT(max_abs_diff(out, reference_wavelet(hq, lq)), 2e-6);
  }
}

TEST(Wavelet, SinglePixelFrameIsLq) {
  // A 1x1 frame blurs to itself: high(hq) = 0, low(lq) = lq.
  const at::Tensor hq = normal_video(3, 1, 1, 0.0, 0.5, 12);
  const at::Tensor lq = normal_video(3, 1, 1, 0.0, 0.5, 13).clamp(-1, 1);
  EXPECT_LT(max_abs_diff(colour_correct(hq, lq, ColorFix::Wavelet), lq), 1e-7);
}

TEST(ColourFix, KeepsDtypeAndComputesInFloat32) {
  const at::Tensor hq = normal_video(2, 12, 10, 0.0, 0.4, 14);
  const at::Tensor lq = normal_video(2, 12, 10, 0.1, 0.3, 15).clamp(-1, 1);
  for (ColorFix m : {ColorFix::AdaIN, ColorFix::Wavelet}) {
    SCOPED_TRACE(color_fix_name(m));
    const at::Tensor ref = colour_correct(hq, lq, m);
    for (auto dt : {at::kHalf, at::kBFloat16, at::kDouble}) {
      const at::Tensor h = hq.to(dt), l = lq.to(dt);
      const at::Tensor out = colour_correct(h, l, m);
      EXPECT_EQ(out.scalar_type(), dt);
      // The float32 computation of the converted inputs, converted back.
      EXPECT_TRUE(out.equal(colour_correct(h.to(at::kFloat), l.to(at::kFloat), m).to(dt))) << dt;
      EXPECT_LT(max_abs_diff(out, ref), dt == at::kBFloat16 ? 0.05 : 0.01) << dt;
    }
  }
}

TEST(ColourFix, DoesNotModifyInputs) {
  const at::Tensor hq = normal_video(1, 8, 8, 0.0, 0.5, 16);
  const at::Tensor lq = normal_video(1, 8, 8, 0.0, 0.5, 17);
  const at::Tensor hq0 = hq.clone(), lq0 = lq.clone();
  colour_correct(hq, lq, ColorFix::AdaIN);
  colour_correct(hq, lq, ColorFix::Wavelet);
  EXPECT_TRUE(hq.equal(hq0));
  EXPECT_TRUE(lq.equal(lq0));
}

TEST(ColourFix, BadInputThrows) {
  const at::Tensor good = at::zeros({1, 3, 2, 8, 8});
  auto expect_bad = [&](const at::Tensor& hq, const at::Tensor& lq) {
    for (ColorFix m : {ColorFix::AdaIN, ColorFix::Wavelet}) {
      try {
        colour_correct(hq, lq, m);
        ADD_FAILURE() << color_fix_name(m) << ": no exception";
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), Error::Kind::BadInput) << e.what();
      }
    }
  };
  expect_bad(good, at::zeros({1, 3, 2, 8, 9}));   // shape mismatch
  expect_bad(good, at::zeros({1, 3, 1, 8, 8}));   // frame count mismatch
  expect_bad(at::zeros({3, 2, 8, 8}), at::zeros({3, 2, 8, 8}));        // rank
  expect_bad(at::zeros({1, 4, 2, 8, 8}), at::zeros({1, 4, 2, 8, 8}));  // channels
  expect_bad(at::zeros({2, 3, 2, 8, 8}), at::zeros({2, 3, 2, 8, 8}));  // batch
  expect_bad(good.to(at::kByte), good.to(at::kByte));                  // dtype
  expect_bad(good, at::Tensor());                                      // undefined
  try {
    colour_correct(good, at::zeros({1, 3, 2, 8, 9}), ColorFix::AdaIN);
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("[1, 3, 2, 8, 8]"), std::string::npos) << msg;  // expected
    EXPECT_NE(msg.find("[1, 3, 2, 8, 9]"), std::string::npos) << msg;  // found
  }
}

TEST(ColourFix, CudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Tensor hq = normal_video(2, 45, 37, 0.0, 0.5, 18);
  const at::Tensor lq = normal_video(2, 45, 37, 0.1, 0.4, 19).clamp(-1, 1);
  for (ColorFix m : {ColorFix::AdaIN, ColorFix::Wavelet}) {
    const at::Tensor gpu = colour_correct(hq.cuda(), lq.cuda(), m);
    EXPECT_TRUE(gpu.is_cuda());
    EXPECT_LT(max_abs_diff(gpu.cpu(), colour_correct(hq, lq, m)), 1e-5) << color_fix_name(m);
  }
  EXPECT_THROW(colour_correct(hq.cuda(), lq, ColorFix::AdaIN), Error);  // devices differ
}

// The fixtures' decoder output of chunk c >= 1 (frames 8c+13 .. 8c+20), colour-corrected against the
// reference's LQ frames, must give the reference's final frames (both stored in float16 / uint8). One
// case per fixture, of every variant; a fixture without those intermediates (e.g. the compact one) skips.
class ColourFixtures : public test::AnyVariantFixtureTest {};

TEST_P(ColourFixtures, MatchesFixtures) {
  const std::string& dir = fixture();
  int checked = 0;
  const Json params = read_json_file(dir + "/params.json");
  const ColorFix method = parse_color_fix(params.at("color_fix").get<std::string>());
  const int64_t n_frames = params.at("num_frames").get<int64_t>();
  const TensorMap input = read_safetensors(dir + "/input.safetensors");
  const TensorMap expected = read_safetensors(dir + "/expected.safetensors");
  const at::Tensor lq_u8 = input.at("lq_video_u8");  // uint8 [F, H, W, 3]
  // Reference output: uint8 [N, H, W, 3], or float16 [3, N, H, W] in [-1, 1].
  const bool as_u8 = expected.count("frames_u8") > 0;
  const at::Tensor want = as_u8 ? expected.at("frames_u8") : expected.at("frames");
  for (const auto& [key, decoded] : expected) {
    const std::string suffix = ".decoded";
    if (key.rfind("chunk", 0) != 0 || key.size() <= suffix.size() ||
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const int64_t c = std::stoll(key.substr(5, key.size() - 5 - suffix.size()));
    if (c < 1) continue;  // chunk 0's decoded frames include the dropped warm-up frames
    SCOPED_TRACE(key);
    const int64_t first = 8 * c + 13;
    const int64_t n = std::min<int64_t>(decoded.size(2), n_frames - first);
    ASSERT_GT(n, 0);
    // The reference corrected float32 frames against float32 LQ frames.
    const at::Tensor hq = decoded.narrow(2, 0, n).to(at::kFloat);                       // [1, 3, n, H, W]
    const at::Tensor lq = lq_u8.narrow(0, first, n).to(at::kFloat).div(255).mul(2).sub(1)  // [n, H, W, 3]
                              .permute({3, 0, 1, 2}).unsqueeze(0);                       // [1, 3, n, H, W]
    const at::Tensor out = colour_correct(hq, lq, method);
    if (as_u8) {
      const at::Tensor got = out[0].add(1).mul(127.5).round().clamp(0, 255).to(at::kByte).permute({1, 2, 3, 0});
      const at::Tensor d = (got.to(at::kInt) - want.narrow(0, first, n).to(at::kInt)).abs();
      const double equal = d.eq(0).sum().item<int64_t>() / double(d.numel());
      const int max_diff = d.max().item<int>();
      std::cout << "[ fixture  ] " << dir << " " << key << " (" << color_fix_name(method)
                << "): " << equal * 100 << " % of bytes equal, max |diff| " << max_diff << "\n";
      // The decoded frames are stored in float16 only, so exact equality is not expected.
      EXPECT_GE(equal, 0.98);
      EXPECT_LE(max_diff, 1);
    } else {
      // Both sides went through float16 (spacing 2^-11 near 1, scaled by std_lq / std_hq).
      const at::Tensor d = (out[0] - want.narrow(1, first, n).to(at::kFloat)).abs();
      const double max_diff = d.max().item<double>(), mean_diff = d.mean().item<double>();
      std::cout << "[ fixture  ] " << dir << " " << key << " (" << color_fix_name(method)
                << "): max |diff| " << max_diff << ", mean |diff| " << mean_diff << "\n";
      EXPECT_LE(max_diff, 4e-3);
      EXPECT_LE(mean_diff, 5e-4);
    }
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << base_name(dir) << ": no chunkK.decoded (K >= 1) in its expected.safetensors";
}

FLASHVSR_FIXTURE_TESTS(ColourFixtures);

}  // namespace
}  // namespace flashvsr
