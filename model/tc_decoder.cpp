// SPDX-License-Identifier: LGPL-2.1-or-later
#include "tc_decoder.h"

namespace flashvsr {

namespace {

constexpr std::array<int, 9> kMemIndex{5, 6, 7, 11, 12, 13, 17, 18, 19};
constexpr std::array<int, 3> kTGrowIndex{9, 15, 21};
constexpr std::array<int, 3> kStageIndex{10, 16, 22};
constexpr std::array<int64_t, 3> kTGrowStride{1, 2, 2};
constexpr int64_t kTrimFrames = 3;  // 2^2 - 1: frames of the first decode that precede the stream

std::string key(int index, const std::string& rest) { return "decoder." + std::to_string(index) + rest; }

at::Tensor conv3x3(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
  return at::conv2d(x, w, b, {1, 1}, {1, 1});
}

// x: [T, n, h, w]; past of frame t is x[t-1] (state.past for t = 0, zeros at the stream start).
at::Tensor mem_block(const DecoderWeights::MemBlock& m, at::Tensor& past, const at::Tensor& x) {
  auto prev = past.defined() ? past : at::zeros_like(x.narrow(0, 0, 1));
  auto shifted = at::cat({prev, x.narrow(0, 0, x.size(0) - 1)}, 0);
  past = x.narrow(0, x.size(0) - 1, 1).clone();
  auto y = at::relu(conv3x3(at::cat({x, shifted}, 1), m.w0, m.b0));
  y = at::relu(conv3x3(y, m.w1, m.b1));
  return at::relu(conv3x3(y, m.w2, m.b2) + x);
}

// 1x1 conv n -> n*s, then each frame's channels split into s consecutive frames: [T, n, h, w] -> [T*s, n, h, w].
at::Tensor t_grow(const at::Tensor& x, const at::Tensor& w, int64_t stride) {
  auto y = at::conv2d(x, w);
  return y.reshape({x.size(0) * stride, x.size(1), x.size(2), x.size(3)});
}

// The network on a group of frames: x [T, 784, h, w] -> [4T, 3, 8h, 8w] in ~[0, 1].
at::Tensor run_network(const DecoderWeights& w, DecoderState& s, at::Tensor x) {
  x = at::tanh(x / 3) * 3;
  x = at::relu(conv3x3(x, w.in_w, w.in_b));
  x = at::relu(conv3x3(x, w.in2_w));
  for (int stage = 0; stage < 3; ++stage) {
    for (int j = 0; j < 3; ++j) x = mem_block(w.mem[stage * 3 + j], s.past[stage * 3 + j], x);
    x = at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2});
    x = t_grow(x, w.tgrow[stage], kTGrowStride[stage]);
    x = conv3x3(x, w.stage_w[stage]);
  }
  x = at::relu(x);
  x = at::relu(conv3x3(x, w.out1_w));
  return conv3x3(x, w.out_w, w.out_b);
}

}  // namespace

DecoderConfig DecoderConfig::detect(const WeightFile& f) {
  DecoderConfig c;
  const auto in = f.shape(key(1, ".weight"));
  if (in.size() != 4) throw Error(Error::Kind::BadFile, f.path() + ": decoder.1.weight has shape " + shape_string(in) + ", expected [c0, 784, 3, 3]");
  require_dim(f, "decoder.1.weight input channels (768 condition + 16 latent)", c.cond_channels + c.latent_channels, in[1]);
  c.channels[0] = in[0];
  for (int i = 0; i < 3; ++i) {
    const auto s = f.shape(key(kStageIndex[i], ".weight"));
    if (s.size() != 4) throw Error(Error::Kind::BadFile, f.path() + ": " + key(kStageIndex[i], ".weight") + " has shape " + shape_string(s) + ", expected 4 dims");
    c.channels[i + 1] = s[0];
  }
  return c;
}

