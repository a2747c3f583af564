// SPDX-License-Identifier: LGPL-2.1-or-later
// Spatial tiling on the CPU: tile planning (odd sizes, tiles that do not divide the frame), blend weights
// summing to one, one tile == untiled bit for bit, a 2x2 tiling giving N frames whose pixels come from
// independent streams over the crops, the memory model against the measured figures.
#include "tiling.h"

#include "colour.h"
#include "preprocess.h"

#include "model_maker.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include <vector>

using namespace flashvsr;

namespace {

std::shared_ptr<const Model> tiny_model() {
  static std::shared_ptr<const Model> model = [] {
    c10::InferenceMode guard;
    const std::string dir = test::scratch_dir("tiling-tiny-model");
    write_model_dir(dir, make_random_model(ModelSpec::tiny(), 7));
    return Model::load(dir, LoadOptions{});
  }();
  return model;
}

// Deterministic, non-constant LR frames: uint8 [n, h, w, 3].
at::Tensor frames(int64_t n, int64_t h, int64_t w) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(101);
  auto base = at::randint(0, 256, {1, h, w, 3}, gen, at::kLong).to(at::kFloat);
  auto drift = at::arange(n, at::kFloat).view({n, 1, 1, 1}) * 3.0;
  return (base + drift).remainder(256.0).to(at::kByte);
}

StreamOptions options(int64_t w, int64_t h) {
  StreamOptions o;
  o.in_width = w;
  o.in_height = h;
  o.local_range = 3;
  return o;
}

template <class S>
at::Tensor run(S& s, const at::Tensor& lr) {
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < lr.size(0); ++i) out.push_back(s.push(lr.narrow(0, i, 1)).frames);
  out.push_back(s.finish().frames);
  return at::cat(out, 0);
}

// Layouts over odd sizes and tiles that do not divide the frame: {in w, in h, tile w, tile h, overlap}.
struct Layout {
  int64_t w, h, tw, th, overlap;
};
const std::vector<Layout> kLayouts = {
    {37, 23, 128, 128, 16},   // 148x92: 2 columns, 1 row
    {37, 23, 128, 0, 0},      // no overlap: tiles abut
    {97, 61, 128, 128, 24},   // 388x244: 4x2
    {480, 270, 1024, 640, 128},  // 1080p: 2x2
    {100, 33, 128, 128, 96},  // stride of 8 LR pixels: up to 4 tiles over one pixel
    {45, 77, 256, 128, 36},   // overlap not a multiple of the scale (rounded up to 40)
};

}  // namespace

TEST(TilePlan, NoTilingAndTilesAsLargeAsTheFrameAreOneTile) {
  for (const TileOptions& t : {TileOptions{0, 0, 0}, TileOptions{256, 128, 64}, TileOptions{0, 128, 16}}) {
    const TilePlan p = plan_tiles(options(37, 23), t);  // 148x92
    ASSERT_TRUE(p.single());
    EXPECT_EQ(p.tiles[0].w, 148);
    EXPECT_EQ(p.tiles[0].h, 92);
    EXPECT_EQ(p.tiles[0].lr_w, 37);
  }
}

TEST(TilePlan, OneThousandEightyPIntoTwoByTwo) {
  // 480x270 x4 = 1920x1080; tiles 1024x640 (LR 256x160), overlap 128 (LR 32): columns at LR 0 and
  // 480 - 256 = 224, rows at 0 and 270 - 160 = 110.
  const TilePlan p = plan_tiles(options(480, 270), TileOptions{1024, 640, 128});
  ASSERT_EQ(p.cols, 2);
  ASSERT_EQ(p.rows, 2);
  ASSERT_EQ(p.tiles.size(), 4u);
  EXPECT_EQ(p.tiles[1].lr_x, 224);
  EXPECT_EQ(p.tiles[1].x, 896);
  EXPECT_EQ(p.tiles[2].lr_y, 110);
  EXPECT_EQ(p.tiles[2].y, 440);
  for (const Tile& t : p.tiles) {
    EXPECT_EQ(t.w, 1024);
    EXPECT_EQ(t.h, 640);
  }
}

