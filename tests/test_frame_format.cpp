// SPDX-License-Identifier: LGPL-2.1-or-later
// Unit tests of frame_format: plane layouts, RGB-family packing, Y'CbCr conversion (matrices, ranges,
// chroma averaging), chroma siting (resampling both ways at centred and co-sited positions) against
// hand-computed values and analytic ramps, and input checks.
#include "error.h"
#include "frame_format.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
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
// that centred box subsampling loses nothing; the interpolation back (and co-sited filtering) mixes in at
// most a quarter of the next block's chroma (~0.2 levels here), and 8-bit quantization adds at most
// 0.5 * 255/219 (luma) + 0.5 * 255/224 * 2(1 - Kb) (chroma) + 0.5 (final rounding): < 2 levels in all.
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

const std::vector<ChromaSite> kSites = {kChromaSiteJpeg, kChromaSiteMpeg2, kChromaSiteCosited,
                                        {ChromaSiting::Centred, ChromaSiting::Cosited}};

std::string site_name(const ChromaSite& s) {
  const auto axis = [](ChromaSiting a) { return a == ChromaSiting::Cosited ? "cosited" : "centred"; };
  return std::string("h-") + axis(s.horizontal) + "/v-" + axis(s.vertical);
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
        for (const ChromaSite& site : kSites) {
          FrameConverter c(f, 71, 47, {m, full, site}, kCpu);
          const std::string what = "format " + std::to_string(static_cast<int>(f)) + " matrix " +
                                   std::to_string(static_cast<int>(m)) + " full " + std::to_string(full) +
                                   " site " + site_name(site);
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

// ---- Chroma siting ----------------------------------------------------------------------------------

namespace {

// A float tensor [rows, cols] of the given values (row-major).
at::Tensor grid(int64_t rows, int64_t cols, const std::vector<float>& values) {
  EXPECT_EQ(static_cast<int64_t>(values.size()), rows * cols);
  return at::tensor(values, at::kFloat).view({rows, cols});
}
at::Tensor row(const std::vector<float>& values) { return grid(1, static_cast<int64_t>(values.size()), values); }

void expect_close(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_TRUE(at::allclose(got, want, 0.0, 1e-5)) << what << "\ngot\n" << got << "\nwant\n" << want;
}

const ChromaSite kHCentred{ChromaSiting::Centred, ChromaSiting::Centred};
const ChromaSite kHCosited{ChromaSiting::Cosited, ChromaSiting::Centred};
const ChromaSite kVCosited{ChromaSiting::Centred, ChromaSiting::Cosited};

}  // namespace

TEST(ChromaSiting, GStreamerNamedSitingsAreCentredOrCositedPerAxis) {
  EXPECT_EQ(kChromaSiteJpeg.horizontal, ChromaSiting::Centred);
  EXPECT_EQ(kChromaSiteJpeg.vertical, ChromaSiting::Centred);
  EXPECT_EQ(kChromaSiteMpeg2.horizontal, ChromaSiting::Cosited);
  EXPECT_EQ(kChromaSiteMpeg2.vertical, ChromaSiting::Centred);
  EXPECT_EQ(kChromaSiteCosited.horizontal, ChromaSiting::Cosited);
  EXPECT_EQ(kChromaSiteCosited.vertical, ChromaSiting::Cosited);
  const YuvSpec spec;  // the default: jpeg siting, as the conversions had before sitings existed
  EXPECT_EQ(spec.site.horizontal, ChromaSiting::Centred);
  EXPECT_EQ(spec.site.vertical, ChromaSiting::Centred);
}

TEST(ChromaSiting, CentredUpsamplingWeighsTheNearerSampleThreeQuartersWithClampedEdges) {
  // c = [10, 20, 40] at luma positions 0.5, 2.5, 4.5: x = 2j gets 0.75 c[j] + 0.25 c[j-1], x = 2j+1 gets
  // 0.75 c[j] + 0.25 c[j+1], with c[-1] = c[0] and c[3] = c[2].
  const at::Tensor c = row({10, 20, 40});
  expect_close(upsample_chroma(c, 1, 6, kHCentred), row({10, 12.5, 17.5, 25, 35, 40}), "width 6");
  // Odd width: the last chroma sample covers luma column 4 alone.
  expect_close(upsample_chroma(c, 1, 5, kHCentred), row({10, 12.5, 17.5, 25, 35}), "width 5");
  // The same along the vertical axis.
  expect_close(upsample_chroma(c.t(), 5, 1, kHCentred), row({10, 12.5, 17.5, 25, 35}).t(), "height 5");
}

TEST(ChromaSiting, CositedUpsamplingKeepsEachSampleAndAveragesBetweenThem) {
  // c at luma positions 0, 2, 4: x = 2j gets c[j], x = 2j+1 gets (c[j] + c[j+1]) / 2, c[3] = c[2].
  const at::Tensor c = row({10, 20, 40});
  expect_close(upsample_chroma(c, 1, 6, kHCosited), row({10, 15, 20, 30, 40, 40}), "width 6");
  expect_close(upsample_chroma(c, 1, 5, kHCosited), row({10, 15, 20, 30, 40}), "width 5");
  expect_close(upsample_chroma(c.t(), 5, 1, kVCosited), row({10, 15, 20, 30, 40}).t(), "height 5");
  // Horizontal co-siting leaves the vertical axis centred.
  expect_close(upsample_chroma(c.t(), 5, 1, kHCosited), row({10, 12.5, 17.5, 25, 35}).t(), "mpeg2 vertical");
}

TEST(ChromaSiting, CentredDownsamplingIsThePairMean) {
  const at::Tensor x6 = row({0, 4, 8, 12, 16, 20}), x5 = row({0, 4, 8, 12, 16});
  expect_close(downsample_chroma(x6, kHCentred), row({2, 10, 18}), "width 6");
  // Odd width: the last chroma sample is luma column 4 alone.
  expect_close(downsample_chroma(x5, kHCentred), row({2, 10, 16}), "width 5");
  expect_close(downsample_chroma(x5.t(), kHCentred), row({2, 10, 16}).t(), "height 5");
}

TEST(ChromaSiting, CositedDownsamplingIsA121FilterOnTheCositedLumaSample) {
  // c[j] = (x[2j-1] + 2 x[2j] + x[2j+1]) / 4 with x[-1] = x[0] and x[w] = x[w-1].
  const at::Tensor x6 = row({0, 4, 8, 12, 16, 20}), x5 = row({0, 4, 8, 12, 16});
  expect_close(downsample_chroma(x6, kHCosited), row({1, 8, 16}), "width 6");  // (0+0+4)/4, (4+16+12)/4, ...
  expect_close(downsample_chroma(x5, kHCosited), row({1, 8, 15}), "width 5");  // (12 + 32 + 16) / 4
  expect_close(downsample_chroma(x5.t(), kVCosited), row({1, 8, 15}).t(), "height 5");
  expect_close(downsample_chroma(x5.t(), kHCosited), row({2, 10, 16}).t(), "mpeg2 vertical");
}

TEST(ChromaSiting, Mpeg2SitingResamplesEachAxisOnItsOwn) {
  // A separable picture a[y] + b[x] resamples to (a resampled vertically) + (b resampled horizontally),
  // since every filter's weights sum to 1: vertical centred, horizontal co-sited.
  const std::vector<float> a = {0, 100}, b = {10, 20, 40};
  const at::Tensor c = grid(2, 1, a) + grid(1, 3, b);  // [2, 3] chroma of a 3x5 frame
  const at::Tensor up_a = grid(3, 1, {0, 25, 75});     // centred: 0, 0.75*0 + 0.25*100, 0.75*100 + 0.25*0
  const at::Tensor up_b = row({10, 15, 20, 30, 40});   // co-sited
  expect_close(upsample_chroma(c, 3, 5, kChromaSiteMpeg2), up_a + up_b, "upsampling");

  const at::Tensor x = grid(3, 1, {0, 8, 30}) + row({0, 4, 8, 12, 16});  // a 3x5 plane
  const at::Tensor down_a = grid(2, 1, {4, 30});                          // centred: pair means, 30 alone
  const at::Tensor down_b = row({1, 8, 15});                              // co-sited [1, 2, 1] / 4
  expect_close(downsample_chroma(x, kChromaSiteMpeg2), down_a + down_b, "downsampling");
}

TEST(ChromaSiting, RampsResampleToTheirValuesAtTheSitedPositions) {
  for (int64_t w : {12, 13}) {
    const int64_t m = (w + 1) / 2;
    // Upsampling the chroma ramp c[j] = j gives, at luma column x, the chroma position of x (x/2 - 1/4
    // centred, x/2 co-sited), clamped to the span of the chroma samples [0, m - 1].
    const at::Tensor xs = at::arange(w, at::kFloat).view({1, w});
    const at::Tensor ramp = at::arange(m, at::kFloat).view({1, m});
    expect_close(upsample_chroma(ramp, 1, w, kHCentred), (xs / 2 - 0.25).clamp(0, m - 1),
                 "centred up, width " + std::to_string(w));
    expect_close(upsample_chroma(ramp, 1, w, kHCosited), (xs / 2).clamp(0, m - 1),
                 "co-sited up, width " + std::to_string(w));
    // Downsampling the luma ramp x gives the luma position of each chroma sample: 2j + 1/2 centred, 2j
    // co-sited; away from the edges, where the clamped neighbour bends the ramp.
    const at::Tensor centred = downsample_chroma(xs, kHCentred), cosited = downsample_chroma(xs, kHCosited);
    const at::Tensor js = at::arange(m, at::kFloat).view({1, m});
    expect_close(centred.narrow(1, 0, w / 2), (2 * js + 0.5).narrow(1, 0, w / 2), "centred down");
    expect_close(cosited.narrow(1, 1, w / 2 - 1), (2 * js).narrow(1, 1, w / 2 - 1), "co-sited down");
    EXPECT_FLOAT_EQ(cosited[0][0].item<float>(), 0.25f);  // (0 + 2 * 0 + 1) / 4
    if (w % 2 == 1) {
      EXPECT_FLOAT_EQ(centred[0][m - 1].item<float>(), static_cast<float>(w - 1));  // column w - 1 alone
      EXPECT_FLOAT_EQ(cosited[0][m - 1].item<float>(), (4.0f * w - 5) / 4);         // (w-2 + 3 (w-1)) / 4
    }
  }
}

TEST(ChromaSiting, LinearChromaRoundTripsExactlyAwayFromTheEdgesAtEverySiting) {
  // f = 3x + 5y on an 11x14 frame: downsampled and upsampled at the same siting, the interior comes back.
  const int64_t h = 11, w = 14;
  const at::Tensor f = 3 * at::arange(w, at::kFloat).view({1, w}) + 5 * at::arange(h, at::kFloat).view({h, 1});
  for (const ChromaSite& site : kSites) {
    const at::Tensor back = upsample_chroma(downsample_chroma(f, site), h, w, site);
    expect_close(back.narrow(0, 2, h - 4).narrow(1, 2, w - 4), f.narrow(0, 2, h - 4).narrow(1, 2, w - 4),
                 site_name(site));
  }
}

TEST(ChromaSiting, MismatchedSitingsShiftTheChromaByHalfALumaSample) {
  // Co-sited chroma read as centred (mpeg2 content taken for jpeg) lands half a luma sample to the right:
  // the ramp 3x comes back as 3(x - 1/2). This is the error that ignoring chroma-site made.
  const int64_t w = 14;
  const at::Tensor f = 3 * at::arange(w, at::kFloat).view({1, w});
  const at::Tensor back = upsample_chroma(downsample_chroma(f, kChromaSiteMpeg2), 1, w, kChromaSiteJpeg);
  // Columns 0..2 and 13 see the clamped edges.
  expect_close(back.narrow(1, 3, w - 4), (f - 1.5).narrow(1, 3, w - 4), "mpeg2 read as jpeg");
}

TEST(ChromaSiting, OneSampleFramesResampleToThemselves) {
  const at::Tensor one = row({42});
  for (const ChromaSite& site : kSites) {
    expect_close(upsample_chroma(one, 1, 1, site), one, "up " + site_name(site));
    expect_close(downsample_chroma(one, site), one, "down " + site_name(site));
    expect_close(upsample_chroma(one, 2, 2, site), grid(2, 2, {42, 42, 42, 42}), "up 2x2 " + site_name(site));
  }
}

TEST(ChromaSiting, ResamplingKeepsLeadingDimensions) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t{4});
  const at::Tensor c = at::rand({3, 2, 4, 5}, gen);
  const at::Tensor up = upsample_chroma(c, 7, 9, kChromaSiteMpeg2);
  ASSERT_EQ(up.sizes(), (at::IntArrayRef{3, 2, 7, 9}));
  for (int64_t i = 0; i < 3; ++i)
    expect_close(up[i][1], upsample_chroma(c[i][1], 7, 9, kChromaSiteMpeg2), "frame " + std::to_string(i));
  EXPECT_EQ(downsample_chroma(up, kChromaSiteCosited).sizes(), (at::IntArrayRef{3, 2, 4, 5}));
}