DecoderWeights DecoderWeights::bind(WeightFile& f, const DecoderConfig& c, at::Device d, at::ScalarType t) {
  DecoderWeights w;
  w.config = c;
  const auto& ch = c.channels;
  w.in_w = f.take(key(1, ".weight"), {ch[0], c.cond_channels + c.latent_channels, 3, 3}, d, t);
  w.in_b = f.take(key(1, ".bias"), {ch[0]}, d, t);
  w.in2_w = f.take(key(3, ".weight"), {ch[0], ch[0], 3, 3}, d, t);
  for (int i = 0; i < 9; ++i) {
    const int64_t n = ch[i / 3];
    auto& m = w.mem[i];
    m.w0 = f.take(key(kMemIndex[i], ".conv.0.weight"), {n, 2 * n, 3, 3}, d, t);
    m.b0 = f.take(key(kMemIndex[i], ".conv.0.bias"), {n}, d, t);
    m.w1 = f.take(key(kMemIndex[i], ".conv.2.weight"), {n, n, 3, 3}, d, t);
    m.b1 = f.take(key(kMemIndex[i], ".conv.2.bias"), {n}, d, t);
    m.w2 = f.take(key(kMemIndex[i], ".conv.4.weight"), {n, n, 3, 3}, d, t);
    m.b2 = f.take(key(kMemIndex[i], ".conv.4.bias"), {n}, d, t);
  }
  for (int i = 0; i < 3; ++i) {
    w.tgrow[i] = f.take(key(kTGrowIndex[i], ".conv.weight"), {ch[i] * kTGrowStride[i], ch[i], 1, 1}, d, t);
    w.stage_w[i] = f.take(key(kStageIndex[i], ".weight"), {ch[i + 1], ch[i], 3, 3}, d, t);
  }
  w.out1_w = f.take(key(24, ".weight"), {ch[3], ch[3], 3, 3}, d, t);
  w.out_w = f.take(key(26, ".weight"), {3, ch[3], 3, 3}, d, t);
  w.out_b = f.take(key(26, ".bias"), {3}, d, t);
  return w;
}

at::Tensor decode_chunk(const DecoderWeights& w, DecoderState& s, const at::Tensor& latents, const at::Tensor& cond,
                        int64_t group) {
  const int64_t t = latents.size(2), h = latents.size(3), wd = latents.size(4);
  if (latents.dim() != 5 || cond.dim() != 5 || cond.size(1) != 3 || cond.size(2) > 4 * t || cond.size(2) <= 4 * (t - 1) ||
      cond.size(3) != 8 * h || cond.size(4) != 8 * wd)
    throw Error(Error::Kind::Internal, "decode_chunk: latents " + shape_string(latents.sizes().vec()) + " and cond " +
                                          shape_string(cond.sizes().vec()) + " do not match");
  // Condition: front-pad to 4t frames with its first frame, unshuffle 'b c (f 4) (h 8) (w 8) -> b (c 4 8 8) f h w'.
  auto c = cond;
  if (c.size(2) < 4 * t) c = at::cat({c.narrow(2, 0, 1).expand({-1, -1, 4 * t - c.size(2), -1, -1}), c}, 2);
  c = c.reshape({1, 3, t, 4, h, 8, wd, 8}).permute({0, 1, 3, 5, 7, 2, 4, 6}).reshape({1, 768, t, h, wd});
  // Frames first: [t, 784, h, w], condition channels then latent channels.
  auto x = at::cat({c, latents.to(c.scalar_type())}, 1).squeeze(0).transpose(0, 1);

  std::vector<at::Tensor> outs;
  group = std::max<int64_t>(1, group);
  for (int64_t i = 0; i < t; i += group) outs.push_back(run_network(w, s, x.narrow(0, i, std::min(group, t - i))));
  auto frames = at::cat(outs, 0);  // [4t, 3, 8h, 8w]
  if (!s.started) {
    frames = frames.narrow(0, kTrimFrames, frames.size(0) - kTrimFrames);
    s.started = true;
  }
  return (frames * 2 - 1).transpose(0, 1).unsqueeze(0);  // [1, 3, n, 8h, 8w]
}

}  // namespace flashvsr