TEST(TilePlan, OddSizesAreCoveredByEqualTilesAtWholeLrPixelsWithTheOverlap) {
  for (const Layout& l : kLayouts) {
    SCOPED_TRACE(std::to_string(l.w) + "x" + std::to_string(l.h) + " tiles " + std::to_string(l.tw) + "x" +
                 std::to_string(l.th) + " overlap " + std::to_string(l.overlap));
    const TilePlan p = plan_tiles(options(l.w, l.h), TileOptions{l.tw, l.th, l.overlap});
    ASSERT_EQ(p.tiles.size(), static_cast<size_t>(p.cols * p.rows));
    at::Tensor covered = at::zeros({l.h * 4, l.w * 4}, at::kInt);
    for (int64_t r = 0; r < p.rows; ++r)
      for (int64_t c = 0; c < p.cols; ++c) {
        const Tile& t = p.tiles[static_cast<size_t>(r * p.cols + c)];
        // The output rectangle is the LR crop times 4, inside the frame.
        EXPECT_EQ(t.x, 4 * t.lr_x);
        EXPECT_EQ(t.w, 4 * t.lr_w);
        EXPECT_EQ(t.y, 4 * t.lr_y);
        EXPECT_EQ(t.h, 4 * t.lr_h);
        EXPECT_GE(t.lr_x, 0);
        EXPECT_LE(t.lr_x + t.lr_w, l.w);
        EXPECT_LE(t.lr_y + t.lr_h, l.h);
        // Tiles of a split side have the tile's size (rounded down to LR pixels).
        if (p.cols > 1) {
          EXPECT_EQ(t.w, l.tw);
        }
        if (p.rows > 1) {
          EXPECT_EQ(t.h, l.th);
        }
        if (c + 1 < p.cols) {
          EXPECT_GE(t.x + t.w - p.tiles[static_cast<size_t>(r * p.cols + c + 1)].x, l.overlap);
        }
        if (r + 1 < p.rows) {
          EXPECT_GE(t.y + t.h - p.tiles[static_cast<size_t>((r + 1) * p.cols + c)].y, l.overlap);
        }
        covered.narrow(0, t.y, t.h).narrow(1, t.x, t.w).add_(1);
      }
    EXPECT_GE(covered.min().item<int>(), 1) << "a pixel no tile covers";
    // The first tiles start at 0, the last end at the frame's edges.
    EXPECT_EQ(p.tiles.front().x, 0);
    EXPECT_EQ(p.tiles.back().x + p.tiles.back().w, l.w * 4);
    EXPECT_EQ(p.tiles.back().y + p.tiles.back().h, l.h * 4);
  }
}

TEST(TilePlan, BadTilingsAreRefusedWithTheReason) {
  auto refused = [](const StreamOptions& o, const TileOptions& t) {
    try {
      plan_tiles(o, t);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), Error::Kind::BadSettings);
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_NE(refused(options(97, 61), TileOptions{100, 128, 0}).find("multiples of 128"), std::string::npos);
  EXPECT_NE(refused(options(97, 61), TileOptions{128, 128, 128}).find("overlap"), std::string::npos);
  StreamOptions odd = options(97, 61);
  odd.out_width = 300;  // not a multiple of 97
  odd.out_height = 244;
  EXPECT_NE(refused(odd, TileOptions{128, 128, 0}).find("integer scale"), std::string::npos);
}