TEST(ChromaSiting, BadShapesAndDtypesThrowError) {
  EXPECT_THROW(upsample_chroma(at::zeros({2, 3}), 4, 7, kChromaSiteJpeg), Error);  // 7 wide needs 4 columns
  EXPECT_THROW(upsample_chroma(at::zeros({2, 4}, at::kByte), 4, 7, kChromaSiteJpeg), Error);
  EXPECT_THROW(upsample_chroma(at::zeros({4}), 1, 7, kChromaSiteJpeg), Error);
  EXPECT_THROW(upsample_chroma(at::zeros({1, 1}), 0, 1, kChromaSiteJpeg), Error);
  EXPECT_THROW(downsample_chroma(at::zeros({4, 0}), kChromaSiteJpeg), Error);
  EXPECT_THROW(downsample_chroma(at::zeros({4, 4}, at::kInt), kChromaSiteJpeg), Error);
  EXPECT_THROW(downsample_chroma(at::Tensor(), kChromaSiteJpeg), Error);
  try {
    upsample_chroma(at::zeros({2, 3}), 4, 7, kChromaSiteJpeg);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadInput);
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[..., 2, 4]"), std::string::npos) << e.what();
  }
}

TEST(FrameConverter, FromRgbSitesChromaWhereTheSpecSays) {
  // Full range with R = G: Cb = 128 + (B - R) / 2 for every matrix. B = 20 + 8x with R = G = 100 gives
  // Cb = 88 + 4x on the luma grid: 88 + 8j co-sited, but clamped at the edges (j = 0: (88 + 2 * 88 + 92) / 4
  // = 89; j = 4: (116 + 2 * 120 + 120) / 4 = 119), 90 + 8j centred (the last column of an odd width alone:
  // 88 + 4 (w - 1) = 120).
  const int64_t w = 9, h = 2, cw = 5;
  auto rgb = at::full({1, h, w, 3}, 100, at::kFloat);
  rgb.select(3, 2).copy_((20 + 8 * at::arange(w, at::kFloat)).view({1, 1, w}).expand({1, h, w}));
  const at::Tensor frame = rgb.to(at::kByte);
  const auto cb_row = [&](ChromaSite site) {
    FrameConverter c(PixelFormat::I420, w, h, {YuvMatrix::BT601, true, site}, kCpu);
    return c.from_rgb(frame)[0].narrow(0, c.layout().offset[1], cw).to(at::kInt);
  };
  const at::Tensor jpeg = cb_row(kChromaSiteJpeg), mpeg2 = cb_row(kChromaSiteMpeg2);
  EXPECT_TRUE(at::equal(jpeg, at::tensor({90, 98, 106, 114, 120}, at::kInt))) << jpeg;
  EXPECT_TRUE(at::equal(mpeg2, at::tensor({89, 96, 104, 112, 119}, at::kInt))) << mpeg2;
  // The vertical siting has no effect on a picture that is constant down the columns.
  EXPECT_TRUE(at::equal(cb_row(kChromaSiteCosited), mpeg2));

  // The same ramp down the rows (B = 20 + 8y, 2x7 frame): only the vertical siting matters; the last
  // chroma row is row 6 alone (112) centred, (108 + 2 * 112 + 112) / 4 = 111 co-sited.
  const int64_t rows = 7;
  auto tall = at::full({1, rows, 2, 3}, 100, at::kFloat);
  tall.select(3, 2).copy_((20 + 8 * at::arange(rows, at::kFloat)).view({1, rows, 1}).expand({1, rows, 2}));
  const auto cb_column = [&](ChromaSite site) {
    FrameConverter c(PixelFormat::NV12, 2, rows, {YuvMatrix::BT709, true, site}, kCpu);
    return c.from_rgb(tall.to(at::kByte))[0].narrow(0, c.layout().offset[1], 8).view({4, 2}).select(1, 0).to(at::kInt);
  };
  EXPECT_TRUE(at::equal(cb_column(kChromaSiteMpeg2), at::tensor({90, 98, 106, 112}, at::kInt)));
  EXPECT_TRUE(at::equal(cb_column(kChromaSiteCosited), at::tensor({89, 96, 104, 111}, at::kInt)));
}

