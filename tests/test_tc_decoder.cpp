// SPDX-License-Identifier: LGPL-2.1-or-later
// The streaming decoder: chunking and grouping are exact, memory carries across chunks, the first decode
// trims 3 frames.
#include "engine.h"
#include "model_maker.h"
#include "test_support.h"
#include "tc_decoder.h"

#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

using namespace flashvsr;

namespace {

const DecoderWeights& weights() {
  static auto m = Model::from_tensors(make_random_model(ModelSpec::tiny(), 31), LoadOptions{});
  return m->decoder();
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

TEST(TcDecoder, ChunkedDecodingEqualsOneDecodeOfTheWholeSequence) {
  c10::InferenceMode guard;
  auto lat = test::seeded_randn({1, 16, 10, 4, 4}, 5);
  auto cond = test::seeded_randn({1, 3, 37, 32, 32}, 6).tanh();  // 37 = 4 * 10 - 3 (front-padded by 3)
  DecoderState whole;
  auto all = decode_chunk(weights(), whole, lat, cond, /*group=*/10);
  DecoderState streamed;
  std::vector<at::Tensor> parts;
  parts.push_back(decode_chunk(weights(), streamed, lat.narrow(2, 0, 6), cond.narrow(2, 0, 21)));
  parts.push_back(decode_chunk(weights(), streamed, lat.narrow(2, 6, 2), cond.narrow(2, 21, 8)));
  parts.push_back(decode_chunk(weights(), streamed, lat.narrow(2, 8, 2), cond.narrow(2, 29, 8), /*group=*/2));
  auto joined = at::cat(parts, 2);
  ASSERT_EQ(joined.sizes(), all.sizes());
  EXPECT_TRUE(at::allclose(joined, all, 1e-5, 1e-5));
}

TEST(TcDecoder, GroupSizeDoesNotChangeTheResult) {
  c10::InferenceMode guard;
  auto lat = test::seeded_randn({1, 16, 6, 4, 4}, 7);
  auto cond = test::seeded_randn({1, 3, 21, 32, 32}, 8).tanh();
  DecoderState a, b;
  auto one = decode_chunk(weights(), a, lat, cond, 1);
  auto all = decode_chunk(weights(), b, lat, cond, 6);
  EXPECT_TRUE(at::allclose(one, all, 1e-5, 1e-5));
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
