// SPDX-License-Identifier: LGPL-2.1-or-later
// Tests of model/preprocess: PIL-compatible bicubic resize, scaled_size, u8 <-> unit mapping, padding.
#include "preprocess.h"

#include "error.h"
#include "io/safetensors.h"
#include "test_support.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

using namespace flashvsr::io;

namespace flashvsr {
namespace {

// ---------------------------------------------------------------------------------------------------
// A straightforward per-pixel evaluation of Pillow's bicubic resampling, written from the algorithm's
// description independently of the library: double weights per output sample, optionally quantised to
// 22-bit fixed point (fixed_point = true, what Pillow does) or kept in double with round-half-up
// (fixed_point = false, the "ideal" filter), horizontal pass then vertical pass, each to uint8.

double cubic(double x) {
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1) return (a + 2) * x * x * x - (a + 3) * x * x + 1;
  if (x < 2) return a * x * x * x - 5 * a * x * x + 8 * a * x - 4 * a;
  return 0;
}

struct Taps {
  int first = 0;
  std::vector<double> w;       // normalised
  std::vector<int64_t> fixed;  // quantised
};

std::vector<Taps> axis_taps(int in, int out) {
  const double scale = double(in) / out;
  const double fs = std::max(scale, 1.0);
  const double support = 2 * fs;
  std::vector<Taps> taps(out);
  for (int o = 0; o < out; ++o) {
    const double c = (o + 0.5) * scale;
    int lo = int(c - support + 0.5);  // truncation toward zero
    int hi = int(c + support + 0.5);
    lo = std::max(lo, 0);
    hi = std::min(hi, in);
    Taps& t = taps[o];
    t.first = lo;
    double total = 0;
    for (int i = lo; i < hi; ++i) {
      t.w.push_back(cubic((i - c + 0.5) / fs));
      total += t.w.back();
    }
    for (double& v : t.w) {
      if (total != 0) v /= total;
      const double s = v * 4194304.0;  // 2^22
      t.fixed.push_back(v < 0 ? int64_t(s - 0.5) : int64_t(s + 0.5));
    }
  }
  return taps;
}

uint8_t to_u8_fixed(int64_t acc) {
  if (acc <= 0) return 0;
  if (acc >= (int64_t(256) << 22)) return 255;
  return uint8_t(acc >> 22);
}

uint8_t to_u8_double(double v) {
  const double r = std::floor(v + 0.5);
  return uint8_t(std::min(255.0, std::max(0.0, r)));
}

// frames: uint8 [n, h, w, c] (CPU) -> uint8 [n, oh, ow, c]
at::Tensor reference_resize(const at::Tensor& frames, int ow, int oh, bool fixed_point) {
  at::Tensor src = frames.contiguous();
  const int n = int(src.size(0)), h = int(src.size(1)), w = int(src.size(2)), c = int(src.size(3));
  at::Tensor mid = src;
  if (ow != w) {
    mid = at::empty({n, h, ow, c}, at::kByte);
    const auto taps = axis_taps(w, ow);
    auto in = src.accessor<uint8_t, 4>();
    auto out = mid.accessor<uint8_t, 4>();
    for (int f = 0; f < n; ++f)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < ow; ++x)
          for (int ch = 0; ch < c; ++ch) {
            const Taps& t = taps[x];
            int64_t acc = int64_t(1) << 21;
            double dacc = 0;
            for (size_t k = 0; k < t.w.size(); ++k) {
              acc += int64_t(in[f][y][t.first + int(k)][ch]) * t.fixed[k];
              dacc += in[f][y][t.first + int(k)][ch] * t.w[k];
            }
            out[f][y][x][ch] = fixed_point ? to_u8_fixed(acc) : to_u8_double(dacc);
          }
  }
  at::Tensor res = mid;
  if (oh != h) {
    res = at::empty({n, oh, ow, c}, at::kByte);
    const auto taps = axis_taps(h, oh);
    auto in = mid.accessor<uint8_t, 4>();
    auto out = res.accessor<uint8_t, 4>();
    for (int f = 0; f < n; ++f)
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x)
          for (int ch = 0; ch < c; ++ch) {
            const Taps& t = taps[y];
            int64_t acc = int64_t(1) << 21;
            double dacc = 0;
            for (size_t k = 0; k < t.w.size(); ++k) {
              acc += int64_t(in[f][t.first + int(k)][x][ch]) * t.fixed[k];
              dacc += in[f][t.first + int(k)][x][ch] * t.w[k];
            }
            out[f][y][x][ch] = fixed_point ? to_u8_fixed(acc) : to_u8_double(dacc);
          }
  }
  return res;
}

