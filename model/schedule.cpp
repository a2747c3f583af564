// SPDX-License-Identifier: LGPL-2.1-or-later
#include "schedule.h"

#include "error.h"

namespace flashvsr {

ChunkPlan plan_chunk(int64_t c) {
  if (c < 0) throw Error(Error::Kind::Internal, "plan_chunk: negative chunk index " + std::to_string(c));
  ChunkPlan p;
  p.index = c;
  if (c == 0) {
    p.lq_clips.push_back({0, 1});
    for (int64_t i = 1; i < 7; ++i) p.lq_clips.push_back({4 * i - 3, 4 * i + 1});
    p.latents = {0, kFirstChunkLatents};
    p.output = {0, 21};
    p.frames_needed = kFirstChunkFrames;
  } else {
    p.lq_clips.push_back({8 * c + 17, 8 * c + 21});
    p.lq_clips.push_back({8 * c + 21, 8 * c + 25});
    p.latents = {4 + 2 * c, 6 + 2 * c};
    p.output = {8 * c + 13, 8 * c + 21};
    p.frames_needed = 8 * c + 25;
  }
  // The next chunk reads clips from 8(c+1)+17 and its condition from 8(c+1)+13 = 8c+21.
  p.frames_released = 8 * c + 21;
  return p;
}

int64_t padded_frame_count(int64_t n) {
  if (n < 1) throw Error(Error::Kind::Internal, "padded_frame_count: need at least one frame");
  int64_t k = (n + 4 - 1 + 7) / 8;  // smallest k with 8k + 1 >= n + 4
  if (k < 3) k = 3;
  return 8 * k + 1;
}

int64_t chunk_count(int64_t n) { return (padded_frame_count(n) - 1) / 8 - 2; }

int64_t outputs_ready(int64_t frames_in) {
  if (frames_in < kFirstChunkFrames) return 0;
  return 21 + (frames_in - kFirstChunkFrames) / kChunkFrames * kChunkFrames;
}

}  // namespace flashvsr
