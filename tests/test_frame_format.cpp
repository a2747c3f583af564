// SPDX-License-Identifier: LGPL-2.1-or-later
// Unit tests of frame_format: plane layouts, RGB-family packing, Y'CbCr conversion (matrices, ranges,
// chroma averaging) against hand-computed values, and input checks.
#include "error.h"
#include "frame_format.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

using namespace flashvsr;

namespace {

const at::Device kCpu(at::kCPU);

const std::vector<PixelFormat> kAllFormats = {PixelFormat::RGB,  PixelFormat::RGBx, PixelFormat::BGRx,
                                              PixelFormat::RGBA, PixelFormat::BGRA, PixelFormat::I420,
                                              PixelFormat::NV12};

at::Tensor random_rgb(int64_t n, int64_t h, int64_t w, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(0, 256, {n, h, w, 3}, gen, at::TensorOptions().dtype(at::kByte));
}

// A smooth picture: slow gradients and a low-frequency wave (at most ~0.4 levels per pixel per channel),
// values well inside [0, 255]. With `blocky`, each 2x2 block (the chroma sampling grid) is constant, so
// that chroma subsampling loses nothing and only 8-bit quantization remains; that error is bounded by
// 0.5 * 255/219 (luma) + 0.5 * 255/224 * 2(1 - Kb) (chroma) + 0.5 (final rounding) < 2 levels.
at::Tensor smooth_rgb(int64_t n, int64_t h, int64_t w, bool blocky) {
  auto yy = at::arange(h, at::kFloat).view({1, h, 1});
  auto xx = at::arange(w, at::kFloat).view({1, 1, w});
  if (blocky) {
    yy = at::floor(yy / 2) * 2;
    xx = at::floor(xx / 2) * 2;
  }
  std::vector<at::Tensor> frames;
  for (int64_t i = 0; i < n; ++i) {
    auto r = 40 + 0.4 * xx + 0 * yy;
    auto g = 60 + 0.35 * yy + 0 * xx;
    auto b = 128 + 20 * at::sin((xx - yy + 3 * i) * 0.02);
    frames.push_back(at::cat({r, g, b}, 0).permute({1, 2, 0}));
  }
  return at::stack(frames, 0).round().clamp(0, 255).to(at::kByte).contiguous();
}

// One-pixel-per-colour frame of `rgb` values (2x2 so that chroma is not averaged across colours).
at::Tensor solid(int r, int g, int b) {
  auto t = at::empty({1, 2, 2, 3}, at::kByte);
  t.select(3, 0).fill_(r);
  t.select(3, 1).fill_(g);
  t.select(3, 2).fill_(b);
  return t;
}

struct Yuv {
  int y, u, v;
};

Yuv yuv_of_solid(const FrameConverter& c, int r, int g, int b) {
  auto packed = c.from_rgb(solid(r, g, b));
  auto p = packed[0];
  const auto& l = c.layout();
  const int y = p[l.offset[0]].item<uint8_t>();
  const int u = p[l.offset[1]].item<uint8_t>();
  const int v = c.format() == PixelFormat::I420 ? p[l.offset[2]].item<uint8_t>() : p[l.offset[1] + 1].item<uint8_t>();
  return {y, u, v};
}

}  // namespace

TEST(PlaneLayout, PackedRgbFormatsHaveOnePlaneOfTightRows) {
  auto l = plane_layout(PixelFormat::RGB, 7, 5);
  EXPECT_EQ(l.planes, 1);
  EXPECT_EQ(l.row_bytes[0], 21);
  EXPECT_EQ(l.rows[0], 5);
  EXPECT_EQ(l.size, 105);
  for (auto f : {PixelFormat::RGBx, PixelFormat::BGRx, PixelFormat::RGBA, PixelFormat::BGRA}) {
    auto l4 = plane_layout(f, 7, 5);
    EXPECT_EQ(l4.planes, 1);
    EXPECT_EQ(l4.row_bytes[0], 28);
    EXPECT_EQ(l4.size, 140);
  }
}

