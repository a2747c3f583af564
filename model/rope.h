// SPDX-License-Identifier: LGPL-2.1-or-later
// 3-D rotary position embedding of the DiT (spec section 4). Each head's dims form consecutive pairs
// (x[2j], x[2j+1]) rotated as complex numbers; the first d - 2(d/3) dims (44 of 128) by the latent frame
// position, the next d/3 (42) by the token row, the last d/3 (42) by the token column, with frequencies
// 1 / 10000^(2j / d_part). Angles are computed in float64 from the positions themselves, so there is no
// table to run off the end of: a stream may run forever (the reference's table stops at 1024 frames).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace flashvsr {

struct RopeTable {
  at::Tensor cos;  // [f*h*w, 1, head_dim/2] float32, tokens in (f, h, w) order
  at::Tensor sin;  // same
  at::Tensor rot;  // complex64 cos + i sin, same shape: what apply_rope multiplies by
};

// Tables for one token grid of h x w: the row/column parts are computed once, the temporal part per call.
class Rope {
 public:
  Rope(int64_t head_dim, int64_t h, int64_t w, at::Device device);
  // Table for latent frames at temporal positions first_frame .. first_frame + frames - 1.
  RopeTable table(int64_t first_frame, int64_t frames) const;
  // The same table written into `into`, whose tensors are reused when they have the rows for `frames` (else
  // allocated): fixed addresses from one steady chunk to the next, as a CUDA graph replays them.
  void write_table(int64_t first_frame, int64_t frames, RopeTable& into) const;

 private:
  int64_t head_dim_, h_, w_;
  at::Device device_;
  at::Tensor cos_hw_, sin_hw_;  // [1, h, w, pairs_h + pairs_w] float32
  at::Tensor freq_t_;           // [pairs_t] float64: temporal frequencies
};

// x: [L, heads, head_dim] -> same shape and dtype, rotated as complex pairs (in float32).
at::Tensor apply_rope(const at::Tensor& x, const RopeTable& table);

}  // namespace flashvsr