at::Tensor random_frames(int64_t n, int64_t h, int64_t w, int64_t c, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randint(0, 256, {n, h, w, c}, gen, at::TensorOptions().dtype(at::kByte));
}

// A smooth-ish image with hard edges too: overshoot and clipping at 0/255 get exercised.
at::Tensor pattern_frames(int64_t n, int64_t h, int64_t w) {
  at::Tensor img = at::empty({n, h, w, 3}, at::kByte);
  auto a = img.accessor<uint8_t, 4>();
  for (int64_t f = 0; f < n; ++f)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        a[f][y][x][0] = ((x / 3 + y / 5 + f) % 2) ? 255 : 0;
        a[f][y][x][1] = uint8_t((x * 255) / std::max<int64_t>(w - 1, 1));
        a[f][y][x][2] = uint8_t((x * 37 + y * 91 + f * 13) % 256);
      }
  return img;
}

struct Diff {
  double equal_fraction;
  int max_abs;
};

Diff compare_u8(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return {0.0, 256};
  const at::Tensor d = (a.to(at::kInt) - b.to(at::kInt)).abs_();
  const double eq = d.eq(0).sum().item<int64_t>() / double(std::max<int64_t>(d.numel(), 1));
  const int mx = d.numel() ? d.max().item<int>() : 0;
  return {eq, mx};
}

void expect_matches_reference(int w, int h, int ow, int oh, const at::Tensor& frames) {
  SCOPED_TRACE(::testing::Message() << w << "x" << h << " -> " << ow << "x" << oh);
  BicubicResize resize(w, h, ow, oh, at::kCPU);
  const at::Tensor got = resize(frames);
  ASSERT_EQ(got.scalar_type(), at::kByte);
  ASSERT_EQ(got.sizes(), (at::IntArrayRef{frames.size(0), oh, ow, frames.size(3)}));
  // Exactly the fixed-point algorithm.
  const Diff fixed = compare_u8(got, reference_resize(frames, ow, oh, /*fixed_point=*/true));
  EXPECT_EQ(fixed.equal_fraction, 1.0);
  EXPECT_EQ(fixed.max_abs, 0);
  // And close to the same filter evaluated in double precision (quantisation moves values by at most 1
  // per pass; the intermediate uint8 rounding is common to both).
  const Diff ideal = compare_u8(got, reference_resize(frames, ow, oh, /*fixed_point=*/false));
  EXPECT_LE(ideal.max_abs, 1);
  EXPECT_GE(ideal.equal_fraction, 0.99);
}

// ---------------------------------------------------------------------------------------------------

// The reference's pre-processing (PIL bicubic) of every fixture, of every variant, one case per fixture.
class BicubicResizeFixtures : public test::AnyVariantFixtureTest {};

TEST_P(BicubicResizeFixtures, MatchesPillowFixtures) {
  const std::string& dir = fixture();
  const TensorMap input = read_safetensors(dir + "/input.safetensors");
  ASSERT_TRUE(input.count("lr_frames"));
  ASSERT_TRUE(input.count("lq_video_u8"));
  const at::Tensor lr = input.at("lr_frames");   // uint8 [N, h, w, 3]
  const at::Tensor lq = input.at("lq_video_u8");  // uint8 [F, H, W, 3]
  ASSERT_EQ(lr.dim(), 4);
  ASSERT_EQ(lq.dim(), 4);
  const int64_t n = lr.size(0), h = lr.size(1), w = lr.size(2);
  const int64_t oh = lq.size(1), ow = lq.size(2);
  ASSERT_GE(lq.size(0), n);
  BicubicResize resize(w, h, ow, oh, at::kCPU);
  const at::Tensor got = resize(lr);
  const Diff d = compare_u8(got, lq.narrow(0, 0, n));
  std::cout << "[ fixture  ] " << dir << ": " << w << "x" << h << " -> " << ow << "x" << oh << ", " << n
            << " frames: " << d.equal_fraction * 100.0 << " % of bytes equal, max |diff| " << d.max_abs
            << "\n";
  EXPECT_GE(d.equal_fraction, 0.999);
  EXPECT_LE(d.max_abs, 1);
  // The frames past N repeat the last resized frame.
  for (int64_t f = n; f < lq.size(0); ++f) EXPECT_TRUE(lq[f].equal(got[n - 1])) << "frame " << f;
}

FLASHVSR_FIXTURE_TESTS(BicubicResizeFixtures);

TEST(BicubicResize, IdentitySizeIsNoOp) {
  const at::Tensor frames = random_frames(2, 13, 17, 3, 1);
  BicubicResize resize(17, 13, 17, 13, at::kCPU);
  const at::Tensor out = resize(frames);
  EXPECT_TRUE(out.equal(frames));
  // A non-contiguous input (a strided view) too.
  const at::Tensor big = random_frames(2, 13, 34, 3, 2);
  const at::Tensor view = big.slice(2, 0, 34, 2);
  EXPECT_TRUE(resize(view).equal(view.contiguous()));
}