TEST(PlaneLayout, I420OddSizeRoundsChromaUp) {
  auto l = plane_layout(PixelFormat::I420, 71, 47);
  EXPECT_EQ(l.planes, 3);
  EXPECT_EQ(l.row_bytes[0], 71);
  EXPECT_EQ(l.rows[0], 47);
  EXPECT_EQ(l.row_bytes[1], 36);
  EXPECT_EQ(l.rows[1], 24);
  EXPECT_EQ(l.row_bytes[2], 36);
  EXPECT_EQ(l.rows[2], 24);
  EXPECT_EQ(l.offset[0], 0);
  EXPECT_EQ(l.offset[1], 71 * 47);
  EXPECT_EQ(l.offset[2], 71 * 47 + 36 * 24);
  EXPECT_EQ(l.size, 71 * 47 + 2 * 36 * 24);
}

TEST(PlaneLayout, Nv12OddSizeHasInterleavedChromaPlane) {
  auto l = plane_layout(PixelFormat::NV12, 1, 1);
  EXPECT_EQ(l.planes, 2);
  EXPECT_EQ(l.row_bytes[1], 2);
  EXPECT_EQ(l.rows[1], 1);
  EXPECT_EQ(l.size, 3);
  auto m = plane_layout(PixelFormat::NV12, 70, 45);
  EXPECT_EQ(m.row_bytes[1], 70);
  EXPECT_EQ(m.rows[1], 23);
  EXPECT_EQ(m.offset[1], 70 * 45);
  EXPECT_EQ(m.size, 70 * 45 + 70 * 23);
}

TEST(PlaneLayout, RejectsEmptySizes) {
  EXPECT_THROW(plane_layout(PixelFormat::RGB, 0, 4), Error);
  EXPECT_THROW(plane_layout(PixelFormat::I420, 4, -1), Error);
}

TEST(FrameConverter, RgbFamilyRoundTripsExactlyAtOddSizes) {
  auto rgb = random_rgb(3, 13, 9, 1);
  for (auto f : {PixelFormat::RGB, PixelFormat::RGBx, PixelFormat::BGRx, PixelFormat::RGBA, PixelFormat::BGRA}) {
    FrameConverter c(f, 9, 13, {}, kCpu);
    auto packed = c.from_rgb(rgb);
    ASSERT_EQ(packed.sizes(), (at::IntArrayRef{3, c.layout().size}));
    EXPECT_TRUE(at::equal(c.to_rgb(packed), rgb)) << static_cast<int>(f);
  }
}

TEST(FrameConverter, RgbFamilyByteOrderAndOpaqueFill) {
  auto rgb = solid(10, 20, 30);
  auto first_pixel = [&](PixelFormat f) {
    FrameConverter c(f, 2, 2, {}, kCpu);
    auto p = c.from_rgb(rgb)[0];
    std::vector<int> v;
    for (int i = 0; i < (f == PixelFormat::RGB ? 3 : 4); ++i) v.push_back(p[i].item<uint8_t>());
    return v;
  };
  EXPECT_EQ(first_pixel(PixelFormat::RGB), (std::vector<int>{10, 20, 30}));
  EXPECT_EQ(first_pixel(PixelFormat::RGBx), (std::vector<int>{10, 20, 30, 255}));
  EXPECT_EQ(first_pixel(PixelFormat::RGBA), (std::vector<int>{10, 20, 30, 255}));
  EXPECT_EQ(first_pixel(PixelFormat::BGRx), (std::vector<int>{30, 20, 10, 255}));
  EXPECT_EQ(first_pixel(PixelFormat::BGRA), (std::vector<int>{30, 20, 10, 255}));
}

TEST(FrameConverter, AlphaAndPaddingBytesAreIgnoredOnInput) {
  FrameConverter c(PixelFormat::BGRA, 3, 2, {}, kCpu);
  auto packed = c.from_rgb(random_rgb(1, 2, 3, 5));
  auto changed = packed.clone();
  changed.view({1, 2, 3, 4}).select(3, 3).fill_(7);
  EXPECT_TRUE(at::equal(c.to_rgb(packed), c.to_rgb(changed)));
}