TEST(FrameConverter, ToRgbInterpolatesChromaWhereTheSpecSays) {
  // I420 full range BT.709, Y = 100, Cr = 128 (so R = Y), Cb[j] = 100 + 8j across 5 chroma columns of a
  // 9x2 frame. At luma column x the chroma is 100 + 8 p, p = clamp(x/2 - 1/4) centred, clamp(x/2)
  // co-sited (clamped to [0, 4]); then B = Y + 2 (1 - Kb) (Cb - 128) before rounding.
  const int64_t w = 9, h = 2, cw = 5;
  const auto decode = [&](ChromaSite site) {
    FrameConverter c(PixelFormat::I420, w, h, {YuvMatrix::BT709, true, site}, kCpu);
    auto packed = at::full({1, c.layout().size}, 128, at::kByte);
    packed.narrow(1, 0, w * h).fill_(100);
    packed.narrow(1, c.layout().offset[1], cw).copy_((100 + 8 * at::arange(cw)).to(at::kByte).view({1, cw}));
    return c.to_rgb(packed)[0].to(at::kInt);  // [h, w, 3]
  };
  for (const ChromaSite& site : {kChromaSiteJpeg, kChromaSiteMpeg2}) {
    const at::Tensor rgb = decode(site);
    const double shift = site.horizontal == ChromaSiting::Centred ? 0.25 : 0.0;
    for (int64_t x = 0; x < w; ++x) {
      const double p = std::min(std::max(x / 2.0 - shift, 0.0), 4.0);
      const double blue = 100 + 2 * (1 - 0.0722) * (100 + 8 * p - 128);
      for (int64_t y = 0; y < h; ++y) {
        EXPECT_NEAR(rgb[y][x][2].item<int>(), blue, 0.501) << site_name(site) << " x " << x << " y " << y;
        EXPECT_EQ(rgb[y][x][0].item<int>(), 100) << site_name(site) << " x " << x;
      }
    }
  }
  EXPECT_FALSE(at::equal(decode(kChromaSiteJpeg), decode(kChromaSiteMpeg2)));
}

