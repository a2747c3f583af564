// SPDX-License-Identifier: LGPL-2.1-or-later
// The streaming chunk schedule (spec section 2) as pure functions: which input frames each chunk reads,
// which latents it denoises, which frames it emits. Everything else indexes through these.
#pragma once

#include <cstdint>
#include <vector>

namespace flashvsr {

struct FrameRange {
  int64_t begin = 0;  // inclusive
  int64_t end = 0;    // exclusive
  int64_t size() const { return end - begin; }
  bool operator==(const FrameRange& o) const { return begin == o.begin && end == o.end; }
};

struct ChunkPlan {
  int64_t index = 0;
  // LQ clips fed to the LQ projection, in order. Chunk 0: [0,1) (primes the caches only), then six
  // 4-frame clips [1,5) .. [21,25); chunk c >= 1: [8c+17, 8c+21), [8c+21, 8c+25).
  std::vector<FrameRange> lq_clips;
  // Latent frames denoised (noise slice and temporal RoPE positions): [0,6) or [4+2c, 6+2c).
  FrameRange latents;
  // LQ frames used as decoder condition and colour reference; equal to the frames emitted.
  // Chunk 0: [0, 21); chunk c >= 1: [8c+13, 8c+21).
  FrameRange output;
  // Input frames that must exist before the chunk can run: 25 or 8c+25.
  int64_t frames_needed = 0;
  // LQ frames no later chunk reads: everything before this index may be released after the chunk.
  int64_t frames_released = 0;
};

// Latent frames of chunk 0 and of every later chunk.
constexpr int64_t kFirstChunkLatents = 6;
constexpr int64_t kChunkLatents = 2;
constexpr int64_t kFirstChunkFrames = 25;  // inputs needed before the first output
constexpr int64_t kChunkFrames = 8;        // inputs (and outputs) per later chunk
constexpr int64_t kLookAheadFrames = 4;    // outputs lag inputs by this much in the steady state
// The most frames any output waits for after its own input arrived: frame 0 leaves with chunk 0, when
// frame kFirstChunkFrames - 1 = 24 arrived; every later frame waits less (4 to 11 frames). The element's
// latency is this many frame durations plus processing.
constexpr int64_t kMaxOutputDelayFrames = kFirstChunkFrames - 1;

ChunkPlan plan_chunk(int64_t chunk_index);

// Frames the stream is padded to for n real frames: the smallest F = 8k + 1 with F >= n + 4 and k >= 3
// (so F >= 25). Frames n .. F-1 repeat frame n-1. Requires n >= 1.
int64_t padded_frame_count(int64_t n);
// Chunks that cover n real frames (k - 2 for F = 8k + 1).
int64_t chunk_count(int64_t n);
// Outputs available once `frames_in` frames were pushed (without padding): the frames emitted by every
// chunk whose frames_needed <= frames_in.
int64_t outputs_ready(int64_t frames_in);

}  // namespace flashvsr