TEST(FrameConverter, YuvRoundTripsWithinTwoLevelsOnSmoothImages) {
  const auto blocky = smooth_rgb(2, 47, 71, true), smooth = smooth_rgb(2, 47, 71, false);
  for (auto f : {PixelFormat::I420, PixelFormat::NV12}) {
    for (auto m : {YuvMatrix::BT601, YuvMatrix::BT709, YuvMatrix::BT2020}) {
      for (bool full : {false, true}) {
        FrameConverter c(f, 71, 47, {m, full}, kCpu);
        const std::string what = "format " + std::to_string(static_cast<int>(f)) + " matrix " +
                                 std::to_string(static_cast<int>(m)) + " full " + std::to_string(full);
        auto diff = [&](const at::Tensor& rgb) {
          return (c.to_rgb(c.from_rgb(rgb)).to(at::kInt) - rgb.to(at::kInt)).abs().to(at::kFloat);
        };
        EXPECT_LE(diff(blocky).max().item<float>(), 2.0f) << what;
        // Chroma varying inside the 2x2 blocks adds a little; on average the round trip stays close.
        auto d = diff(smooth);
        EXPECT_LE(d.max().item<float>(), 3.0f) << what;
        EXPECT_LT(d.mean().item<float>(), 0.75f) << what;
      }
    }
  }
}

TEST(FrameConverter, KnownColoursBt601Limited) {
  FrameConverter c(PixelFormat::I420, 2, 2, {YuvMatrix::BT601, false}, kCpu);
  // Y = 16 + 219 (Kr R + Kg G + Kb B); Cb = 128 + 224 (B - Y') / 1.772; Cr = 128 + 224 (R - Y') / 1.402
  auto red = yuv_of_solid(c, 255, 0, 0);    // 81.48, 90.20, 240
  auto green = yuv_of_solid(c, 0, 255, 0);  // 144.55, 53.80, 34.21
  auto blue = yuv_of_solid(c, 0, 0, 255);   // 40.97, 240, 109.79
  EXPECT_EQ(red.y, 81);
  EXPECT_EQ(red.u, 90);
  EXPECT_EQ(red.v, 240);
  EXPECT_EQ(green.y, 145);
  EXPECT_EQ(green.u, 54);
  EXPECT_EQ(green.v, 34);
  EXPECT_EQ(blue.y, 41);
  EXPECT_EQ(blue.u, 240);
  EXPECT_EQ(blue.v, 110);
  auto white = yuv_of_solid(c, 255, 255, 255), black = yuv_of_solid(c, 0, 0, 0);
  EXPECT_EQ(white.y, 235);
  EXPECT_EQ(white.u, 128);
  EXPECT_EQ(white.v, 128);
  EXPECT_EQ(black.y, 16);
  EXPECT_EQ(black.u, 128);
  EXPECT_EQ(black.v, 128);
}

TEST(FrameConverter, KnownColoursBt709LimitedAndFull) {
  FrameConverter lim(PixelFormat::NV12, 2, 2, {YuvMatrix::BT709, false}, kCpu);
  auto red = yuv_of_solid(lim, 255, 0, 0);    // 62.56, 102.34, 240
  auto green = yuv_of_solid(lim, 0, 255, 0);  // 172.63, 41.66, 26.27
  auto blue = yuv_of_solid(lim, 0, 0, 255);   // 31.81, 240, 117.73
  EXPECT_EQ(red.y, 63);
  EXPECT_EQ(red.u, 102);
  EXPECT_EQ(red.v, 240);
  EXPECT_EQ(green.y, 173);
  EXPECT_EQ(green.u, 42);
  EXPECT_EQ(green.v, 26);
  EXPECT_EQ(blue.y, 32);
  EXPECT_EQ(blue.u, 240);
  EXPECT_EQ(blue.v, 118);

  FrameConverter full(PixelFormat::I420, 2, 2, {YuvMatrix::BT709, true}, kCpu);
  // Y = 255 Y'; Cb = 128 + 255 (B - Y') / 1.8556; Cr = 128 + 255 (R - Y') / 1.5748
  auto fred = yuv_of_solid(full, 255, 0, 0);  // 54.21, 98.79, 255.5 -> clamped
  auto fwhite = yuv_of_solid(full, 255, 255, 255), fblack = yuv_of_solid(full, 0, 0, 0);
  EXPECT_EQ(fred.y, 54);
  EXPECT_EQ(fred.u, 99);
  EXPECT_EQ(fred.v, 255);
  EXPECT_EQ(fwhite.y, 255);
  EXPECT_EQ(fwhite.u, 128);
  EXPECT_EQ(fblack.y, 0);
  EXPECT_EQ(fblack.v, 128);

  FrameConverter full601(PixelFormat::I420, 2, 2, {YuvMatrix::BT601, true}, kCpu);
  auto fblue = yuv_of_solid(full601, 0, 0, 255);  // 29.07, 255.5 -> 255, 107.26
  EXPECT_EQ(fblue.y, 29);
  EXPECT_EQ(fblue.u, 255);
  EXPECT_EQ(fblue.v, 107);
}