TEST(BlendWeights, SumToOneEverywhereAndAreOneWhereOnlyOneTileCovers) {
  c10::InferenceMode guard;
  for (const Layout& l : kLayouts) {
    SCOPED_TRACE(std::to_string(l.w) + "x" + std::to_string(l.h) + " tiles " + std::to_string(l.tw) + "x" +
                 std::to_string(l.th) + " overlap " + std::to_string(l.overlap));
    const TilePlan p = plan_tiles(options(l.w, l.h), TileOptions{l.tw, l.th, l.overlap});
    const auto weights = blend_weights(p);
    ASSERT_EQ(weights.size(), p.tiles.size());
    at::Tensor sum = at::zeros({l.h * 4, l.w * 4}, at::kDouble);
    at::Tensor count = at::zeros({l.h * 4, l.w * 4}, at::kInt);
    for (size_t i = 0; i < weights.size(); ++i) {
      const Tile& t = p.tiles[i];
      ASSERT_EQ(weights[i].sizes().vec(), (std::vector<int64_t>{t.h, t.w}));
      EXPECT_EQ(weights[i].scalar_type(), at::kFloat);
      EXPECT_GT(weights[i].min().item<float>(), 0.0f) << "tile " << i << " has a pixel of weight 0";
      EXPECT_LE(weights[i].max().item<float>(), 1.0f);
      sum.narrow(0, t.y, t.h).narrow(1, t.x, t.w).add_(weights[i].to(at::kDouble));
      count.narrow(0, t.y, t.h).narrow(1, t.x, t.w).add_(1);
    }
    EXPECT_LT((sum - 1.0).abs().max().item<double>(), 1e-6);
    // Where one tile covers, its weight is exactly 1 (the output is that tile's pixel, unchanged).
    at::Tensor alone = count.eq(1);
    if (alone.any().item<bool>()) {
      EXPECT_EQ(sum.masked_select(alone).ne(1.0).sum().item<int64_t>(), 0);
    }
  }
}

TEST(BlendWeights, RampAcrossTheOverlapIsSmooth) {
  // Two columns: along a row, the left tile's weight falls monotonically across the overlap, by steps no
  // larger than a raised cosine's steepest over the overlap (pi / 2 / overlap), with no jump.
  c10::InferenceMode guard;
  const TilePlan p = plan_tiles(options(48, 16), TileOptions{128, 0, 64});  // 192 wide: x 0 and 64, overlap 64
  ASSERT_EQ(p.cols, 2);
  const int64_t overlap = p.tiles[0].x + p.tiles[0].w - p.tiles[1].x;
  ASSERT_EQ(overlap, 64);
  const at::Tensor row = blend_weights(p)[0][0].to(at::kDouble);  // [128]
  const at::Tensor diffs = row.narrow(0, 1, 127) - row.narrow(0, 0, 127);
  EXPECT_LE(diffs.max().item<double>(), 0.0) << "the left tile's weight rises somewhere";
  EXPECT_LE(-diffs.min().item<double>(), M_PI / 2 / overlap + 1e-6);
  EXPECT_DOUBLE_EQ(row[0].item<double>(), 1.0);
  EXPECT_LT(row[127].item<double>(), 0.01);
}

TEST(TiledStream, OneTileIsBitIdenticalToUntiled) {
  c10::InferenceMode guard;
  const StreamOptions o = options(24, 16);  // 96x64
  const at::Tensor lr = frames(5, 16, 24);
  Stream plain(tiny_model(), o);
  const at::Tensor expected = run(plain, lr);
  // A tile as large as the frame (no tiling, 0x0, takes the same path: plan_tiles gives one tile).
  TiledStream tiled(tiny_model(), o, TileOptions{128, 128, 32});
  ASSERT_TRUE(tiled.plan().single());
  const at::Tensor out = run(tiled, lr);
  ASSERT_EQ(out.sizes(), expected.sizes());
  EXPECT_TRUE(at::equal(out, expected));
}