// ---- 10- and 16-bit formats -------------------------------------------------------------------------

namespace {

// An independent scalar model of the 10/16-bit formats, in double precision, written from the format
// definitions (GStreamer's video-format.c descriptions and the Y'CbCr equations of BT.601/709/2020 with
// GStreamer's range offsets): not from frame_format.cpp.
struct DeepFormat {
  PixelFormat format;
  int depth;      // bits per code
  int shift;      // position of the code in its 16-bit word
  bool sub;       // 4:2:0 (else 4:4:4)
  bool semi;      // U and V interleaved in one plane
};
const std::vector<DeepFormat> kDeepFormats = {{PixelFormat::I420_10LE, 10, 0, true, false},
                                              {PixelFormat::P010_10LE, 10, 6, true, true},
                                              {PixelFormat::Y444_16LE, 16, 0, false, false}};

struct Kr {
  double kr, kb;
};
Kr kr_kb(YuvMatrix m) {
  return m == YuvMatrix::BT601 ? Kr{0.299, 0.114} : m == YuvMatrix::BT709 ? Kr{0.2126, 0.0722} : Kr{0.2627, 0.0593};
}

// Luma offset/scale and chroma offset/scale of `depth`-bit codes.
struct Codes {
  double yo, ys, co, cs, max;
};
Codes codes_of(int depth, bool full) {
  const double top = std::pow(2.0, depth) - 1, k = std::pow(2.0, depth - 8);
  if (full) return {0, top, std::pow(2.0, depth - 1), top, top};
  return {16 * k, 219 * k, 128 * k, 224 * k, top};
}

// The packed byte layout of a deep format, by plane: words per row and rows.
struct DeepPlanes {
  int64_t y_off, u_off, v_off;  // byte offsets
  int64_t cw, ch;               // chroma samples per row, chroma rows
  int64_t size;
};
DeepPlanes deep_planes(const DeepFormat& f, int64_t w, int64_t h) {
  const int64_t cw = f.sub ? (w + 1) / 2 : w, ch = f.sub ? (h + 1) / 2 : h;
  const int64_t y_bytes = w * h * 2, c_bytes = cw * ch * 2;
  if (f.semi) return {0, y_bytes, y_bytes + 2, cw, ch, y_bytes + 2 * c_bytes};
  return {0, y_bytes, y_bytes + c_bytes, cw, ch, y_bytes + 2 * c_bytes};
}

int word_at(const std::vector<uint8_t>& bytes, int64_t byte_offset) {
  return bytes[static_cast<size_t>(byte_offset)] | (bytes[static_cast<size_t>(byte_offset + 1)] << 8);
}

// The (index, weight) taps of luma position x on an axis of n chroma samples (frame_format.h's formulas).
std::vector<std::pair<int64_t, double>> up_taps(int64_t x, int64_t n, ChromaSiting s) {
  const int64_t j = x / 2;
  const auto at = [&](int64_t i) { return std::min(std::max<int64_t>(i, 0), n - 1); };
  if (s == ChromaSiting::Centred) return {{at(j), 0.75}, {at(x % 2 == 0 ? j - 1 : j + 1), 0.25}};
  if (x % 2 == 0) return {{at(j), 1.0}};
  return {{at(j), 0.5}, {at(j + 1), 0.5}};
}
std::vector<std::pair<int64_t, double>> down_taps(int64_t j, int64_t n, ChromaSiting s) {
  const auto at = [&](int64_t i) { return std::min(std::max<int64_t>(i, 0), n - 1); };
  if (s == ChromaSiting::Centred) return {{at(2 * j), 0.5}, {at(2 * j + 1), 0.5}};
  return {{at(2 * j - 1), 0.25}, {at(2 * j), 0.5}, {at(2 * j + 1), 0.25}};
}

// Packed deep frame (bytes) -> RGB [h][w][3] in [0, 255] (clamped), double precision.
std::vector<double> reference_decode(const DeepFormat& f, const std::vector<uint8_t>& bytes, int64_t w, int64_t h,
                                     const YuvSpec& spec) {
  const DeepPlanes p = deep_planes(f, w, h);
  const Codes c = codes_of(f.depth, spec.full_range);
  const Kr k = kr_kb(spec.matrix);
  const int mask = (1 << f.depth) - 1;
  const auto code = [&](int64_t byte_offset) { return (word_at(bytes, byte_offset) >> f.shift) & mask; };
  const int64_t step = f.semi ? 4 : 2;  // bytes between chroma samples of one component
  const auto chroma = [&](int64_t plane_off, int64_t cx, int64_t cy) {
    return static_cast<double>(code(plane_off + (cy * p.cw + cx) * step));
  };
  std::vector<double> rgb(static_cast<size_t>(w * h * 3));
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      double cb = 0, cr = 0;
      if (f.sub) {
        for (auto [iy, wy] : up_taps(y, p.ch, spec.site.vertical))
          for (auto [ix, wx] : up_taps(x, p.cw, spec.site.horizontal)) {
            cb += wy * wx * chroma(p.u_off, ix, iy);
            cr += wy * wx * chroma(p.v_off, ix, iy);
          }
      } else {
        cb = chroma(p.u_off, x, y);
        cr = chroma(p.v_off, x, y);
      }
      const double ey = (code(p.y_off + (y * w + x) * 2) - c.yo) / c.ys;
      const double pb = (cb - c.co) / c.cs, pr = (cr - c.co) / c.cs;
      const double r = ey + 2 * (1 - k.kr) * pr, b = ey + 2 * (1 - k.kb) * pb;
      const double g = (ey - k.kr * r - k.kb * b) / (1 - k.kr - k.kb);
      const double v[3] = {r, g, b};
      for (int i = 0; i < 3; ++i) rgb[static_cast<size_t>((y * w + x) * 3 + i)] = std::clamp(v[i] * 255, 0.0, 255.0);
    }
  return rgb;
}