TEST(FrameConverter, KnownYuvDecodesToPrimaries) {
  // The limited-range BT.601 codes of pure colours decode back within one level.
  FrameConverter c(PixelFormat::I420, 2, 2, {YuvMatrix::BT601, false}, kCpu);
  auto decode = [&](int y, int u, int v) {
    auto packed = at::empty({1, c.layout().size}, at::kByte);
    packed.narrow(1, 0, 4).fill_(y);
    packed.narrow(1, 4, 1).fill_(u);
    packed.narrow(1, 5, 1).fill_(v);
    return c.to_rgb(packed)[0][0][0].to(at::kInt);
  };
  auto near = [](const at::Tensor& got, std::vector<int> want) {
    for (int i = 0; i < 3; ++i)
      if (std::abs(got[i].item<int>() - want[i]) > 1) return false;
    return true;
  };
  EXPECT_TRUE(near(decode(81, 90, 240), {255, 0, 0}));
  EXPECT_TRUE(near(decode(145, 54, 34), {0, 255, 0}));
  EXPECT_TRUE(near(decode(41, 240, 110), {0, 0, 255}));
  EXPECT_TRUE(near(decode(235, 128, 128), {255, 255, 255}));
  EXPECT_TRUE(near(decode(16, 128, 128), {0, 0, 0}));
  // Below-black and above-white codes clamp.
  EXPECT_TRUE(near(decode(0, 128, 128), {0, 0, 0}));
  EXPECT_TRUE(near(decode(255, 128, 128), {255, 255, 255}));
}

TEST(FrameConverter, ChromaIsTheBoxAverageOverExistingPixels) {
  // 3x3 frame, full range BT.709 so that grey levels map to Y = level and chroma 128; red in one corner.
  FrameConverter c(PixelFormat::I420, 3, 3, {YuvMatrix::BT709, true}, kCpu);
  auto rgb = at::full({1, 3, 3, 3}, 100, at::kByte);
  rgb[0][2][2][0] = 255;  // the bottom-right pixel alone forms the last chroma block
  rgb[0][2][2][1] = 0;
  rgb[0][2][2][2] = 0;
  auto packed = c.from_rgb(rgb)[0];
  const auto& l = c.layout();
  ASSERT_EQ(l.row_bytes[1], 2);
  // Blocks: (0,0) 4 grey, (0,1) 2 grey, (1,0) 2 grey, (1,1) only the red pixel.
  EXPECT_EQ(packed[l.offset[1] + 0].item<uint8_t>(), 128);
  EXPECT_EQ(packed[l.offset[1] + 1].item<uint8_t>(), 128);
  EXPECT_EQ(packed[l.offset[1] + 2].item<uint8_t>(), 128);
  EXPECT_EQ(packed[l.offset[2] + 3].item<uint8_t>(), 255);  // Cr of pure red, clamped (255.5)
  EXPECT_EQ(packed[l.offset[1] + 3].item<uint8_t>(), 99);   // Cb of pure red (98.79)

  // A 2x2 block of two colours averages their chroma.
  FrameConverter d(PixelFormat::I420, 2, 2, {YuvMatrix::BT709, true}, kCpu);
  auto two = at::full({1, 2, 2, 3}, 0, at::kByte);
  two.select(1, 0).select(2, 2).fill_(255);  // top row blue, bottom row black
  auto p = d.from_rgb(two)[0];
  // Cb: blue 128 + 127.5 = 255.5, black 128 -> mean 191.75 -> 192
  EXPECT_EQ(p[d.layout().offset[1]].item<uint8_t>(), 192);
}