TEST(BicubicResize, UpscaleByFourMatchesReference) {
  expect_matches_reference(24, 16, 96, 64, random_frames(2, 16, 24, 3, 3));
  expect_matches_reference(24, 16, 96, 64, pattern_frames(2, 16, 24));
}

TEST(BicubicResize, DownscaleMatchesReference) {
  expect_matches_reference(97, 61, 23, 17, random_frames(1, 61, 97, 3, 4));
  expect_matches_reference(97, 61, 23, 17, pattern_frames(2, 61, 97));
  expect_matches_reference(64, 64, 8, 8, pattern_frames(1, 64, 64));      // integer factor 8
  expect_matches_reference(50, 40, 1, 1, random_frames(1, 40, 50, 3, 5)); // to a single pixel
  // A smooth image shrunk by 4 stays close to its box average (sanity of the whole filter).
  const at::Tensor ramp = at::arange(64, at::kFloat).mul(4).view({1, 1, 64, 1}).expand({1, 8, 64, 3});
  const at::Tensor out = BicubicResize(64, 8, 16, 2, at::kCPU)(ramp.to(at::kByte).contiguous());
  for (int64_t x = 1; x < 15; ++x) {  // away from the borders
    const double box = 4.0 * (4 * x + 1.5);
    EXPECT_NEAR(out[0][0][x][0].item<int>(), box, 1.0) << "x = " << x;
  }
}

TEST(BicubicResize, NonIntegerScalesAndOddSizes) {
  expect_matches_reference(70, 46, 211, 139, pattern_frames(1, 46, 70));
  expect_matches_reference(70, 46, 211, 139, random_frames(1, 46, 70, 3, 6));
  expect_matches_reference(33, 21, 50, 31, random_frames(2, 21, 33, 3, 7));  // x1.5
  expect_matches_reference(33, 21, 23, 29, random_frames(1, 21, 33, 3, 8));  // down in x, up in y
  expect_matches_reference(33, 21, 33, 40, random_frames(1, 21, 33, 3, 9));  // vertical pass only
  expect_matches_reference(33, 21, 47, 21, random_frames(1, 21, 33, 3, 10)); // horizontal pass only
  expect_matches_reference(5, 3, 7, 11, random_frames(1, 3, 5, 1, 11));     // one channel
  expect_matches_reference(9, 7, 13, 5, random_frames(1, 7, 9, 4, 12));     // four channels
}

TEST(BicubicResize, SinglePixelInput) {
  at::Tensor px = at::empty({1, 1, 1, 3}, at::kByte);
  px[0][0][0][0] = 12;
  px[0][0][0][1] = 200;
  px[0][0][0][2] = 255;
  const at::Tensor out = BicubicResize(1, 1, 4, 3, at::kCPU)(px);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{1, 3, 4, 3}));
  EXPECT_TRUE(out.equal(px.expand({1, 3, 4, 3})));
  EXPECT_TRUE(BicubicResize(1, 1, 1, 1, at::kCPU)(px).equal(px));
  expect_matches_reference(1, 1, 5, 2, random_frames(1, 1, 1, 3, 13));
}

TEST(BicubicResize, ConstantImageStaysConstant) {
  const int sizes[][4] = {{16, 12, 64, 48}, {70, 46, 211, 139}, {97, 61, 23, 17}, {40, 30, 3, 2},
                          {7, 5, 1, 1},     {3, 2, 100, 1}};
  for (const auto& s : sizes) {
    BicubicResize resize(s[0], s[1], s[2], s[3], at::kCPU);
    for (int v : {0, 1, 127, 254, 255}) {
      SCOPED_TRACE(::testing::Message() << s[0] << "x" << s[1] << " -> " << s[2] << "x" << s[3] << ", value "
                                        << v);
      const at::Tensor img = at::full({2, s[1], s[0], 3}, v, at::kByte);
      const at::Tensor out = resize(img);
      ASSERT_EQ(out.sizes(), (at::IntArrayRef{2, s[3], s[2], 3}));
      EXPECT_TRUE(out.eq(v).all().item<bool>());
    }
  }
}

TEST(BicubicResize, EmptyBatch) {
  const at::Tensor none = at::empty({0, 4, 5, 3}, at::kByte);
  const at::Tensor out = BicubicResize(5, 4, 10, 8, at::kCPU)(none);
  EXPECT_EQ(out.sizes(), (at::IntArrayRef{0, 8, 10, 3}));
}

