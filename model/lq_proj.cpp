// SPDX-License-Identifier: LGPL-2.1-or-later
#include "lq_proj.h"

#include <cmath>

namespace flashvsr {

namespace {

constexpr int64_t kCacheFrames = 2;

// 'b c f (h s) (w s) -> b (c s s) f h w'
at::Tensor pixel_unshuffle_3d(const at::Tensor& x, int64_t s) {
  const auto b = x.size(0), c = x.size(1), f = x.size(2), H = x.size(3), W = x.size(4);
  return x.view({b, c, f, H / s, s, W / s, s}).permute({0, 1, 4, 6, 2, 3, 5}).reshape({b, c * s * s, f, H / s, W / s});
}

// Conv3d (4,3,3) with stride (2,1,1) over frames that already hold the temporal context; spatial padding 1
// is replicate padding. Computed as a Conv2d over the 4 frames of each output stacked on channels
// (w2d = the Conv3d weight with its (in, t) axes flattened t-major, see LqProjWeights::bind), which cuDNN
// runs far faster than Conv3d, channels-last on CUDA.
// x: [1, C, F, h, w] (F = 2n + 2) -> [1, C_out, n, h, w]
at::Tensor causal_conv(const at::Tensor& x, const at::Tensor& w2d, const at::Tensor& b) {
  const int64_t C = x.size(1), F = x.size(2), h = x.size(3), w = x.size(4), n = (F - 4) / 2 + 1;
  auto frames = x[0].transpose(0, 1);  // [F, C, h, w]
  std::vector<at::Tensor> windows;
  for (int64_t i = 0; i < n; ++i) windows.push_back(frames.narrow(0, 2 * i, 4).reshape({1, 4 * C, h, w}));
  auto stacked = at::cat(windows, 0);  // [n, 4C, h, w], channels (t, c)
  stacked = at::pad(stacked, {1, 1, 1, 1}, "replicate");
  if (w2d.is_cuda()) stacked = stacked.contiguous(at::MemoryFormat::ChannelsLast);
  return at::conv2d(stacked, w2d, b).transpose(0, 1).unsqueeze(0);  // [1, C_out, n, h, w]
}

// x / max(||x||_2 over channels, 1e-12) * sqrt(C) * gamma, then SiLU; the norm in float32.
at::Tensor rms_norm_silu(const at::Tensor& x, const at::Tensor& gamma) {
  const auto C = x.size(1);
  auto xf = x.to(at::kFloat);
  auto norm = xf.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
  auto y = xf / norm * std::sqrt(static_cast<double>(C)) * gamma.to(at::kFloat).view({1, C, 1, 1, 1});
  return at::silu(y).to(x.scalar_type());
}

at::Tensor last_frames(const at::Tensor& x) { return x.narrow(2, x.size(2) - kCacheFrames, kCacheFrames).clone(); }

// cache := x's last kCacheFrames frames, written into the stream's buffer once it exists (fixed addresses
// from the second clip on, as a CUDA graph replays them); a new buffer only at the start or a new geometry.
void keep_last_frames(at::Tensor& cache, const at::Tensor& x) {
  const at::Tensor last = x.narrow(2, x.size(2) - kCacheFrames, kCacheFrames);
  if (cache.defined() && cache.sizes() == last.sizes() && cache.dtype() == last.dtype() && cache.device() == last.device())
    cache.copy_(last);
  else
    cache = last.clone();
}

}  // namespace

LqVersion parse_lq_version(const std::string& text) {
  if (text == "1.0" || text == "1" || text == "v1" || text == "v1.0") return LqVersion::V1_0;
  if (text == "1.1" || text == "v1.1") return LqVersion::V1_1;
  throw Error(Error::Kind::BadSettings, "model version '" + text + "': expected 1.0 or 1.1");
}

const char* lq_version_name(LqVersion v) { return v == LqVersion::V1_0 ? "1.0" : "1.1"; }

LqProjConfig LqProjConfig::detect(const WeightFile& file) {
  LqProjConfig c;
  const auto w1 = file.shape("conv1.weight");
  const auto w2 = file.shape("conv2.weight");
  if (w1.size() != 5) throw Error(Error::Kind::BadFile, file.path() + ": conv1.weight has shape " + shape_string(w1) + ", expected 5 dims [h1, 768, 4, 3, 3]");
  if (w2.size() != 5) throw Error(Error::Kind::BadFile, file.path() + ": conv2.weight has shape " + shape_string(w2) + ", expected 5 dims [h2, h1, 4, 3, 3]");
  c.hidden1 = w1[0];
  c.hidden2 = w2[0];
  require_dim(file, "conv1.weight input channels (3 x 16 x 16)", c.in_channels, w1[1]);
  c.num_linear = file.count_indexed("linear_layers.", ".weight");
  if (c.num_linear == 0) throw Error(Error::Kind::BadFile, file.path() + ": missing tensor 'linear_layers.0.weight'");
  const auto lw = file.shape("linear_layers.0.weight");
  if (lw.size() != 2) throw Error(Error::Kind::BadFile, file.path() + ": linear_layers.0.weight has shape " + shape_string(lw) + ", expected [dim, h2]");
  c.out_dim = lw[0];
  return c;
}

LqProjWeights LqProjWeights::bind(WeightFile& f, const LqProjConfig& c, at::Device d, at::ScalarType t) {
  LqProjWeights w;
  w.config = c;
  // Conv3d weights [out, in, 4, 3, 3] stored as Conv2d weights [out, 4 * in, 3, 3] (t-major channels).
  auto as_2d = [&](const at::Tensor& w3) {
    auto w2 = w3.permute({0, 2, 1, 3, 4}).reshape({w3.size(0), 4 * w3.size(1), 3, 3});
    return d.is_cuda() ? w2.contiguous(at::MemoryFormat::ChannelsLast) : w2.contiguous();
  };
  w.conv1_w = as_2d(f.take("conv1.weight", {c.hidden1, c.in_channels, 4, 3, 3}, d, t));
  w.conv1_b = f.take("conv1.bias", {c.hidden1}, d, t);
  w.norm1_gamma = f.take("norm1.gamma", {c.hidden1, 1, 1, 1}, d, t).view({c.hidden1});
  w.conv2_w = as_2d(f.take("conv2.weight", {c.hidden2, c.hidden1, 4, 3, 3}, d, t));
  w.conv2_b = f.take("conv2.bias", {c.hidden2}, d, t);
  w.norm2_gamma = f.take("norm2.gamma", {c.hidden2, 1, 1, 1}, d, t).view({c.hidden2});
  for (int64_t i = 0; i < c.num_linear; ++i) {
    const std::string p = "linear_layers." + std::to_string(i);
    w.linear_w.push_back(f.take(p + ".weight", {c.out_dim, c.hidden2}, d, t));
    w.linear_b.push_back(f.take(p + ".bias", {c.out_dim}, d, t));
  }
  return w;
}

std::vector<at::Tensor> lq_project(const LqProjWeights& w, LqVersion version, LqProjState& state,
                                   const at::Tensor& clip) {
  const bool first = state.clips == 0;
  const int64_t expected_frames = first ? 1 : 4;
  if (clip.dim() != 5 || clip.size(0) != 1 || clip.size(1) != 3 || clip.size(2) != expected_frames ||
      clip.size(3) % w.config.unshuffle != 0 || clip.size(4) % w.config.unshuffle != 0)
    throw Error(Error::Kind::Internal, "lq_project: clip has shape " + shape_string(clip.sizes().vec()) +
                                          ", expected [1, 3, " + std::to_string(expected_frames) +
                                          ", H, W] with H, W multiples of 16");

  // x: [1, 3, 4, H, W] -> u: [1, 768, 4, h, w]
  at::Tensor x = first ? at::cat({clip.expand({1, 3, 3, clip.size(3), clip.size(4)}), clip}, 2) : clip;
  at::Tensor u = pixel_unshuffle_3d(x, w.config.unshuffle);

  // conv1 sees 6 frames: 2 of temporal context + 4 -> 2 frames. The caches are read (into the
  // concatenation) before they are overwritten with this clip's last frames.
  at::Tensor context1;
  if (version == LqVersion::V1_0) {
    context1 = last_frames(u);
  } else {
    context1 = first ? u.narrow(2, 0, 1).expand({-1, -1, kCacheFrames, -1, -1}) : state.conv1_cache;
  }
  const at::Tensor in1 = at::cat({context1, u}, 2);  // [1, 768, 6, h, w]
  keep_last_frames(state.conv1_cache, u);
  at::Tensor y = rms_norm_silu(causal_conv(in1, w.conv1_w, w.conv1_b), w.norm1_gamma);

  // conv2 sees 4 frames: 2 of context + 2 -> 1 frame.
  at::Tensor in2;  // [1, h1, 4, h, w]; not needed for the first clip
  if (!first) in2 = at::cat({version == LqVersion::V1_0 ? last_frames(y) : state.conv2_cache, y}, 2);
  keep_last_frames(state.conv2_cache, y);
  ++state.clips;
  if (first) return {};

  at::Tensor z = rms_norm_silu(causal_conv(in2, w.conv2_w, w.conv2_b), w.norm2_gamma);
  // z: [1, h2, 1, h, w] -> tokens [1, h*w, h2]
  at::Tensor tokens = z.flatten(2).transpose(1, 2);
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < w.linear_w.size(); ++i) out.push_back(at::linear(tokens, w.linear_w[i], w.linear_b[i]));
  return out;
}

}  // namespace flashvsr