TEST(FrameConverter, Nv12AndI420AgreeOnEveryPlane) {
  auto rgb = random_rgb(2, 23, 17, 9);
  for (auto m : {YuvMatrix::BT601, YuvMatrix::BT709, YuvMatrix::BT2020}) {
    for (bool full : {false, true}) {
      FrameConverter i420(PixelFormat::I420, 17, 23, {m, full}, kCpu);
      FrameConverter nv12(PixelFormat::NV12, 17, 23, {m, full}, kCpu);
      auto a = i420.from_rgb(rgb), b = nv12.from_rgb(rgb);
      ASSERT_EQ(a.size(1), b.size(1));
      const auto& la = i420.layout();
      const int64_t ysize = la.row_bytes[0] * la.rows[0], csize = la.row_bytes[1] * la.rows[1];
      EXPECT_TRUE(at::equal(a.narrow(1, 0, ysize), b.narrow(1, 0, ysize)));
      auto uv = b.narrow(1, ysize, 2 * csize).view({2, csize, 2});
      EXPECT_TRUE(at::equal(a.narrow(1, la.offset[1], csize), uv.select(2, 0)));
      EXPECT_TRUE(at::equal(a.narrow(1, la.offset[2], csize), uv.select(2, 1)));
      EXPECT_TRUE(at::equal(i420.to_rgb(a), nv12.to_rgb(b)));
    }
  }
}

TEST(FrameConverter, ToRgbAcceptsBatchesAndKeepsFramesApart) {
  auto rgb = random_rgb(4, 6, 5, 2);
  FrameConverter c(PixelFormat::BGRx, 5, 6, {}, kCpu);
  auto packed = c.from_rgb(rgb);
  for (int64_t i = 0; i < 4; ++i) EXPECT_TRUE(at::equal(c.to_rgb(packed.narrow(0, i, 1))[0], rgb[i]));
}

TEST(FrameConverter, BadInputThrowsError) {
  FrameConverter c(PixelFormat::I420, 8, 6, {}, kCpu);
  const int64_t size = c.layout().size;
  EXPECT_THROW(c.to_rgb(at::zeros({1, size + 1}, at::kByte)), Error);
  EXPECT_THROW(c.to_rgb(at::zeros({1, size}, at::kFloat)), Error);
  EXPECT_THROW(c.to_rgb(at::zeros({size}, at::kByte)), Error);
  EXPECT_THROW(c.to_rgb(at::Tensor()), Error);
  EXPECT_THROW(c.from_rgb(at::zeros({1, 6, 8, 4}, at::kByte)), Error);
  EXPECT_THROW(c.from_rgb(at::zeros({1, 8, 6, 3}, at::kByte)), Error);
  EXPECT_THROW(c.from_rgb(at::zeros({6, 8, 3}, at::kByte)), Error);
  EXPECT_THROW(c.from_rgb(at::zeros({1, 6, 8, 3}, at::kInt)), Error);
  try {
    c.to_rgb(at::zeros({1, size + 1}, at::kByte));
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadInput);
    EXPECT_NE(std::string(e.what()).find(std::to_string(size)), std::string::npos) << e.what();
  }
  EXPECT_THROW(FrameConverter(PixelFormat::NV12, 0, 6, {}, kCpu), Error);
}

TEST(FrameConverter, AllFormatsProduceTheLayoutSize) {
  auto rgb = random_rgb(1, 11, 7, 3);
  for (auto f : kAllFormats) {
    FrameConverter c(f, 7, 11, {YuvMatrix::BT601, false}, kCpu);
    auto packed = c.from_rgb(rgb);
    EXPECT_EQ(packed.size(1), plane_layout(f, 7, 11).size);
    EXPECT_EQ(c.to_rgb(packed).sizes(), rgb.sizes());
  }
}
