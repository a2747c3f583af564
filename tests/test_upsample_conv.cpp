// SPDX-License-Identifier: LGPL-2.1-or-later
// The sub-pixel form of "nearest x2 upsampling, then a 3x3 convolution": it equals LibTorch's upsampling
// followed by its convolution (the expectation), every phase lands at its pixel, and on CUDA the interleave
// kernel moves exactly the bytes the strided copy moves.
#include "error.h"
#include "test_support.h"
#include "upsample_conv.h"

#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

using namespace flashvsr;

namespace {

at::Tensor upsample_then_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
  return at::conv2d(at::upsample_nearest2d(x, {2 * x.size(2), 2 * x.size(3)}), w, b, {1, 1}, {1, 1});
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kFloat) - b.to(at::kFloat)).abs().max() / b.to(at::kFloat).abs().max().clamp_min(1e-12)).item<double>();
}

}  // namespace

TEST(UpsampleConv, EqualsNearestUpsamplingThenThe3x3ConvolutionAtEverySize) {
  c10::InferenceMode guard;
  // Odd sizes, a single pixel, a single row: the borders are where phases read the zero padding.
  const std::vector<std::array<int64_t, 4>> cases{{2, 5, 7, 3}, {1, 3, 1, 1}, {3, 4, 1, 6}, {1, 8, 4, 4}};
  uint64_t seed = 1;
  for (const auto& [n, i, h, w] : cases) {
    SCOPED_TRACE(shape_string({n, i, h, w}));
    const int64_t o = i + 2;
    const at::Tensor x = test::seeded_randn({n, i, h, w}, seed++);
    const at::Tensor k = test::seeded_randn({o, i, 3, 3}, seed++), b = test::seeded_randn({o}, seed++);
    const at::Tensor expected = upsample_then_conv(x, k, b);
    const at::Tensor found = upsample2x_conv3x3(UpsampleConv::fold(k, b), x);
    ASSERT_EQ(found.sizes(), expected.sizes());
    EXPECT_LT(max_rel_diff(found, expected), 1e-5);
    // Without a bias.
    EXPECT_LT(max_rel_diff(upsample2x_conv3x3(UpsampleConv::fold(k), x), upsample_then_conv(x, k)), 1e-5);
  }
}

TEST(UpsampleConv, ReluEpilogueIsTheReluOfTheComposition) {
  c10::InferenceMode guard;
  const at::Tensor x = test::seeded_randn({2, 6, 5, 4}, 11), k = test::seeded_randn({6, 6, 3, 3}, 12);
  const at::Tensor found = upsample2x_conv3x3(UpsampleConv::fold(k), x, UpsampleConvEpilogue::Relu);
  EXPECT_LT(max_rel_diff(found, at::relu(upsample_then_conv(x, k))), 1e-5);
  EXPECT_EQ(found.lt(0).sum().item<int64_t>(), 0);
}

TEST(UpsampleConv, ChannelsLastInputGivesTheSameValuesInChannelsLast) {
  c10::InferenceMode guard;
  const auto cl = at::MemoryFormat::ChannelsLast;
  const at::Tensor x = test::seeded_randn({2, 8, 3, 5}, 21).contiguous(cl);
  const at::Tensor k = test::seeded_randn({4, 8, 3, 3}, 22).contiguous(cl);
  const at::Tensor found = upsample2x_conv3x3(UpsampleConv::fold(k), x);
  EXPECT_TRUE(found.is_contiguous(cl));
  EXPECT_LT(max_rel_diff(found, upsample_then_conv(x.contiguous(), k.contiguous())), 1e-5);
}

// Each value of y names its own (phase, channel, row, column): the output pixel (2p + a, 2q + b) of
// channel k must hold y's value at channel (2a + b) o + k, pixel (p + a, q + b).
TEST(UpsampleConv, InterleavePutsPhaseAbAtOffsetAbOfEachPixelPair) {
  c10::InferenceMode guard;
  const int64_t o = 3, h = 2, w = 3;
  const at::Tensor y = at::arange(4 * o * (h + 1) * (w + 1), at::kFloat).view({1, 4 * o, h + 1, w + 1});
  const at::Tensor out = interleave_phases(y, o);
  ASSERT_EQ(out.sizes().vec(), (std::vector<int64_t>{1, o, 2 * h, 2 * w}));
  const auto Y = y.accessor<float, 4>();
  const auto O = out.accessor<float, 4>();
  for (int64_t k = 0; k < o; ++k)
    for (int64_t p = 0; p < h; ++p)
      for (int64_t a = 0; a < 2; ++a)
        for (int64_t q = 0; q < w; ++q)
          for (int64_t b = 0; b < 2; ++b)
            ASSERT_EQ(O[0][k][2 * p + a][2 * q + b], Y[0][(2 * a + b) * o + k][p + a][q + b])
                << "channel " << k << " pixel (" << 2 * p + a << ", " << 2 * q + b << ")";
  EXPECT_THROW(interleave_phases(y, 2), Error);  // 12 channels are not 4 phases of 2
}

TEST(UpsampleConv, CudaKernelInterleaveMovesTheSameBytesAsTheStridedCopy) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  const auto cl = at::MemoryFormat::ChannelsLast;
  for (const auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    SCOPED_TRACE(c10::toString(dtype));
    const int64_t o = 128;
    const at::Tensor y = test::seeded_randn({3, 4 * o, 9, 14}, 31).to(at::Device(at::kCUDA, 0), dtype).contiguous(cl);
    const UpsampleConv like{at::Tensor(), at::Tensor(), o};
    EXPECT_EQ(like.interleave_path(y), "phase interleave kernel");
    const at::Tensor found = interleave_phases(y, o).cpu();
    const at::Tensor expected = interleave_phases(y.cpu().contiguous(), o);  // the strided copy on the CPU
    EXPECT_TRUE(found.is_contiguous(cl));
    EXPECT_TRUE(at::equal(found.contiguous(), expected));
  }
}

TEST(UpsampleConv, CudaBf16WithTheFusedReluMatchesTheCompositionInFloat32) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  const auto cl = at::MemoryFormat::ChannelsLast;
  const auto cuda = at::TensorOptions().device(at::Device(at::kCUDA, 0)).dtype(at::kBFloat16);
  const at::Tensor x = test::seeded_randn({2, 128, 12, 20}, 41), k = test::seeded_randn({128, 128, 3, 3}, 42) * 0.05;
  const at::Tensor expected = at::relu(upsample_then_conv(x, k));
  const at::Tensor found = upsample2x_conv3x3(UpsampleConv::fold(k.to(cuda).contiguous(cl)), x.to(cuda).contiguous(cl),
                                              UpsampleConvEpilogue::CudnnFusedRelu);
  EXPECT_TRUE(found.is_contiguous(cl));
  const at::Tensor f = found.to(at::kFloat).cpu();
  EXPECT_LT(((f - expected).norm() / expected.norm()).item<double>(), 2e-2);
}