TEST(TiledStream, TwoByTwoGivesNFramesMadeOfTheTilesStreams) {
  c10::InferenceMode guard;
  // 48x40 -> 192x160; tiles 128x128 (LR 32x32), overlap 32: columns at LR 0 and 16, rows at 0 and 8.
  const StreamOptions o = options(48, 40);
  const TileOptions t{128, 128, 32};
  // Few frames (one chunk per stream: the CPU budget); the shared schedule is checked on every push by
  // TiledStream itself (every tile must return the same frames).
  const int64_t n = 5;
  const at::Tensor lr = frames(n, 40, 48);
  TiledStream tiled(tiny_model(), o, t);
  const TilePlan& p = tiled.plan();
  ASSERT_EQ(p.cols, 2);
  ASSERT_EQ(p.rows, 2);
  const at::Tensor out = run(tiled, lr);
  ASSERT_EQ(out.sizes().vec(), (std::vector<int64_t>{n, 160, 192, 3}));
  EXPECT_EQ(tiled.stats().frames_out, n);

  // Each pixel is a convex combination of what independent streams over the tiles' LR crops make: equal
  // to the one tile where only it covers, between the covering tiles' values elsewhere (+-1 rounding).
  at::Tensor lo = at::full({n, 160, 192, 3}, 255.0), hi = at::zeros({n, 160, 192, 3});
  at::Tensor count = at::zeros({160, 192}, at::kInt), only = at::zeros({n, 160, 192, 3});
  for (const Tile& tile : p.tiles) {
    StreamOptions to = o;
    to.in_width = tile.lr_w;
    to.in_height = tile.lr_h;
    Stream s(tiny_model(), to);
    const at::Tensor crop = lr.narrow(1, tile.lr_y, tile.lr_h).narrow(2, tile.lr_x, tile.lr_w);
    const at::Tensor v = run(s, crop).to(at::kFloat);
    ASSERT_EQ(v.sizes().vec(), (std::vector<int64_t>{n, tile.h, tile.w, 3}));
    auto region = [&](at::Tensor& x) { return x.narrow(1, tile.y, tile.h).narrow(2, tile.x, tile.w); };
    region(lo).copy_(at::minimum(region(lo), v));
    region(hi).copy_(at::maximum(region(hi), v));
    region(only).copy_(v);
    count.narrow(0, tile.y, tile.h).narrow(1, tile.x, tile.w).add_(1);
  }
  const at::Tensor f = out.to(at::kFloat);
  EXPECT_TRUE(at::all(f >= lo - 1).item<bool>());
  EXPECT_TRUE(at::all(f <= hi + 1).item<bool>());
  const at::Tensor alone = count.eq(1).view({1, 160, 192, 1}).expand_as(f);
  ASSERT_TRUE(alone.any().item<bool>());
  EXPECT_TRUE(at::equal(f.masked_select(alone), only.masked_select(alone)));
}

TEST(TiledStream, BlendedColourCorrectsTheBlendedFrameAgainstTheWholeLqFrame) {
  // TileColour::Blended: the tiles run without correction, AdaIN runs once on the blended frame against
  // the whole frame's bicubic LQ (each output frame paired with its own input frame).
  c10::InferenceMode guard;
  StreamOptions o = options(48, 16);  // 192x64: 2x1 tiles
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  // Frames of different brightness (means about 128, 143, 158): a frame corrected against another
  // frame's LQ would be 15 levels off.
  const at::Tensor lr = (at::randint(96, 160, {3, 16, 48, 3}, gen, at::kLong) +
                         at::arange(3, at::kLong).view({3, 1, 1, 1}) * 15).to(at::kByte);
  TiledStream blended(tiny_model(), o, TileOptions{128, 0, 32, TileColour::Blended});
  ASSERT_EQ(blended.plan().tiles.size(), 2u);
  const at::Tensor out = run(blended, lr).to(at::kDouble);
  ASSERT_EQ(out.sizes().vec(), (std::vector<int64_t>{3, 64, 192, 3}));
  // The same from the uncorrected tiled frames, corrected here frame by frame (they are rounded to 8
  // bits first, the stream corrects the unrounded blend: a level or so apart).
  o.color_fix = ColorFix::None;
  TiledStream plain(tiny_model(), o, TileOptions{128, 0, 32});
  const at::Tensor none = run(plain, lr);
  const at::Tensor lq = BicubicResize(48, 16, 192, 64, at::kCPU)(lr);
  const at::Tensor expected =
      unit_to_u8(colour_correct(u8_to_unit(none, at::kFloat), u8_to_unit(lq, at::kFloat), ColorFix::AdaIN));
  // AdaIN scales hq's rounding error (<= 0.5 level) by its gain std(lq) / std(hq), per frame and channel;
  // plus the rounding of both results.
  const at::Tensor gain = lq.to(at::kDouble).std({1, 2}, false) / none.to(at::kDouble).std({1, 2}, false);  // [n, 3]
  const at::Tensor bound = (gain * 0.5 + 1.5).view({3, 1, 1, 3});
  const at::Tensor diff = (out - expected.to(at::kDouble)).abs();
  EXPECT_TRUE(at::all(diff <= bound).item<bool>()) << "max diff " << diff.max().item<double>() << ", gains " << gain;
  // AdaIN's effect: each frame's per-channel mean is the LQ frame's (to rounding).
  EXPECT_LT((out.mean({1, 2}) - lq.to(at::kDouble).mean({1, 2})).abs().max().item<double>(), 1.0);
}