// RGB [h][w][3] in [0, 255] -> unrounded codes: Y [h*w], then Cb and Cr [ch*cw] each.
std::vector<double> reference_encode(const DeepFormat& f, const std::vector<double>& rgb, int64_t w, int64_t h,
                                     const YuvSpec& spec) {
  const DeepPlanes p = deep_planes(f, w, h);
  const Codes c = codes_of(f.depth, spec.full_range);
  const Kr k = kr_kb(spec.matrix);
  const auto px = [&](int64_t x, int64_t y, int i) { return rgb[static_cast<size_t>((y * w + x) * 3 + i)] / 255; };
  const auto ey = [&](int64_t x, int64_t y) {
    return k.kr * px(x, y, 0) + (1 - k.kr - k.kb) * px(x, y, 1) + k.kb * px(x, y, 2);
  };
  const auto pb = [&](int64_t x, int64_t y) { return (px(x, y, 2) - ey(x, y)) / (2 * (1 - k.kb)); };
  const auto pr = [&](int64_t x, int64_t y) { return (px(x, y, 0) - ey(x, y)) / (2 * (1 - k.kr)); };
  std::vector<double> out;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) out.push_back(c.yo + c.ys * ey(x, y));
  for (const auto& e : {std::function<double(int64_t, int64_t)>(pb), std::function<double(int64_t, int64_t)>(pr)})
    for (int64_t cy = 0; cy < p.ch; ++cy)
      for (int64_t cx = 0; cx < p.cw; ++cx) {
        double v = 0;
        if (f.sub) {
          for (auto [iy, wy] : down_taps(cy, h, spec.site.vertical))
            for (auto [ix, wx] : down_taps(cx, w, spec.site.horizontal)) v += wy * wx * e(ix, iy);
        } else {
          v = e(cx, cy);
        }
        out.push_back(c.co + c.cs * v);
      }
  return out;
}

