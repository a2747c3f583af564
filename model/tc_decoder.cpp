// SPDX-License-Identifier: LGPL-2.1-or-later
#include "tc_decoder.h"

#include "upsample_conv.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <optional>

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

std::optional<at::Tensor> bias_of(const at::Tensor& b) { return b.defined() ? std::optional<at::Tensor>(b) : std::nullopt; }

// relu(conv3x3(x, w) + b): one cuDNN convolution with a bias + ReLU epilogue when fused.
at::Tensor conv3x3_relu(bool fused, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
  if (fused) return at::cudnn_convolution_relu(x, w, bias_of(b), {1, 1}, {1, 1}, {1, 1}, 1);
  return at::relu(conv3x3(x, w, b));
}

// relu(conv3x3(x, w) + b + z): the residual joins the epilogue when fused.
at::Tensor conv3x3_add_relu(bool fused, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            const at::Tensor& z) {
  if (fused) return at::cudnn_convolution_add_relu(x, w, z, 1, bias_of(b), {1, 1}, {1, 1}, {1, 1}, 1);
  return at::relu(conv3x3(x, w, b) + z);
}

// x: [T, n, h, w]; past of frame t is x[t-1] (state.past for t = 0, zeros at the stream start).
at::Tensor mem_block(const DecoderWeights::MemBlock& m, bool fused, at::Tensor& past, const at::Tensor& x) {
  const int64_t T = x.size(0);
  // shifted[t] = x[t - 1], shifted[0] = past; undefined for one frame at the stream start (zeros).
  const at::Tensor shifted =
      T == 1 ? past : at::cat({past.defined() ? past : at::zeros_like(x.narrow(0, 0, 1)), x.narrow(0, 0, T - 1)}, 0);
  at::Tensor y;
  if (fused) {
    // conv(cat(x, shifted), w0) = conv(x, w0_x) + conv(shifted, w0_past): the second product joins the first
    // one's epilogue, and the 2n-channel concatenation is never written. Zeros add nothing.
    y = shifted.defined() ? conv3x3_add_relu(true, x, m.w0_x, m.b0, conv3x3(shifted, m.w0_past))
                          : conv3x3_relu(true, x, m.w0_x, m.b0);
  } else {
    y = conv3x3_relu(false, at::cat({x, shifted.defined() ? shifted : at::zeros_like(x)}, 1), m.w0, m.b0);
  }
  // The last frame's input is the next frame's past (read above, overwritten only now): written into the
  // stream's buffer once it exists, so that its address stays fixed from the second group on (as a CUDA
  // graph replays it); a new buffer only at the stream start or for a new geometry.
  const at::Tensor last = x.narrow(0, T - 1, 1);
  if (past.defined() && past.sizes() == last.sizes() && past.dtype() == last.dtype() && past.device() == last.device())
    past.copy_(last);
  else
    past = last.clone();
  y = conv3x3_relu(fused, y, m.w1, m.b1);
  return conv3x3_add_relu(fused, y, m.w2, m.b2, x);
}

// Whether cuDNN runs the fused convolutions here, checked against the composed operations on a small
// random case of this dtype; "" when it does, else the reason.
std::string fused_epilogue_problem(at::Device d, at::ScalarType t) {
  if (!d.is_cuda()) return "not on CUDA";
  if (t != at::kBFloat16 && t != at::kHalf) return std::string("cuDNN fuses the epilogue in bf16/fp16, not ") + c10::toString(t);
  try {
    const auto o = at::TensorOptions().device(d).dtype(t);
    const auto cl = at::MemoryFormat::ChannelsLast;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    auto rnd = [&](at::IntArrayRef s) { return at::randn(s, gen, at::kFloat).to(o).contiguous(cl); };
    auto x = rnd({2, 16, 12, 20}), w = rnd({16, 16, 3, 3}), z = rnd({2, 16, 12, 20});
    auto b = at::randn({16}, gen, at::kFloat).to(o);
    auto rel = [](const at::Tensor& a, const at::Tensor& ref) {
      return ((a.to(at::kFloat) - ref.to(at::kFloat)).norm() / ref.to(at::kFloat).norm()).item<double>();
    };
    const double err = std::max({rel(conv3x3_add_relu(true, x, w, b, z), conv3x3_add_relu(false, x, w, b, z)),
                                 rel(conv3x3_relu(true, x, w, b), conv3x3_relu(false, x, w, b)),
                                 rel(conv3x3_relu(true, x, w), conv3x3_relu(false, x, w))});
    if (!(err < 2e-2)) return "cuDNN's fused convolution differs from conv + add + relu (relative error " + std::to_string(err) + ")";
  } catch (const std::exception& e) {
    std::string what = e.what();
    return "cuDNN's fused convolution failed: " + what.substr(0, what.find('\n'));
  }
  return "";
}

