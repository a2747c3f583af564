// SPDX-License-Identifier: LGPL-2.1-or-later
#include "rope.h"

#include <cmath>
#include <vector>

namespace flashvsr {

namespace {

// freq[j] = 1 / 10000^(2j / part_dims), j < part_dims / 2: [pairs] float64 on the CPU.
at::Tensor part_frequencies(int64_t part_dims) {
  const int64_t pairs = part_dims / 2;
  std::vector<double> f(static_cast<size_t>(pairs));
  for (int64_t j = 0; j < pairs; ++j)
    f[j] = 1.0 / std::pow(10000.0, static_cast<double>(2 * j) / static_cast<double>(part_dims));
  return at::from_blob(f.data(), {pairs}, at::kDouble).clone();
}

// angles[p][j] = (first + p) * freq[j]: [count, pairs] float64 on freq's device.
at::Tensor part_angles(const at::Tensor& freq, int64_t first, int64_t count) {
  const auto positions = at::arange(first, first + count, freq.options());  // [count]
  return positions.unsqueeze(1) * freq.unsqueeze(0);
}

}  // namespace

Rope::Rope(int64_t head_dim, int64_t h, int64_t w, at::Device device)
    : head_dim_(head_dim), h_(h), w_(w), device_(device) {
  const int64_t d_hw = head_dim / 3;
  const at::Tensor freq_hw = part_frequencies(d_hw);
  auto ah = part_angles(freq_hw, 0, h).view({1, h, 1, -1}).expand({1, h, w, -1});
  auto aw = part_angles(freq_hw, 0, w).view({1, 1, w, -1}).expand({1, h, w, -1});
  auto angles = at::cat({ah, aw}, -1);
  cos_hw_ = angles.cos().to(device, at::kFloat);
  sin_hw_ = angles.sin().to(device, at::kFloat);
  // The temporal frequencies live on the device: a table for any frame position is computed there, with
  // no host-to-device copy in the steady state.
  freq_t_ = part_frequencies(head_dim - 2 * d_hw).to(device);
}

RopeTable Rope::table(int64_t first_frame, int64_t frames) const {
  const auto at_ = part_angles(freq_t_, first_frame, frames);  // [f, pairs_t] float64 on the device
  auto expand_t = [&](const at::Tensor& v) {
    return v.to(at::kFloat).view({frames, 1, 1, -1}).expand({frames, h_, w_, -1});
  };
  auto full = [&](const at::Tensor& t_part, const at::Tensor& hw_part) {
    return at::cat({expand_t(t_part), hw_part.expand({frames, h_, w_, -1})}, -1)
        .reshape({frames * h_ * w_, 1, head_dim_ / 2});
  };
  RopeTable t{full(at_.cos(), cos_hw_), full(at_.sin(), sin_hw_), {}};
  t.rot = at::complex(t.cos, t.sin);
  return t;
}

void Rope::write_table(int64_t first_frame, int64_t frames, RopeTable& into) const {
  RopeTable t = table(first_frame, frames);
  if (!into.cos.defined() || into.cos.sizes() != t.cos.sizes() || into.cos.device() != t.cos.device()) {
    into = std::move(t);
    return;
  }
  into.cos.copy_(t.cos);
  into.sin.copy_(t.sin);
  into.rot.copy_(t.rot);
}

at::Tensor apply_rope(const at::Tensor& x, const RopeTable& t) {
  const auto L = x.size(0), heads = x.size(1), d = x.size(2);
  auto xc = at::view_as_complex(x.to(at::kFloat).contiguous().view({L, heads, d / 2, 2}));
  return at::view_as_real(xc * t.rot).view({L, heads, d}).to(x.scalar_type());
}

}  // namespace flashvsr