TEST(BicubicResize, BadInputThrows) {
  BicubicResize resize(8, 6, 16, 12, at::kCPU);
  auto expect_bad_input = [&](const at::Tensor& t) {
    try {
      resize(t);
      ADD_FAILURE() << "no exception for " << t.sizes() << " " << t.scalar_type();
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), Error::Kind::BadInput) << e.what();
      if (t.defined()) {
        EXPECT_NE(std::string(e.what()).find("found"), std::string::npos) << e.what();
      }
    }
  };
  expect_bad_input(at::zeros({1, 6, 8, 3}, at::kFloat));  // dtype
  expect_bad_input(at::zeros({6, 8, 3}, at::kByte));      // rank
  expect_bad_input(at::zeros({1, 1, 6, 8, 3}, at::kByte));
  expect_bad_input(at::zeros({1, 7, 8, 3}, at::kByte));   // height
  expect_bad_input(at::zeros({1, 6, 9, 3}, at::kByte));   // width
  expect_bad_input(at::Tensor());                          // undefined
  for (auto dims : std::vector<std::vector<int64_t>>{{0, 6, 16, 12}, {8, -1, 16, 12}, {8, 6, 0, 12}, {8, 6, 16, 0}}) {
    try {
      BicubicResize bad(dims[0], dims[1], dims[2], dims[3], at::kCPU);
      ADD_FAILURE() << "no exception for sizes " << shape_string(dims);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), Error::Kind::BadSettings) << e.what();
    }
  }
}

TEST(BicubicResize, CudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Tensor frames = random_frames(3, 46, 70, 3, 14);
  for (auto s : std::vector<std::vector<int64_t>>{{211, 139}, {280, 184}, {23, 17}, {70, 92}}) {
    const at::Tensor cpu = BicubicResize(70, 46, s[0], s[1], at::kCPU)(frames);
    const at::Tensor gpu = BicubicResize(70, 46, s[0], s[1], at::Device(at::kCUDA, 0))(frames.cuda());
    EXPECT_TRUE(gpu.is_cuda());
    EXPECT_TRUE(gpu.cpu().equal(cpu)) << s[0] << "x" << s[1];
  }
  // The unit mapping is exact on the device too (no reciprocal multiplication), and so is padding.
  const at::Tensor all = at::arange(256, at::kInt).to(at::kByte).view({1, 1, 256, 1}).expand({2, 3, 256, 3}).contiguous();
  EXPECT_TRUE(u8_to_unit(all.cuda(), at::kFloat).cpu().equal(u8_to_unit(all, at::kFloat)));
  EXPECT_TRUE(unit_to_u8(u8_to_unit(all.cuda(), at::kHalf)).cpu().equal(all));
  const at::Tensor x = at::randn({1, 3, 2, 5, 7});
  EXPECT_TRUE(pad_to_multiple(x.cuda(), 16).cpu().equal(pad_to_multiple(x, 16)));
  // Frames on the wrong device are refused.
  EXPECT_THROW(BicubicResize(70, 46, 140, 92, at::kCPU)(frames.cuda()), Error);
}

// ---------------------------------------------------------------------------------------------------

TEST(ScaledSize, RoundsHalfToEven) {
  EXPECT_EQ(scaled_size(64, 4.0), 256);
  EXPECT_EQ(scaled_size(270, 4.0), 1080);
  EXPECT_EQ(scaled_size(270, 1.5), 405);
  EXPECT_EQ(scaled_size(5, 0.5), 2);   // 2.5 -> 2
  EXPECT_EQ(scaled_size(7, 0.5), 4);   // 3.5 -> 4
  EXPECT_EQ(scaled_size(3, 1.5), 4);   // 4.5 -> 4
  EXPECT_EQ(scaled_size(5, 1.5), 8);   // 7.5 -> 8
  EXPECT_EQ(scaled_size(1, 2.5), 2);   // 2.5 -> 2
  EXPECT_EQ(scaled_size(1, 3.5), 4);   // 3.5 -> 4
  EXPECT_EQ(scaled_size(3, 0.7), 2);   // 2.0999999999999996
  EXPECT_EQ(scaled_size(10, 0.35), 4); // 3.4999999999999996 (the double product, as Python sees it)
  EXPECT_EQ(scaled_size(3, 1.0 / 3.0), 1);
  EXPECT_EQ(scaled_size(1, 0.5000001), 1);
}

TEST(ScaledSize, BadArgumentsThrow) {
  for (double s : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    try {
      scaled_size(10, s);
      ADD_FAILURE() << "no exception for scale " << s;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), Error::Kind::BadSettings);
    }
  }
  EXPECT_THROW(scaled_size(0, 2.0), Error);
  EXPECT_THROW(scaled_size(-4, 2.0), Error);
  EXPECT_THROW(scaled_size(1, 0.5), Error);  // rounds to 0
  EXPECT_THROW(scaled_size(1, 0.4), Error);
}