// The codes of a packed deep frame, in reference_encode's order (Y, then Cb, then Cr).
std::vector<int> codes_in(const DeepFormat& f, const at::Tensor& packed_row, int64_t w, int64_t h) {
  const at::Tensor cpu = packed_row.cpu().contiguous();
  const std::vector<uint8_t> bytes(cpu.data_ptr<uint8_t>(), cpu.data_ptr<uint8_t>() + cpu.numel());
  const DeepPlanes p = deep_planes(f, w, h);
  std::vector<int> out;
  for (int64_t i = 0; i < w * h; ++i) out.push_back(word_at(bytes, p.y_off + 2 * i) >> f.shift);
  const int64_t step = f.semi ? 4 : 2;
  for (int64_t off : {p.u_off, p.v_off})
    for (int64_t i = 0; i < p.cw * p.ch; ++i) out.push_back(word_at(bytes, off + step * i) >> f.shift);
  return out;
}

// Random valid codes of every sample of a deep frame, as packed bytes (P010's low bits random too).
at::Tensor random_deep_frame(const DeepFormat& f, int64_t w, int64_t h, uint64_t seed) {
  const DeepPlanes p = deep_planes(f, w, h);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor words = at::randint(0, 1 << 16, {p.size / 2}, gen, at::TensorOptions().dtype(at::kInt));
  const at::Tensor valid = f.shift > 0 ? words : at::bitwise_and(words, (1 << f.depth) - 1);
  return at::stack({at::bitwise_and(valid, 255), at::bitwise_right_shift(valid, 8)}, 1).to(at::kByte).view({1, -1});
}

std::vector<uint8_t> bytes_of(const at::Tensor& t) {
  const at::Tensor c = t.cpu().contiguous();
  return std::vector<uint8_t>(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel());
}

std::string deep_name(const DeepFormat& f, const YuvSpec& s) {
  return std::string(pixel_format_name(f.format)) + " matrix " + std::to_string(static_cast<int>(s.matrix)) +
         " full " + std::to_string(s.full_range) + " " + site_name(s.site);
}

}  // namespace

TEST(PlaneLayout, TenAndSixteenBitFormatsHaveTwoBytesPerSampleAndRoundChromaUp) {
  auto i = plane_layout(PixelFormat::I420_10LE, 71, 47);
  EXPECT_EQ(i.planes, 3);
  EXPECT_EQ(i.row_bytes, (std::array<int64_t, 3>{142, 72, 72}));
  EXPECT_EQ(i.rows, (std::array<int64_t, 3>{47, 24, 24}));
  EXPECT_EQ(i.offset, (std::array<int64_t, 3>{0, 142 * 47, 142 * 47 + 72 * 24}));
  EXPECT_EQ(i.size, 142 * 47 + 2 * 72 * 24);
  auto p = plane_layout(PixelFormat::P010_10LE, 71, 47);
  EXPECT_EQ(p.planes, 2);
  EXPECT_EQ(p.row_bytes[0], 142);
  EXPECT_EQ(p.row_bytes[1], 144);  // 36 interleaved U V pairs of 2 bytes each
  EXPECT_EQ(p.rows[1], 24);
  EXPECT_EQ(p.offset[1], 142 * 47);
  EXPECT_EQ(p.size, 142 * 47 + 144 * 24);
  auto y = plane_layout(PixelFormat::Y444_16LE, 71, 47);
  EXPECT_EQ(y.planes, 3);
  EXPECT_EQ(y.row_bytes, (std::array<int64_t, 3>{142, 142, 142}));
  EXPECT_EQ(y.rows, (std::array<int64_t, 3>{47, 47, 47}));
  EXPECT_EQ(y.size, 3 * 142 * 47);
  auto one = plane_layout(PixelFormat::P010_10LE, 1, 1);
  EXPECT_EQ(one.size, 2 + 4);
  for (const DeepFormat& f : kDeepFormats) {
    EXPECT_EQ(plane_layout(f.format, 71, 47).size, deep_planes(f, 71, 47).size) << pixel_format_name(f.format);
    EXPECT_TRUE(is_yuv(f.format));
    EXPECT_EQ(bit_depth(f.format), f.depth);
  }
  EXPECT_EQ(bit_depth(PixelFormat::NV12), 8);
}

TEST(FrameConverter, DeepFormatsDecodeLikeTheReferenceAtEveryMatrixRangeAndSiting) {
  const int64_t w = 9, h = 7;  // odd: the last chroma row and column cover one luma sample
  for (const DeepFormat& f : kDeepFormats)
    for (auto m : {YuvMatrix::BT601, YuvMatrix::BT709, YuvMatrix::BT2020})
      for (bool full : {false, true})
        for (const ChromaSite& site : kSites) {
          const YuvSpec spec{m, full, site};
          FrameConverter c(f.format, w, h, spec, kCpu);
          const at::Tensor packed = random_deep_frame(f, w, h, 11 + static_cast<uint64_t>(m));
          const std::vector<double> want = reference_decode(f, bytes_of(packed), w, h, spec);
          const at::Tensor got = c.to_rgb_float(packed);
          ASSERT_EQ(got.sizes(), (at::IntArrayRef{1, h, w, 3}));
          ASSERT_EQ(got.scalar_type(), at::kFloat);
          const at::Tensor ref = at::tensor(want, at::kDouble).view({1, h, w, 3});
          const double err = (got.to(at::kDouble) - ref).abs().max().item<double>();
          EXPECT_LT(err, 2e-3) << deep_name(f, spec);
          // The 8-bit entry point is the float one rounded.
          EXPECT_TRUE(at::equal(c.to_rgb(packed), got.round().to(at::kByte))) << deep_name(f, spec);
        }
}

