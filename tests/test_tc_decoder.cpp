// SPDX-License-Identifier: LGPL-2.1-or-later
// The streaming decoder: chunk-by-chunk decoding in any grouping equals a whole-clip decoder written from
// the spec, memory carries across chunks, the first decode trims 3 frames.
#include "engine.h"
#include "model_maker.h"
#include "test_support.h"
#include "tc_decoder.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

using namespace flashvsr;

namespace {

const DecoderWeights& weights() {
  static auto m = Model::from_tensors(make_random_model(ModelSpec::tiny(), 31), LoadOptions{});
  return m->decoder();
}

// The decoder of spec section 7 over a whole clip at once, written from the spec and not from decode_chunk:
// all frames form one batch, each MemBlock's "past" is its input sequence shifted one frame later (zeros
// before the first frame), the layers run in the spec's order (Upsample, then TGrow, then conv).
// latents [1, 16, T, h, w]; cond [1, 3, 4T - 3, 8h, 8w] (a whole stream) -> [1, 3, 4T - 3, 8h, 8w].
at::Tensor whole_clip_decode(const DecoderWeights& w, const at::Tensor& latents, const at::Tensor& cond) {
  const int64_t T = latents.size(2), h = latents.size(3), wd = latents.size(4);
  // Condition front-padded with copies of its first frame to 4T frames: [1, 3, 4T, 8h, 8w].
  const at::Tensor first = cond.select(2, 0).unsqueeze(2);
  const at::Tensor padded = at::cat({first.repeat({1, 1, 4 * T - cond.size(2), 1, 1}), cond}, 2);
  // 'b c (f 4) (h 8) (w 8) -> b (c 4 8 8) f h w': dims (b, c, f, f4, h, h8, w, w8) -> (b, c, f4, h8, w8, f, h, w).
  const at::Tensor unshuffled =
      padded.reshape({1, 3, T, 4, h, 8, wd, 8}).permute({0, 1, 3, 5, 7, 2, 4, 6}).reshape({1, 3 * 4 * 8 * 8, T, h, wd});
  // Input per frame: cat(condition, latent) on channels, frames as the batch: [T, 784, h, w].
  at::Tensor x = at::cat({unshuffled, latents}, 1).squeeze(0).permute({1, 0, 2, 3});

  auto conv = [](const at::Tensor& v, const at::Tensor& weight, const at::Tensor& bias = {}) {
    return at::conv2d(v, weight, bias, /*stride=*/1, /*padding=*/1);
  };
  // MemBlock(n) on [F, n, H, W]: relu(c3(relu(c2(relu(c1(cat(x, past)))))) + x), past[f] = x[f - 1], past[0] = 0.
  auto mem_block = [&](const DecoderWeights::MemBlock& m, const at::Tensor& v) {
    const at::Tensor past = at::cat({at::zeros_like(v.narrow(0, 0, 1)), v.narrow(0, 0, v.size(0) - 1)}, 0);
    at::Tensor y = at::relu(conv(at::cat({v, past}, 1), m.w0, m.b0));
    y = at::relu(conv(y, m.w1, m.b1));
    return at::relu(conv(y, m.w2, m.b2) + v);
  };
  // Upsample x2 (nearest) on [F, n, H, W] -> [F, n, 2H, 2W].
  auto upsample = [](const at::Tensor& v) { return v.repeat_interleave(2, 2).repeat_interleave(2, 3); };
  // TGrow(n, s): 1x1 conv n -> n*s, [F, s*n, H, W]; channel group j of frame f becomes frame s*f + j: [F*s, n, H, W].
  auto t_grow = [](const at::Tensor& v, const at::Tensor& weight, int64_t s) {
    const at::Tensor y = at::conv2d(v, weight);
    return y.reshape({v.size(0), s, v.size(1), y.size(2), y.size(3)}).flatten(0, 1);
  };

  x = at::tanh(x / 3) * 3;                     // 0
  x = at::relu(conv(x, w.in_w, w.in_b));       // 1, 2
  x = at::relu(conv(x, w.in2_w));              // 3, 4
  for (int i = 0; i < 3; ++i) x = mem_block(w.mem[i], x);  // 5-7: [T, c0, h, w]
  x = t_grow(upsample(x), w.tgrow[0], 1);      // 8, 9
  x = conv(x, w.stage_w[0]);                   // 10: [T, c1, 2h, 2w]
  for (int i = 3; i < 6; ++i) x = mem_block(w.mem[i], x);  // 11-13
  x = t_grow(upsample(x), w.tgrow[1], 2);      // 14, 15
  x = conv(x, w.stage_w[1]);                   // 16: [2T, c2, 4h, 4w]
  for (int i = 6; i < 9; ++i) x = mem_block(w.mem[i], x);  // 17-19
  x = t_grow(upsample(x), w.tgrow[2], 2);      // 20, 21
  x = at::relu(conv(x, w.stage_w[2]));         // 22, 23: [4T, c3, 8h, 8w]
  x = at::relu(conv(x, w.out1_w));             // 24, 25
  x = conv(x, w.out_w, w.out_b);               // 26: [4T, 3, 8h, 8w]
  // The stream's first decode drops its first 3 frames; output x*2-1 as [1, 3, 4T - 3, 8h, 8w].
  return (x.narrow(0, 3, 4 * T - 3) * 2 - 1).permute({1, 0, 2, 3}).unsqueeze(0);
}

// Float32 on the CPU: the two computations differ only in the order of floating-point operations.
void expect_matches_whole_clip(const at::Tensor& found, const at::Tensor& expected) {
  ASSERT_EQ(found.sizes(), expected.sizes());
  const double max_diff = (found - expected).abs().max().item<double>();
  const double scale = expected.abs().max().item<double>();
  EXPECT_LE(max_diff, 1e-5 * std::max(1.0, scale)) << "max |chunked - whole clip| " << max_diff << ", output scale " << scale;
}

}  // namespace