// ---------------------------------------------------------------------------------------------------

TEST(UnitMapping, U8ToUnitValuesAndLayout) {
  // All 256 values, laid out [n = 2, H = 4, W = 32, 3] with distinct channels.
  at::Tensor frames = at::arange(256, at::kInt).view({2, 4, 32, 1}).repeat({1, 1, 1, 3});
  frames.select(3, 1).sub_(255).neg_();                    // channel 1: 255 - v
  frames.select(3, 2).copy_(frames.select(3, 0).flip(2));  // channel 2: mirrored
  frames = frames.to(at::kByte);
  const at::Tensor unit = u8_to_unit(frames, at::kFloat);
  ASSERT_EQ(unit.sizes(), (at::IntArrayRef{1, 3, 2, 4, 32}));
  ASSERT_EQ(unit.scalar_type(), at::kFloat);
  auto u = unit.accessor<float, 5>();
  auto f = frames.accessor<uint8_t, 4>();
  for (int c = 0; c < 3; ++c)
    for (int n = 0; n < 2; ++n)
      for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 32; ++x) {
          const float expect = float(f[n][y][x][c]) / 255.0f * 2.0f - 1.0f;
          ASSERT_EQ(u[0][c][n][y][x], expect) << c << " " << n << " " << y << " " << x;
        }
  EXPECT_EQ(unit.min().item<float>(), -1.0f);
  EXPECT_EQ(unit.max().item<float>(), 1.0f);
  // Other dtypes are the float32 values converted.
  EXPECT_TRUE(u8_to_unit(frames, at::kHalf).equal(unit.to(at::kHalf)));
  EXPECT_TRUE(u8_to_unit(frames, at::kBFloat16).equal(unit.to(at::kBFloat16)));
  EXPECT_EQ(u8_to_unit(frames, at::kDouble).scalar_type(), at::kDouble);
}

TEST(UnitMapping, RoundTrips) {
  const at::Tensor frames = random_frames(3, 5, 7, 3, 15);
  for (auto dt : {at::kFloat, at::kDouble, at::kHalf}) {
    const at::Tensor back = unit_to_u8(u8_to_unit(frames, dt));
    EXPECT_EQ(back.scalar_type(), at::kByte);
    EXPECT_TRUE(back.equal(frames)) << dt;
  }
  const at::Tensor all = at::arange(256, at::kInt).to(at::kByte).view({1, 1, 256, 1}).expand({1, 1, 256, 3});
  EXPECT_TRUE(unit_to_u8(u8_to_unit(all.contiguous(), at::kFloat)).equal(all));
}

TEST(UnitMapping, UnitToU8RoundsAndClamps) {
  // [1, 3, 1, 1, 6]
  const std::vector<float> vals{-5.0f, -1.0f, 0.0f, 1.0f, 7.0f, std::nanf("")};
  at::Tensor x = at::tensor(vals).view({1, 1, 1, 1, 6}).repeat({1, 3, 1, 1, 1});
  x[0][1][0][0][2] = 0.5f / 127.5f - 1.0f + 1e-6f;  // (x+1)*127.5 just above 0.5 -> 1
  x[0][2][0][0][2] = 0.2f;                          // 153.0 -> 153
  const at::Tensor u = unit_to_u8(x);
  ASSERT_EQ(u.sizes(), (at::IntArrayRef{1, 1, 6, 3}));
  const std::vector<int> expect0{0, 0, 128, 255, 255, 0};  // 127.5 rounds to even 128
  for (int i = 0; i < 6; ++i) EXPECT_EQ(u[0][0][i][0].item<int>(), expect0[size_t(i)]) << i;
  EXPECT_EQ(u[0][0][2][1].item<int>(), 1);
  EXPECT_EQ(u[0][0][2][2].item<int>(), 153);
}

TEST(UnitMapping, BadInputThrows) {
  EXPECT_THROW(u8_to_unit(at::zeros({1, 4, 4, 3}, at::kFloat), at::kFloat), Error);  // not uint8
  EXPECT_THROW(u8_to_unit(at::zeros({4, 4, 3}, at::kByte), at::kFloat), Error);      // rank
  EXPECT_THROW(u8_to_unit(at::zeros({1, 4, 4, 4}, at::kByte), at::kFloat), Error);   // channels
  EXPECT_THROW(u8_to_unit(at::zeros({1, 4, 4, 3}, at::kByte), at::kInt), Error);     // target dtype
  EXPECT_THROW(unit_to_u8(at::zeros({3, 1, 4, 4}, at::kFloat)), Error);              // rank
  EXPECT_THROW(unit_to_u8(at::zeros({2, 3, 1, 4, 4}, at::kFloat)), Error);           // batch
  EXPECT_THROW(unit_to_u8(at::zeros({1, 4, 1, 4, 4}, at::kFloat)), Error);           // channels
  EXPECT_THROW(unit_to_u8(at::zeros({1, 3, 1, 4, 4}, at::kByte)), Error);            // dtype
}