TEST(FrameConverter, DeepFormatsEncodeLikeTheReferenceAtEveryMatrixRangeAndSiting) {
  const int64_t w = 9, h = 7;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t{21});
  const at::Tensor rgb = at::rand({1, h, w, 3}, gen, at::kDouble) * 255;
  const at::Tensor rgb_cpu = rgb.contiguous();
  const std::vector<double> values(rgb_cpu.data_ptr<double>(), rgb_cpu.data_ptr<double>() + rgb_cpu.numel());
  for (const DeepFormat& f : kDeepFormats)
    for (auto m : {YuvMatrix::BT601, YuvMatrix::BT709, YuvMatrix::BT2020})
      for (bool full : {false, true})
        for (const ChromaSite& site : kSites) {
          const YuvSpec spec{m, full, site};
          FrameConverter c(f.format, w, h, spec, kCpu);
          const at::Tensor packed = c.from_rgb_float(rgb.to(at::kFloat));
          ASSERT_EQ(packed.sizes(), (at::IntArrayRef{1, c.layout().size}));
          const std::vector<int> got = codes_in(f, packed[0], w, h);
          const std::vector<double> want = reference_encode(f, values, w, h, spec);
          ASSERT_EQ(got.size(), want.size());
          const double top = std::pow(2.0, f.depth) - 1;
          int mismatches = 0;
          for (size_t i = 0; i < want.size(); ++i) {
            const double v = std::clamp(want[i], 0.0, top);
            // float32 against double: a code whose exact value sits at a rounding tie may go either way.
            const bool tie = std::abs(v - std::floor(v) - 0.5) < 2e-3;
            if (tie ? std::abs(got[i] - v) > 0.51 : got[i] != std::nearbyint(v)) ++mismatches;
          }
          EXPECT_EQ(mismatches, 0) << deep_name(f, spec);
          if (f.shift > 0) {  // P010: the low 6 bits of every word are 0
            const at::Tensor lo = packed[0].view({-1, 2}).select(1, 0).to(at::kInt);
            EXPECT_EQ(at::bitwise_and(lo, 63).max().item<int>(), 0);
          }
        }
}

TEST(FrameConverter, TenBitKnownColoursBt2020Limited) {
  // BT.2100 narrow range at 10 bits: black Y 64, white Y 940, neutral chroma 512; red: Y = 64 + 876
  // Kr = 294.13, Cb = 512 - 896 Kr / (2 (1 - Kb)) = 386.89, Cr = 512 + 448 = 960.
  for (const DeepFormat& f : {kDeepFormats[0], kDeepFormats[1]}) {
    FrameConverter c(f.format, 2, 2, {YuvMatrix::BT2020, false}, kCpu);
    const auto yuv = [&](float r, float g, float b) {
      at::Tensor rgb = at::empty({1, 2, 2, 3}, at::kFloat);
      rgb.select(3, 0).fill_(r);
      rgb.select(3, 1).fill_(g);
      rgb.select(3, 2).fill_(b);
      const std::vector<int> codes = codes_in(f, c.from_rgb_float(rgb)[0], 2, 2);
      return std::array<int, 3>{codes[0], codes[4], codes[5]};
    };
    EXPECT_EQ(yuv(0, 0, 0), (std::array<int, 3>{64, 512, 512})) << pixel_format_name(f.format);
    EXPECT_EQ(yuv(255, 255, 255), (std::array<int, 3>{940, 512, 512})) << pixel_format_name(f.format);
    EXPECT_EQ(yuv(255, 0, 0), (std::array<int, 3>{294, 387, 960})) << pixel_format_name(f.format);
  }
  FrameConverter full16(PixelFormat::Y444_16LE, 1, 1, {YuvMatrix::BT709, true}, kCpu);
  const std::vector<int> white = codes_in(kDeepFormats[2], full16.from_rgb_float(at::full({1, 1, 1, 3}, 255.0f)), 1, 1);
  EXPECT_EQ(white, (std::vector<int>{65535, 32768, 32768}));
}

TEST(FrameConverter, TenBitGreyCodesSurviveFloatRgbAndAreLostThroughUint8) {
  // Every luma code with neutral chroma, 4 codes per row of a 4 x 256 frame: the float RGB keeps them
  // apart (back to the same codes), the 8-bit RGB merges neighbours.
  for (const DeepFormat& f : {kDeepFormats[0], kDeepFormats[1]})
    for (bool full : {false, true}) {
      const int64_t w = 4, h = 256;
      FrameConverter c(f.format, w, h, {YuvMatrix::BT709, full}, kCpu);
      const at::Tensor luma = at::arange(1024, at::TensorOptions().dtype(at::kInt)).view({1, -1});
      const at::Tensor chroma = at::full({1, c.layout().size / 2 - 1024}, 512, at::kInt);
      const at::Tensor words = at::bitwise_left_shift(at::cat({luma, chroma}, 1), f.shift);
      const at::Tensor packed =
          at::stack({at::bitwise_and(words, 255), at::bitwise_right_shift(words, 8)}, 2).to(at::kByte).view({1, -1});
      const at::Tensor back = c.from_rgb_float(c.to_rgb_float(packed));
      // Codes outside the nominal range clamp to black/white in RGB; inside it they come back exactly.
      const int lo = full ? 0 : 64, hi = full ? 1023 : 940;
      const at::Tensor codes = at::tensor(codes_in(f, back[0], w, h), at::kInt).narrow(0, lo, hi - lo + 1);
      EXPECT_TRUE(at::equal(codes, at::arange(lo, hi + 1, at::TensorOptions().dtype(at::kInt))))
          << pixel_format_name(f.format) << " full " << full;
      const at::Tensor through_u8 = c.from_rgb(c.to_rgb(packed));
      const at::Tensor lossy = at::tensor(codes_in(f, through_u8[0], w, h), at::kInt).narrow(0, lo, hi - lo + 1);
      EXPECT_LE(std::get<0>(at::_unique(lossy)).numel(), 256) << "8-bit RGB keeps at most 256 greys";
    }
}