// 1x1 conv n -> n*s, then each frame's channels split into s consecutive frames: [T, n, h, w] -> [T*s, n, h, w].
// Kept in the input's memory format (NHWC on CUDA, where the convolutions are fastest channels-last).
at::Tensor t_grow(const at::Tensor& x, const at::Tensor& w, int64_t stride) {
  auto y = at::conv2d(x, w);
  if (stride == 1) return y;
  const int64_t T = x.size(0), n = x.size(1), h = x.size(2), wd = x.size(3);
  if (y.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    // physical [T, h, w, s*n] -> [T, s, h, w, n] -> logical [T*s, n, h, w] channels-last
    return y.permute({0, 2, 3, 1}).reshape({T, h, wd, stride, n}).permute({0, 3, 1, 2, 4}).reshape({T * stride, h, wd, n})
        .permute({0, 3, 1, 2});
  }
  return y.reshape({T * stride, n, h, wd});
}

// Stages 0-1 and the MemBlocks of stage 2 on a group of frames: x [T, 784, h, w] -> [T', c2, 4h, 4w].
at::Tensor run_trunk(const DecoderWeights& w, DecoderState& s, at::Tensor x) {
  const bool fused = w.fused_epilogues;
  x = at::tanh(x / 3) * 3;
  x = conv3x3_relu(fused, x, w.in_w, w.in_b);
  x = conv3x3_relu(fused, x, w.in2_w);
  for (int stage = 0; stage < 3; ++stage) {
    for (int j = 0; j < 3; ++j) x = mem_block(w.mem[stage * 3 + j], fused, s.past[stage * 3 + j], x);
    if (stage == 2) break;
    // A 1x1 convolution commutes with nearest upsampling: TGrow runs at the lower resolution, and the
    // upsampling with the 3x3 convolution after it runs as their sub-pixel form (upsample_conv.h).
    x = t_grow(x, w.tgrow[stage], kTGrowStride[stage]);
    x = upsample2x_conv3x3(w.stage_up[stage], x);
  }
  return x;
}

// The last TGrow and everything after it hold no memory: frames are independent, so they go through one
// frame at a time at full resolution (bounded memory at 4K). x [T', c2, H/2, W/2] -> [2T', 3, H, W].
at::Tensor run_tail(const DecoderWeights& w, const at::Tensor& trunk) {
  auto grown = t_grow(trunk, w.tgrow[2], kTGrowStride[2]);
  std::vector<at::Tensor> frames;
  for (int64_t i = 0; i < grown.size(0); ++i) {
    auto x = grown.narrow(0, i, 1);
    x = upsample2x_conv3x3(w.stage_up[2], x,
                           w.fused_epilogues ? UpsampleConvEpilogue::CudnnFusedRelu : UpsampleConvEpilogue::Relu);
    x = conv3x3_relu(w.fused_epilogues, x, w.out1_w);
    frames.push_back(conv3x3(x, w.out_w, w.out_b));
  }
  return at::cat(frames, 0);
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
  if (d.is_cuda()) {
    // cuDNN's fastest bf16 convolutions are channels-last (NHWC).
    auto cl = [](at::Tensor& v) { v = v.contiguous(at::MemoryFormat::ChannelsLast); };
    cl(w.in_w), cl(w.in2_w), cl(w.out1_w), cl(w.out_w);
    for (auto& m : w.mem) cl(m.w0), cl(m.w1), cl(m.w2);
    for (auto& v : w.tgrow) cl(v);
    for (auto& v : w.stage_w) cl(v);
  }
  const std::string problem = fused_epilogue_problem(d, t);
  w.fused_epilogues = problem.empty();
  if (w.fused_epilogues)
    for (auto& m : w.mem) {
      const int64_t n = m.w0.size(0);
      m.w0_x = m.w0.narrow(1, 0, n).contiguous(at::MemoryFormat::ChannelsLast);
      m.w0_past = m.w0.narrow(1, n, n).contiguous(at::MemoryFormat::ChannelsLast);
    }
  for (int i = 0; i < 3; ++i) w.stage_up[i] = UpsampleConv::fold(w.stage_w[i]);
  w.epilogue_path = (w.fused_epilogues ? "cuDNN fused convolution + bias + ReLU (+ residual)"
                                       : "convolution, then add and ReLU (" + problem + ")") +
                    "; upsampling folded into the next convolution, phases joined by " +
                    w.stage_up[2].interleave_path(w.stage_w[2]);
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

  if (w.in_w.is_cuda()) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  std::vector<at::Tensor> outs;
  group = std::max<int64_t>(1, group);
  for (int64_t i = 0; i < t; i += group)
    outs.push_back(run_tail(w, run_trunk(w, s, x.narrow(0, i, std::min(group, t - i)))));
  auto frames = at::cat(outs, 0);  // [4t, 3, 8h, 8w]
  if (!s.started) {
    frames = frames.narrow(0, kTrimFrames, frames.size(0) - kTrimFrames);
    s.started = true;
  }
  return (frames * 2 - 1).transpose(0, 1).unsqueeze(0);  // [1, 3, n, 8h, 8w]
}

}  // namespace flashvsr