// ---------------------------------------------------------------------------------------------------

TEST(PadToMultiple, ShapesAndValues) {
  const at::Tensor x = at::randn({1, 3, 2, 5, 7});
  const at::Tensor p = pad_to_multiple(x, 4);
  ASSERT_EQ(p.sizes(), (at::IntArrayRef{1, 3, 2, 8, 8}));
  EXPECT_TRUE(p.slice(3, 0, 5).slice(4, 0, 7).equal(x));
  for (int64_t y = 0; y < 8; ++y)
    for (int64_t xx = 0; xx < 8; ++xx) {
      const at::Tensor expect = x.select(3, std::min<int64_t>(y, 4)).select(3, std::min<int64_t>(xx, 6));
      ASSERT_TRUE(p.select(3, y).select(3, xx).equal(expect)) << y << " " << xx;
    }
  // Only one dimension short.
  EXPECT_EQ(pad_to_multiple(at::zeros({2, 8, 5}), 4).sizes(), (at::IntArrayRef{2, 8, 8}));
  EXPECT_EQ(pad_to_multiple(at::zeros({2, 5, 8}), 4).sizes(), (at::IntArrayRef{2, 8, 8}));
  // Padding much larger than the image, integer dtype, 2-D.
  const at::Tensor small = at::arange(6, at::kLong).view({2, 3});
  const at::Tensor big = pad_to_multiple(small, 128);
  ASSERT_EQ(big.sizes(), (at::IntArrayRef{128, 128}));
  EXPECT_EQ(big[127][127].item<int64_t>(), 5);
  EXPECT_EQ(big[0][127].item<int64_t>(), 2);
  EXPECT_EQ(big[127][0].item<int64_t>(), 3);
  EXPECT_EQ(big[1][1].item<int64_t>(), 4);
}

TEST(PadToMultiple, NoOpWhenAlreadyAMultiple) {
  const at::Tensor x = at::randn({1, 3, 2, 8, 16});
  const at::Tensor p = pad_to_multiple(x, 8);
  EXPECT_TRUE(p.is_same(x));
  EXPECT_TRUE(pad_to_multiple(at::randn({3, 5, 7}), 1).sizes() == (at::IntArrayRef{3, 5, 7}));
}

TEST(PadToMultiple, BadArgumentsThrow) {
  EXPECT_THROW(pad_to_multiple(at::zeros({4, 4}), 0), Error);
  EXPECT_THROW(pad_to_multiple(at::zeros({4, 4}), -8), Error);
  EXPECT_THROW(pad_to_multiple(at::zeros({4}), 8), Error);
  EXPECT_THROW(pad_to_multiple(at::zeros({3, 0, 4}), 8), Error);
  EXPECT_THROW(pad_to_multiple(at::Tensor(), 8), Error);
}


// ---------------------------------------------------------------------------------------------------
// The float path for deep (10/16-bit) frames: the same taps unquantised, no rounding between passes.

// frames: float [n, h, w, c] (CPU) -> double [n, oh, ow, c]: each pass in double with the normalised
// weights of axis_taps, no rounding or clipping, clamped to [0, 255] at the end.
at::Tensor reference_resize_float(const at::Tensor& frames, int ow, int oh) {
  at::Tensor src = frames.to(at::kDouble).contiguous();
  const int n = int(src.size(0)), h = int(src.size(1)), w = int(src.size(2)), c = int(src.size(3));
  at::Tensor mid = src;
  if (ow != w) {
    mid = at::zeros({n, h, ow, c}, at::kDouble);
    const auto taps = axis_taps(w, ow);
    auto in = src.accessor<double, 4>();
    auto out = mid.accessor<double, 4>();
    for (int f = 0; f < n; ++f)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < ow; ++x)
          for (int ch = 0; ch < c; ++ch)
            for (size_t k = 0; k < taps[x].w.size(); ++k)
              out[f][y][x][ch] += in[f][y][taps[x].first + int(k)][ch] * taps[x].w[k];
  }
  at::Tensor res = mid;
  if (oh != h) {
    res = at::zeros({n, oh, ow, c}, at::kDouble);
    const auto taps = axis_taps(h, oh);
    auto in = mid.accessor<double, 4>();
    auto out = res.accessor<double, 4>();
    for (int f = 0; f < n; ++f)
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x)
          for (int ch = 0; ch < c; ++ch)
            for (size_t k = 0; k < taps[y].w.size(); ++k)
              out[f][y][x][ch] += in[f][taps[y].first + int(k)][x][ch] * taps[y].w[k];
  }
  return res.clamp(0.0, 255.0);
}