TEST(FrameConverter, P010IgnoresTheLowSixBitsAndI420TenBitTheTopSix) {
  const int64_t w = 2, h = 2;
  for (const DeepFormat& f : {kDeepFormats[0], kDeepFormats[1]}) {
    FrameConverter c(f.format, w, h, {YuvMatrix::BT601, false}, kCpu);
    const at::Tensor clean = random_deep_frame(f, w, h, 5);
    at::Tensor words = clean.view({-1, 2}).to(at::kInt);
    words = words.select(1, 0) + words.select(1, 1) * 256;
    // Bits outside the code: P010's low 6, I420_10LE's top 6.
    const at::Tensor noisy_words = f.shift > 0 ? at::bitwise_or(at::bitwise_and(words, 0xFFC0), 0x2A)
                                               : at::bitwise_or(words, 0xA800);
    const at::Tensor noisy =
        at::stack({at::bitwise_and(noisy_words, 255), at::bitwise_right_shift(noisy_words, 8)}, 1).to(at::kByte).view({1, -1});
    const at::Tensor masked = f.shift > 0 ? at::bitwise_and(words, 0xFFC0) : words;
    const at::Tensor clean_codes =
        at::stack({at::bitwise_and(masked, 255), at::bitwise_right_shift(masked, 8)}, 1).to(at::kByte).view({1, -1});
    EXPECT_TRUE(at::equal(c.to_rgb_float(noisy), c.to_rgb_float(clean_codes))) << pixel_format_name(f.format);
  }
}

TEST(FrameConverter, EightBitFloatEntryPointsAgreeWithTheUint8Ones) {
  // 8-bit formats through the float entry points: to_rgb_float is to_rgb (RGB formats exactly, Y'CbCr
  // within the rounding), from_rgb_float of integral values is from_rgb.
  const auto rgb = random_rgb(2, 11, 7, 8);
  for (auto f : kAllFormats) {
    FrameConverter c(f, 7, 11, {YuvMatrix::BT709, false, kChromaSiteMpeg2}, kCpu);
    const at::Tensor packed = c.from_rgb(rgb);
    EXPECT_TRUE(at::equal(c.from_rgb_float(rgb.to(at::kFloat)), packed)) << pixel_format_name(f);
    const at::Tensor fl = c.to_rgb_float(packed);
    EXPECT_TRUE(at::equal(fl.round().to(at::kByte), c.to_rgb(packed))) << pixel_format_name(f);
    if (!is_yuv(f)) {
      EXPECT_TRUE(at::equal(fl, rgb.to(at::kFloat))) << pixel_format_name(f);
    }
  }
  FrameConverter c(PixelFormat::I420, 7, 11, {}, kCpu);
  EXPECT_THROW(c.from_rgb_float(rgb), Error);                    // uint8 is not floating point
  EXPECT_THROW(c.from_rgb(rgb.to(at::kFloat)), Error);           // and float is not uint8
  EXPECT_THROW(c.from_rgb_float(at::zeros({1, 11, 7, 4})), Error);
}

TEST(FrameConverter, CudaDeepFormatsMatchTheCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device in this process";
  const at::Device cuda(at::kCUDA, 0);
  const int64_t w = 35, h = 21;
  for (const DeepFormat& f : kDeepFormats) {
    const YuvSpec spec{YuvMatrix::BT2020, false, kChromaSiteMpeg2};
    FrameConverter cpu(f.format, w, h, spec, kCpu), gpu(f.format, w, h, spec, cuda);
    const at::Tensor packed = random_deep_frame(f, w, h, 3);
    const at::Tensor a = cpu.to_rgb_float(packed), b = gpu.to_rgb_float(packed);
    EXPECT_TRUE(b.is_cuda());
    EXPECT_LT((a - b.cpu()).abs().max().item<float>(), 1e-3f) << pixel_format_name(f.format);
    const at::Tensor pa = cpu.from_rgb_float(a), pb = gpu.from_rgb_float(a.to(cuda));
    // Codes may differ by one where float rounding on the two devices falls on either side of a tie.
    const std::vector<int> ca = codes_in(f, pa[0], w, h), cb = codes_in(f, pb[0], w, h);
    int off = 0;
    for (size_t i = 0; i < ca.size(); ++i) off += std::abs(ca[i] - cb[i]) > 1 ? 100 : ca[i] != cb[i];
    EXPECT_LE(off, static_cast<int>(ca.size() / 100)) << pixel_format_name(f.format);
  }
}
