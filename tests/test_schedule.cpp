// SPDX-License-Identifier: LGPL-2.1-or-later
#include "schedule.h"

#include <gtest/gtest.h>

#include <algorithm>

using namespace flashvsr;

TEST(Schedule, FirstChunkPrimesThenReadsSixClipsAndEmitsTwentyOneFrames) {
  const ChunkPlan p = plan_chunk(0);
  ASSERT_EQ(p.lq_clips.size(), 7u);
  EXPECT_EQ(p.lq_clips[0], (FrameRange{0, 1}));
  for (int i = 1; i < 7; ++i) EXPECT_EQ(p.lq_clips[i], (FrameRange{4 * i - 3, 4 * i + 1}));
  EXPECT_EQ(p.latents, (FrameRange{0, 6}));
  EXPECT_EQ(p.output, (FrameRange{0, 21}));
  EXPECT_EQ(p.frames_needed, 25);
}

TEST(Schedule, LaterChunksReadTwoClipsAndEmitEightFrames) {
  for (int64_t c = 1; c < 50; ++c) {
    const ChunkPlan p = plan_chunk(c);
    ASSERT_EQ(p.lq_clips.size(), 2u);
    EXPECT_EQ(p.lq_clips[0], (FrameRange{8 * c + 17, 8 * c + 21}));
    EXPECT_EQ(p.lq_clips[1], (FrameRange{8 * c + 21, 8 * c + 25}));
    EXPECT_EQ(p.latents, (FrameRange{4 + 2 * c, 6 + 2 * c}));
    EXPECT_EQ(p.output, (FrameRange{8 * c + 13, 8 * c + 21}));
    EXPECT_EQ(p.frames_needed, 8 * c + 25);
  }
}

TEST(Schedule, ChunksTileFramesLatentsAndClipsWithoutGapsOrOverlap) {
  ChunkPlan prev = plan_chunk(0);
  for (int64_t c = 1; c < 200; ++c) {
    const ChunkPlan p = plan_chunk(c);
    EXPECT_EQ(p.output.begin, prev.output.end);
    EXPECT_EQ(p.latents.begin, prev.latents.end);
    EXPECT_EQ(p.lq_clips.front().begin, prev.lq_clips.back().end);
    EXPECT_EQ(p.frames_needed, prev.frames_needed + 8);
    // Nothing this chunk reads was released by the previous one.
    EXPECT_GE(p.output.begin, prev.frames_released);
    EXPECT_GE(p.lq_clips.front().begin, prev.frames_released);
    EXPECT_LE(p.lq_clips.back().end, p.frames_needed);
    prev = p;
  }
}

TEST(Schedule, PaddedFrameCountIsSmallestEightKPlusOneWithFourFramesOfLookAhead) {
  for (int64_t n = 1; n <= 300; ++n) {
    const int64_t F = padded_frame_count(n);
    EXPECT_EQ(F % 8, 1) << n;
    EXPECT_GE(F, n + 4) << n;
    EXPECT_GE(F, 25) << n;
    if (F > 25) EXPECT_LT(F - 8, n + 4) << n;
  }
  EXPECT_EQ(padded_frame_count(29), 33);  // the reference's own case: N + 4 = 8k + 1
  EXPECT_EQ(padded_frame_count(37), 41);
  EXPECT_EQ(padded_frame_count(1), 25);
}

TEST(Schedule, ChunkCountCoversEveryFrameAndNoMore) {
  for (int64_t n : {1, 5, 20, 21, 22, 24, 25, 26, 29, 30, 33, 37, 100, 1001}) {
    const int64_t k = chunk_count(n);
    ASSERT_GE(k, 1);
    EXPECT_GE(plan_chunk(k - 1).output.end, n) << n;
    if (k > 1) EXPECT_LT(plan_chunk(k - 2).output.end, n) << n;
    EXPECT_EQ(plan_chunk(k - 1).frames_needed, padded_frame_count(n)) << n;
  }
}

TEST(Schedule, OutputsLagInputsByTwentyFiveThenEightPerEight) {
  EXPECT_EQ(outputs_ready(0), 0);
  EXPECT_EQ(outputs_ready(24), 0);
  EXPECT_EQ(outputs_ready(25), 21);
  EXPECT_EQ(outputs_ready(32), 21);
  EXPECT_EQ(outputs_ready(33), 29);
  for (int64_t n = 33; n < 500; n += 8) EXPECT_EQ(outputs_ready(n), n - kLookAheadFrames);
}

// Frame i leaves with the chunk that emits it, when that chunk's last needed frame arrived: the longest wait
// is frame 0's, 24 frames (the element's latency in frames); steady chunks make their frames wait 4 to 11.
TEST(Schedule, NoOutputWaitsLongerThanFrameZeroWhichWaitsTwentyFourFrames) {
  EXPECT_EQ(kMaxOutputDelayFrames, 24);
  int64_t longest = 0;
  for (int64_t c = 0; c < 200; ++c) {
    const ChunkPlan p = plan_chunk(c);
    const int64_t arrived = p.frames_needed - 1;  // the input whose arrival runs the chunk
    for (int64_t i = p.output.begin; i < p.output.end; ++i) {
      const int64_t wait = arrived - i;
      longest = std::max(longest, wait);
      if (c > 0) {
        EXPECT_GE(wait, 4) << "frame " << i;
        EXPECT_LE(wait, 11) << "frame " << i;
      }
    }
  }
  EXPECT_EQ(longest, kMaxOutputDelayFrames);
  EXPECT_EQ(plan_chunk(0).frames_needed - 1 - plan_chunk(0).output.begin, kMaxOutputDelayFrames);
}