// 10-bit codes in [0, 255] scale: float [n, h, w, c] of k * 255 / 1023.
at::Tensor random_ten_bit_frames(int64_t n, int64_t h, int64_t w, int64_t c, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randint(0, 1024, {n, h, w, c}, gen, at::TensorOptions().dtype(at::kFloat)).mul_(255.0 / 1023.0);
}

TEST(BicubicResizeFloat, MatchesTheUnroundedFilterInDouble) {
  const std::vector<std::tuple<int, int, int, int>> sizes{
      {16, 12, 64, 48}, {40, 30, 17, 11}, {13, 9, 29, 23}, {24, 16, 24, 40}, {24, 16, 50, 16}};
  for (const auto& [w, h, ow, oh] : sizes) {
    SCOPED_TRACE(::testing::Message() << w << "x" << h << " -> " << ow << "x" << oh);
    const at::Tensor frames = random_ten_bit_frames(2, h, w, 3, 5);
    const at::Tensor got = BicubicResize(w, h, ow, oh, at::kCPU).resize_float(frames);
    ASSERT_EQ(got.scalar_type(), at::kFloat);
    ASSERT_EQ(got.sizes(), (at::IntArrayRef{2, oh, ow, 3}));
    // float32 accumulation of <= 2 x 9 taps of values <= 255: far below a 10-bit step (0.25).
    EXPECT_LE((got.to(at::kDouble) - reference_resize_float(frames, ow, oh)).abs().max().item<double>(), 1e-3);
  }
}

TEST(BicubicResizeFloat, IdentitySizeKeepsTheValues) {
  const at::Tensor frames = random_ten_bit_frames(2, 9, 13, 3, 6);
  EXPECT_TRUE(at::equal(BicubicResize(13, 9, 13, 9, at::kCPU).resize_float(frames), frames));
}

// The taps are push()'s: on integral frames whose filtered values stay inside [0, 255] (so that the uint8
// path's clipping between the passes never acts), the float result is the uint8 result up to its two
// roundings: |u8 - float| <= 0.5 (last rounding) + 0.5 * sum |vertical weights| (<= 1.25) + quantisation.
TEST(BicubicResizeFloat, IntegralFramesGiveThePillowResultUpToItsRoundings) {
  at::Generator gen = at::detail::createCPUGenerator(9);
  const at::Tensor u8 = at::randint(64, 193, {2, 12, 16, 3}, gen, at::TensorOptions().dtype(at::kByte));
  for (const auto& [ow, oh] : std::vector<std::pair<int, int>>{{64, 48}, {7, 5}, {29, 23}}) {
    SCOPED_TRACE(::testing::Message() << ow << "x" << oh);
    BicubicResize resize(16, 12, ow, oh, at::kCPU);
    const at::Tensor d = (resize.resize_float(u8.to(at::kFloat)) - resize(u8).to(at::kFloat)).abs();
    EXPECT_LE(d.max().item<float>(), 1.15f);
    EXPECT_LT(d.mean().item<float>(), 0.5f);
  }
}

TEST(BicubicResizeFloat, RejectsIntegerFramesAndWrongSizes) {
  BicubicResize resize(16, 12, 32, 24, at::kCPU);
  EXPECT_THROW(resize.resize_float(at::zeros({1, 12, 16, 3}, at::kByte)), Error);
  EXPECT_THROW(resize.resize_float(at::zeros({1, 12, 15, 3}, at::kFloat)), Error);
  EXPECT_THROW(resize.resize_float(at::Tensor()), Error);
  EXPECT_THROW(resize(at::zeros({1, 12, 16, 3}, at::kFloat)), Error);
}