TEST(TiledStream, NoiseSourceIsRefusedWhenTiled) {
  TiledStream tiled(tiny_model(), options(48, 40), TileOptions{128, 128, 32});
  try {
    tiled.set_noise_source([](int64_t, int64_t) { return at::Tensor(); });
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadSettings);
  }
}

TEST(MemoryModel, FitsTheMeasuredFiguresOfTheReleasedModel) {
  // The released model's sizes (DiT 1536 x 30 blocks, decoder 512/256/128/128) in bf16 at kv ratio 3.
  ModelConfig c;
  c.dit.dim = 1536;
  c.dit.layers = 30;
  c.decoder.channels = {512, 256, 128, 128};
  StreamOptions o;
  const MemoryModel m = MemoryModel::measured(c, o, at::kBFloat16);
  // docs/performance.md (H200, bf16): 11.1 GiB at 1408x768, 19.1 at 1920x1080, 62.7 at 3840x2160.
  struct Point {
    int64_t w, h;
    double gib;
  };
  for (const Point& pt : {Point{1408, 768, 11.1}, Point{1920, 1080, 19.1}, Point{3840, 2160, 62.7}}) {
    StreamOptions s;
    s.in_width = pt.w / 4;
    s.in_height = pt.h / 4;
    EXPECT_NEAR(m.estimate_gib(plan_tiles(s, TileOptions{})), pt.gib, 1.5) << pt.w << "x" << pt.h;
  }
  // KV cache of 30 blocks x {k, v} x 3 slices x 2 latent frames x 3906.25 tokens x 1536 x 2 bytes = 4.02
  // GiB per MP, plus the decoder's memory and the pending frames.
  EXPECT_GT(m.state_per_mp_gib, 4.0);
  EXPECT_LT(m.state_per_mp_gib, m.per_mp_gib);
}

TEST(MemoryModel, TilesForMemoryFitsOrSaysWhyNot) {
  ModelConfig c;
  c.dit.dim = 1536;
  c.dit.layers = 30;
  c.decoder.channels = {512, 256, 128, 128};
  StreamOptions o;
  o.in_width = 960;
  o.in_height = 540;  // 4K out
  const MemoryModel m = MemoryModel::measured(c, o, at::kBFloat16);
  EXPECT_FALSE(tiles_for_memory(o, 128, 80.0, m).enabled());  // 62.7 GiB untiled
  const TileOptions t = tiles_for_memory(o, 128, 55.0, m);
  ASSERT_TRUE(t.enabled());
  EXPECT_LE(m.estimate_gib(plan_tiles(o, t)), 55.0);
  try {
    tiles_for_memory(o, 128, 8.0, m);  // the resident state alone is ~35 GiB at 4K
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadSettings);
    EXPECT_NE(std::string(e.what()).find("resident"), std::string::npos);
  }
}