TEST(TcDecoder, FirstDecodeDropsThreeFramesLaterDecodesDoNot) {
  c10::InferenceMode guard;
  DecoderState s;
  auto out0 = decode_chunk(weights(), s, test::seeded_randn({1, 16, 6, 4, 4}, 1), test::seeded_randn({1, 3, 21, 32, 32}, 2).tanh());
  EXPECT_EQ(out0.sizes().vec(), (std::vector<int64_t>{1, 3, 21, 32, 32}));
  auto out1 = decode_chunk(weights(), s, test::seeded_randn({1, 16, 2, 4, 4}, 3), test::seeded_randn({1, 3, 8, 32, 32}, 4).tanh());
  EXPECT_EQ(out1.sizes().vec(), (std::vector<int64_t>{1, 3, 8, 32, 32}));
}

TEST(TcDecoder, ChunkByChunkDecodingEqualsTheSpecsWholeClipDecoder) {
  c10::InferenceMode guard;
  auto lat = test::seeded_randn({1, 16, 10, 4, 4}, 5);
  auto cond = test::seeded_randn({1, 3, 37, 32, 32}, 6).tanh();  // 37 = 4 * 10 - 3 (front-padded by 3)
  const at::Tensor expected = whole_clip_decode(weights(), lat, cond);
  // The engine's schedule: chunk 0 = 6 latents with LQ frames [0:21], later chunks 2 latents with 8 frames.
  DecoderState streamed;
  std::vector<at::Tensor> parts;
  parts.push_back(decode_chunk(weights(), streamed, lat.narrow(2, 0, 6), cond.narrow(2, 0, 21)));
  parts.push_back(decode_chunk(weights(), streamed, lat.narrow(2, 6, 2), cond.narrow(2, 21, 8)));
  parts.push_back(decode_chunk(weights(), streamed, lat.narrow(2, 8, 2), cond.narrow(2, 29, 8), /*group=*/2));
  expect_matches_whole_clip(at::cat(parts, 2), expected);
  // One call over the whole clip, in one group, is the same computation.
  DecoderState whole;
  expect_matches_whole_clip(decode_chunk(weights(), whole, lat, cond, /*group=*/10), expected);
}

// A CUDA graph of a steady chunk replays fixed addresses: every MemBlock's memory keeps its storage once the
// stream has started (the whole-clip comparison above proves the values).
TEST(TcDecoder, MemoryKeepsItsStorageAcrossChunks) {
  c10::InferenceMode guard;
  DecoderState s;
  decode_chunk(weights(), s, test::seeded_randn({1, 16, 6, 4, 4}, 1), test::seeded_randn({1, 3, 21, 32, 32}, 2).tanh());
  std::vector<const void*> first;
  for (const auto& p : s.past) first.push_back(p.data_ptr());
  for (int chunk = 1; chunk < 3; ++chunk) {
    decode_chunk(weights(), s, test::seeded_randn({1, 16, 2, 4, 4}, 10 + chunk),
                 test::seeded_randn({1, 3, 8, 32, 32}, 20 + chunk).tanh(), /*group=*/chunk);
    for (size_t i = 0; i < s.past.size(); ++i) EXPECT_EQ(s.past[i].data_ptr(), first[i]) << "block " << i << ", chunk " << chunk;
  }
}

