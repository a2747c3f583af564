// SPDX-License-Identifier: LGPL-2.1-or-later
#include "rope.h"

#include <cmath>
#include <vector>

namespace flashvsr {

namespace {

// angles[p][j] = position_p / 10000^(2j / part_dims), for j < part_dims / 2, in float64.
at::Tensor part_angles(int64_t part_dims, int64_t first, int64_t count) {
  const int64_t pairs = part_dims / 2;
  std::vector<double> a(static_cast<size_t>(count * pairs));
  for (int64_t j = 0; j < pairs; ++j) {
    const double freq = 1.0 / std::pow(10000.0, static_cast<double>(2 * j) / static_cast<double>(part_dims));
    for (int64_t p = 0; p < count; ++p) a[p * pairs + j] = static_cast<double>(first + p) * freq;
  }
  return at::from_blob(a.data(), {count, pairs}, at::kDouble).clone();
}

}  // namespace

Rope::Rope(int64_t head_dim, int64_t h, int64_t w, at::Device device)
    : head_dim_(head_dim), h_(h), w_(w), device_(device) {
  const int64_t d_hw = head_dim / 3;
  auto ah = part_angles(d_hw, 0, h).view({1, h, 1, -1}).expand({1, h, w, -1});
  auto aw = part_angles(d_hw, 0, w).view({1, 1, w, -1}).expand({1, h, w, -1});
  auto angles = at::cat({ah, aw}, -1);
  cos_hw_ = angles.cos().to(device, at::kFloat);
  sin_hw_ = angles.sin().to(device, at::kFloat);
}

RopeTable Rope::table(int64_t first_frame, int64_t frames) const {
  const int64_t d_t = head_dim_ - 2 * (head_dim_ / 3);
  auto at_ = part_angles(d_t, first_frame, frames);  // [f, pairs_t]
  auto expand_t = [&](const at::Tensor& v) {
    return v.to(device_, at::kFloat).view({frames, 1, 1, -1}).expand({frames, h_, w_, -1});
  };
  auto full = [&](const at::Tensor& t_part, const at::Tensor& hw_part) {
    return at::cat({expand_t(t_part), hw_part.expand({frames, h_, w_, -1})}, -1)
        .reshape({frames * h_ * w_, 1, head_dim_ / 2});
  };
  RopeTable t{full(at_.cos(), cos_hw_), full(at_.sin(), sin_hw_), {}};
  t.rot = at::complex(t.cos, t.sin);
  return t;
}

at::Tensor apply_rope(const at::Tensor& x, const RopeTable& t) {
  const auto L = x.size(0), heads = x.size(1), d = x.size(2);
  auto xc = at::view_as_complex(x.to(at::kFloat).contiguous().view({L, heads, d / 2, 2}));
  return at::view_as_real(xc * t.rot).view({L, heads, d}).to(x.scalar_type());
}

}  // namespace flashvsr