TEST(BicubicResizeFloat, CudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Tensor frames = random_ten_bit_frames(3, 46, 70, 3, 15);
  for (auto s : std::vector<std::vector<int64_t>>{{211, 139}, {280, 184}, {23, 17}}) {
    const at::Tensor cpu = BicubicResize(70, 46, s[0], s[1], at::kCPU).resize_float(frames);
    const at::Tensor gpu = BicubicResize(70, 46, s[0], s[1], at::Device(at::kCUDA, 0)).resize_float(frames.cuda());
    EXPECT_TRUE(gpu.is_cuda());
#if FLASHVSR_CUDA_KERNELS
    // The CUDA kernel rounds every product and sum in tap order, as the CPU's passes do: bit for bit.
    EXPECT_TRUE(gpu.cpu().equal(cpu)) << s[0] << "x" << s[1];
#else
    // LibTorch's CUDA passes (fused multiply-adds): far below a 10-bit step (0.25).
    EXPECT_LE((gpu.cpu() - cpu).abs().max().item<float>(), 1e-3f) << s[0] << "x" << s[1];
#endif
  }
  EXPECT_TRUE(rgb255_to_unit(frames.cuda(), at::kFloat).cpu().equal(rgb255_to_unit(frames, at::kFloat)));
  const at::Tensor video = at::randn({1, 3, 2, 5, 7});
  EXPECT_TRUE(unit_to_rgb255(video.cuda()).cpu().equal(unit_to_rgb255(video)));
}

// A 10-bit horizontal ramp (all 1024 codes) through the pre-processing of a 2x stream (float resize, then
// [-1, 1]) keeps at least its 1024 levels; the same ramp as 8-bit frames has at most 256.
TEST(TenBitPreprocessing, GradientKeepsMoreThan256Levels) {
  const at::Tensor ramp = at::arange(1024, at::kFloat).mul_(255.0 / 1023.0).view({1, 1, 1024, 1}).expand({1, 4, 1024, 3});
  BicubicResize resize(1024, 4, 2048, 8, at::kCPU);
  const at::Tensor unit = rgb255_to_unit(resize.resize_float(ramp), at::kFloat);  // [1, 3, 1, 8, 2048]
  const int64_t levels = std::get<0>(at::_unique(unit.select(1, 1))).numel();
  EXPECT_GE(levels, 1024);
  const at::Tensor unit8 = u8_to_unit(resize(ramp.round().to(at::kByte)), at::kFloat);
  EXPECT_LE(std::get<0>(at::_unique(unit8.select(1, 1))).numel(), 256) << "the 8-bit path is the contrast";
}

TEST(UnitMapping, FloatFramesMapLikeUint8AndLeaveTheInputAlone) {
  const at::Tensor u8 = random_frames(2, 5, 7, 3, 21);
  const at::Tensor f = u8.to(at::kFloat);
  const at::Tensor before = f.clone();
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    EXPECT_TRUE(at::equal(rgb255_to_unit(f, dtype), u8_to_unit(u8, dtype))) << c10::toString(dtype);
  }
  EXPECT_TRUE(at::equal(f, before));
  // 10-bit values: x / 255 * 2 - 1 (in double here).
  const at::Tensor t = random_ten_bit_frames(1, 3, 4, 3, 22);
  const at::Tensor expect = t.to(at::kDouble).div(255.0).mul(2.0).sub(1.0).permute({3, 0, 1, 2}).unsqueeze(0);
  EXPECT_LE((rgb255_to_unit(t, at::kFloat).to(at::kDouble) - expect).abs().max().item<double>(), 1e-6);
  EXPECT_THROW(rgb255_to_unit(u8, at::kFloat), Error);
  EXPECT_THROW(rgb255_to_unit(f.narrow(3, 0, 2), at::kFloat), Error);
}

// unit_to_rgb255 is (x + 1) * 127.5 clamped to [0, 255] with NaN as 0, and unit_to_u8 is its round.
TEST(UnitMapping, FloatOutputIsTheUnroundedUint8Output) {
  at::Tensor video = at::randn({1, 3, 2, 5, 6}, at::detail::createCPUGenerator(23)).mul_(0.7);
  video[0][0][0][0][0] = std::nan("");
  video[0][1][0][0][0] = 3.0;
  video[0][2][0][0][0] = -3.0;
  const at::Tensor f = unit_to_rgb255(video);
  ASSERT_EQ(f.scalar_type(), at::kFloat);
  ASSERT_EQ(f.sizes(), (at::IntArrayRef{2, 5, 6, 3}));
  const at::Tensor expect =
      at::nan_to_num(video[0].to(at::kDouble).add(1.0).mul(127.5), 0.0).clamp(0.0, 255.0).permute({1, 2, 3, 0});
  EXPECT_LE((f.to(at::kDouble) - expect).abs().max().item<double>(), 1e-4);
  EXPECT_EQ(f[0][0][0][0].item<float>(), 0.0f);
  EXPECT_EQ(f[0][0][0][1].item<float>(), 255.0f);
  EXPECT_EQ(f[0][0][0][2].item<float>(), 0.0f);
  const at::Tensor u8 = unit_to_u8(video);
  EXPECT_TRUE(at::equal(f.round().to(at::kByte), u8));
  EXPECT_LE((f - u8.to(at::kFloat)).abs().max().item<float>(), 0.5f);
}

}  // namespace
}  // namespace flashvsr