TEST(TcDecoder, EveryGroupSizeEqualsTheSpecsWholeClipDecoder) {
  c10::InferenceMode guard;
  auto lat = test::seeded_randn({1, 16, 6, 4, 4}, 7);
  auto cond = test::seeded_randn({1, 3, 21, 32, 32}, 8).tanh();
  const at::Tensor expected = whole_clip_decode(weights(), lat, cond);
  for (int64_t group : {1, 4, 6}) {
    SCOPED_TRACE("group " + std::to_string(group));
    DecoderState s;
    expect_matches_whole_clip(decode_chunk(weights(), s, lat, cond, group), expected);
  }
}

TEST(TcDecoder, MemoryMakesLaterChunksDependOnEarlierOnesAndResetForgets) {
  c10::InferenceMode guard;
  auto lat1 = test::seeded_randn({1, 16, 6, 4, 4}, 9), lat1b = test::seeded_randn({1, 16, 6, 4, 4}, 10), lat2 = test::seeded_randn({1, 16, 2, 4, 4}, 11);
  auto c1 = test::seeded_randn({1, 3, 21, 32, 32}, 12).tanh(), c2 = test::seeded_randn({1, 3, 8, 32, 32}, 13).tanh();
  DecoderState a, b;
  decode_chunk(weights(), a, lat1, c1);
  decode_chunk(weights(), b, lat1b, c1);
  EXPECT_FALSE(at::allclose(decode_chunk(weights(), a, lat2, c2), decode_chunk(weights(), b, lat2, c2)));
  a.reset();
  DecoderState fresh;
  EXPECT_TRUE(at::equal(decode_chunk(weights(), a, lat1, c1), decode_chunk(weights(), fresh, lat1, c1)));
}

TEST(TcDecoder, MismatchedConditionIsAnError) {
  c10::InferenceMode guard;
  DecoderState s;
  EXPECT_THROW(decode_chunk(weights(), s, test::seeded_randn({1, 16, 2, 4, 4}, 1), test::seeded_randn({1, 3, 9, 32, 32}, 2)), Error);
  EXPECT_THROW(decode_chunk(weights(), s, test::seeded_randn({1, 16, 2, 4, 4}, 1), test::seeded_randn({1, 3, 8, 32, 16}, 2)), Error);
}

// On CUDA in bf16 the ReLU convolutions run as cuDNN fused convolutions (bias, residual and ReLU in the
// epilogue); the composed conv, add and relu of the same weights are the expectation.
TEST(TcDecoder, CudaFusedEpiloguesMatchTheComposedOperationsInEveryGrouping) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  LoadOptions o;
  o.device = at::Device(at::kCUDA, 0);
  o.dtype = at::kBFloat16;
  auto m = Model::from_tensors(make_random_model(ModelSpec::tiny(), 33), o);
  ASSERT_TRUE(m->decoder().fused_epilogues) << m->decoder().epilogue_path;
  DecoderWeights composed = m->decoder();
  composed.fused_epilogues = false;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(34);
  const auto cuda = at::TensorOptions().device(o.device).dtype(o.dtype);
  DecoderState fused_state, composed_state;
  for (int chunk = 0; chunk < 2; ++chunk) {  // the second chunk reads the MemBlock memory of the first
    auto latents = at::randn({1, 16, 2, 4, 6}, gen, at::kFloat).to(cuda);
    auto cond = (at::rand({1, 3, 8, 32, 48}, gen, at::kFloat) * 2 - 1).to(cuda);
    const int64_t group = chunk + 1;  // one frame at a time, then both frames of the chunk together
    auto a = decode_chunk(m->decoder(), fused_state, latents, cond, group).to(at::kFloat);
    auto b = decode_chunk(composed, composed_state, latents, cond, group).to(at::kFloat);
    ASSERT_EQ(a.sizes(), b.sizes());
    EXPECT_TRUE(a.isfinite().all().item<bool>());
    EXPECT_LT(((a - b).norm() / b.norm()).item<double>(), 2e-2) << "chunk " << chunk;
  }
}
