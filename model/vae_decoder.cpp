// SPDX-License-Identifier: LGPL-2.1-or-later
#include "vae_decoder.h"

#include "io/file_util.h"
#include "io/safetensors.h"
#include "io/torch_archive.h"

#include <array>
#include <cmath>
#include <utility>

namespace flashvsr {

namespace {

using Conv = VaeDecoderWeights::Conv;

constexpr int64_t kZDim = 16;
constexpr int64_t kCacheFrames = 2;  // k_t - 1 of every temporal convolution (k_t = 3)
constexpr int64_t kTemporalConvs = 32;  // decoder.conv1, 2 per Res (15 of them), 2 time_convs, head.2
// WanVideoVAE's de-normalisation constants (not in the file).
constexpr std::array<float, kZDim> kMean{-0.7571f, -0.7089f, -0.9113f, 0.1075f, -0.1745f, 0.9653f, -0.1517f, 1.5508f,
                                         0.4134f,  -0.0715f, 0.5517f,  -0.3632f, -0.1922f, -0.9497f, 0.2503f, -0.2921f};
constexpr std::array<float, kZDim> kStd{2.8184f, 1.4541f, 2.3275f, 2.6558f, 1.2196f, 1.7708f, 2.6052f, 2.0743f,
                                        3.2687f, 2.1526f, 2.8652f, 1.5579f, 1.6382f, 1.1253f, 2.8251f, 1.9160f};

bool is_encoder_key(const std::string& k) { return k.rfind("encoder.", 0) == 0 || k.rfind("conv1.", 0) == 0; }

std::string dk(const std::string& rest) { return "decoder." + rest; }
std::string up_key(int index, const std::string& rest) { return dk("upsamples." + std::to_string(index) + rest); }

at::MemoryFormat format_of(const VaeDecoderWeights& w) {
  return w.channels_last ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::Contiguous;
}

// [1, c, T, h, w] -> [T, c, h, w] (frames as the batch of 2D layers): a view, channels-last-2d when x is
// channels-last-3d.
at::Tensor frames_of(const at::Tensor& x) { return x.squeeze(0).transpose(0, 1); }
// [T, c, h, w] -> [1, c, T, h, w] in the decoder's layout.
at::Tensor sequence_of(const at::Tensor& f, at::MemoryFormat fmt) { return f.transpose(0, 1).unsqueeze(0).contiguous(fmt); }

// Every temporal convolution of one decoder pass takes the next cache slot, in execution order.
struct Pass {
  const VaeDecoderWeights& w;
  VaeDecoderState& s;
  bool first;  // this pass holds latent 0 of the stream (its first frame at every level)
  size_t next = 0;
  at::Tensor& cache() { return s.caches.at(next++); }
};

at::Tensor res_block(Pass& p, const VaeDecoderWeights::Res& r, const at::Tensor& x) {
  // shortcut(x) + r6(silu(r3(r2(silu(r0(x))))))   x: [1, i, T, h, w] -> [1, o, T, h, w]
  const at::Tensor h = r.shortcut.weight.defined() ? at::conv3d(x, r.shortcut.weight, r.shortcut.bias) : x;
  at::Tensor y = vae::causal_conv3d_of_norm_silu(r.conv2, p.cache(), x, r.gamma0);
  y = vae::causal_conv3d_of_norm_silu(r.conv6, p.cache(), std::move(y), r.gamma3);
  return y.add_(h);
}

// Per frame: x + proj(sdpa(q, k, v)), qkv = to_qkv(rms(x)), one head over the h*w tokens, scale 1/sqrt(c).
at::Tensor attn_block(const VaeDecoderWeights& w, const VaeDecoderWeights::Attn& a, const at::Tensor& x) {
  const int64_t c = x.size(1), T = x.size(2), h = x.size(3), wd = x.size(4);
  const at::Tensor f = frames_of(x);                                                    // [T, c, h, w]
  const at::Tensor qkv = at::conv2d(vae::rms_norm(f, a.gamma), a.to_qkv.weight, a.to_qkv.bias);  // [T, 3c, h, w]
  // Tokens in (h, w) order, channels last: [T, 1, h*w, 3c]; q, k, v = channels [0,c), [c,2c), [2c,3c).
  const at::Tensor tokens = qkv.reshape({T, 1, 3 * c, h * wd}).transpose(2, 3).contiguous();
  const at::Tensor o = at::scaled_dot_product_attention(tokens.narrow(3, 0, c), tokens.narrow(3, c, c),
                                                        tokens.narrow(3, 2 * c, c));  // [T, 1, h*w, c]
  at::Tensor y = o.squeeze(1).transpose(1, 2).reshape({T, c, h, wd});
  if (w.channels_last) y = y.contiguous(at::MemoryFormat::ChannelsLast);
  y = at::conv2d(y, a.proj.weight, a.proj.bias);
  return sequence_of(y, format_of(w)).add_(x);
}

// time_conv's [1, 2c, T, h, w] -> [1, c, 2T, h, w]: input frame j becomes frames 2j (channels [0,c)) and 2j+1
// ([c,2c)). One copy, into the decoder's layout.
at::Tensor interleave_halves(const at::Tensor& y, bool channels_last) {
  const int64_t c = y.size(1) / 2, T = y.size(2), h = y.size(3), wd = y.size(4);
  const at::Tensor halves = y.unflatten(1, {2, c});  // [1, 2, c, T, h, w]
  if (channels_last)  // physical [1, T, 2, h, w, c] = NDHWC of [1, c, 2T, h, w]
    return halves.permute({0, 3, 1, 4, 5, 2}).contiguous().view({1, 2 * T, h, wd, c}).permute({0, 4, 1, 2, 3});
  return halves.permute({0, 2, 3, 1, 4, 5}).contiguous().view({1, c, 2 * T, h, wd});
}

// Up3d(c) / Up2d(c): [1, c, T, h, w] -> [1, c/2, T', 2h, 2w]. Up3d: frame 0 of the stream passes as it is,
// every later frame goes through time_conv (causal, its own cache, frame 0 never among its inputs) and
// becomes two frames, so T' = 2T (- 1 in the first pass); Up2d: T' = T.
at::Tensor up_block(Pass& p, const VaeDecoderWeights::Up& u, const at::Tensor& x) {
  at::Tensor y = x;
  if (u.time_conv.weight.defined()) {
    at::Tensor& cache = p.cache();
    const int64_t skip = p.first ? 1 : 0;
    const int64_t T = x.size(2);
    if (T > skip) {
      at::Tensor grown =
          interleave_halves(vae::causal_conv3d(u.time_conv, cache, x.narrow(2, skip, T - skip)), p.w.channels_last);
      y = skip ? at::cat({x.narrow(2, 0, 1), grown}, 2) : grown;
    } else if (!cache.defined()) {
      // Only latent 0: nothing reaches time_conv, whose history stays zeros (made now: every cache has its
      // fixed shape after the first call).
      cache = at::zeros({1, x.size(1), kCacheFrames, x.size(3), x.size(4)}, x.options()).contiguous(format_of(p.w));
    }
  }
  // Per frame: nearest x2 ('nearest-exact' at an integer scale = pixel doubling = 'nearest'), conv 3x3, pad 1,
  // as their sub-pixel form (upsample_conv.h).
  at::Tensor f = frames_of(y);
  if (!p.w.channels_last) f = f.contiguous();
  f = upsample2x_conv3x3(u.resample_up, f);
  return sequence_of(f, format_of(p.w));
}

// The decoder on conv2's output: x [1, z, T, h, w] -> [1, 3, 4T (- 3 in the first pass), 8h, 8w], unclamped.
at::Tensor decoder_pass(Pass& p, const at::Tensor& x_in) {
  const VaeDecoderWeights& w = p.w;
  at::Tensor x = vae::causal_conv3d(w.conv1, p.cache(), x_in);
  x = res_block(p, w.middle0, x);
  x = attn_block(w, w.middle1, x);
  x = res_block(p, w.middle2, x);
  for (size_t stage = 0; stage < 4; ++stage) {
    for (size_t j = 0; j < 3; ++j) x = res_block(p, w.res[stage * 3 + j], x);
    if (stage < 3) x = up_block(p, w.up[stage], x);
  }
  x = vae::causal_conv3d_of_norm_silu(w.head_conv, p.cache(), std::move(x), w.head_gamma);
  if (p.next != static_cast<size_t>(kTemporalConvs))
    throw Error(Error::Kind::Internal, "vae_decode_chunk: " + std::to_string(p.next) + " temporal convolutions ran, expected " +
                                           std::to_string(kTemporalConvs));
  return x;
}

Conv take_conv(WeightFile& f, const std::string& prefix, const std::vector<int64_t>& shape, at::Device d,
               at::ScalarType t) {
  return {f.take(prefix + ".weight", shape, d, t), f.take(prefix + ".bias", {shape[0]}, d, t)};
}

VaeDecoderWeights::Res take_res(WeightFile& f, const std::string& prefix, int64_t i, int64_t o, at::Device d,
                                at::ScalarType t) {
  VaeDecoderWeights::Res r;
  r.gamma0 = f.take(prefix + ".residual.0.gamma", {i, 1, 1, 1}, d, t);
  r.conv2 = take_conv(f, prefix + ".residual.2", {o, i, 3, 3, 3}, d, t);
  r.gamma3 = f.take(prefix + ".residual.3.gamma", {o, 1, 1, 1}, d, t);
  r.conv6 = take_conv(f, prefix + ".residual.6", {o, o, 3, 3, 3}, d, t);
  if (i != o) r.shortcut = take_conv(f, prefix + ".shortcut", {o, i, 1, 1, 1}, d, t);
  return r;
}

}  // namespace

namespace vae {

namespace {

// [1, c, 2 + T, h, w] in x's layout with the cache (zeros while undefined) in frames 0, 1; frames 2.. are
// the caller's to fill with x's T frames (or a function of them).
at::Tensor sequence_after_cache(const at::Tensor& cache, const at::Tensor& x) {
  at::Tensor seq = at::empty({x.size(0), x.size(1), kCacheFrames + x.size(2), x.size(3), x.size(4)}, x.options(),
                             x.suggest_memory_format());
  if (cache.defined())
    seq.narrow(2, 0, kCacheFrames).copy_(cache);
  else
    seq.narrow(2, 0, kCacheFrames).zero_();
  return seq;
}

// The causal convolution of a filled sequence: `cache` becomes its last 2 frames (own memory, so as not
// to hold the whole sequence: written into the stream's cache once it exists, so no chunk allocates one),
// the output has frames 2.. of it: [1, i, 2 + T, h, w] -> [1, o, T, h, w].
at::Tensor convolve_sequence(const Conv& conv, at::Tensor& cache, const at::Tensor& seq) {
  const int64_t kt = conv.weight.size(2), kh = conv.weight.size(3), kw = conv.weight.size(4);
  if (kt != kCacheFrames + 1)
    throw Error(Error::Kind::Internal, "causal_conv3d: temporal kernel " + std::to_string(kt) + ", expected 3");
  const at::Tensor last = seq.narrow(2, seq.size(2) - kCacheFrames, kCacheFrames);
  const auto format = seq.suggest_memory_format();
  if (cache.defined() && cache.sizes() == last.sizes() && cache.is_contiguous(format))
    cache.copy_(last);  // seq holds its own copy of the old cache: overwriting it now is safe
  else
    cache = last.clone(format);
  return at::conv3d(seq, conv.weight, conv.bias, {1, 1, 1}, {0, kh / 2, kw / 2});
}

// The norm over C, max(||x||_2, 1e-12) [N, 1, ...], and gamma * sqrt(C): x / norm * scale is rms_norm.
std::pair<at::Tensor, at::Tensor> rms_factors(const at::Tensor& x, const at::Tensor& gamma) {
  return {at::linalg_vector_norm(x, 2, {1}, /*keepdim=*/true).clamp_min_(1e-12),
          gamma * std::sqrt(static_cast<double>(x.size(1)))};
}

}  // namespace

at::Tensor causal_conv3d(const Conv& conv, at::Tensor& cache, at::Tensor x) {
  const at::Tensor seq = sequence_after_cache(cache, x);
  seq.narrow(2, kCacheFrames, x.size(2)).copy_(x);
  x.reset();  // a caller that moved its input in frees it before the output is allocated (peak memory)
  return convolve_sequence(conv, cache, seq);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& gamma) {
  const auto [norm, scale] = rms_factors(x, gamma);
  return at::div(x, norm).mul_(scale);
}

at::Tensor causal_conv3d_of_norm_silu(const Conv& conv, at::Tensor& cache, at::Tensor x, const at::Tensor& gamma) {
  // Frames 2.. = silu(x / norm * scale): rms_norm's operations then silu_, written in place.
  const at::Tensor seq = sequence_after_cache(cache, x);
  at::Tensor frames = seq.narrow(2, kCacheFrames, x.size(2));
  const auto [norm, scale] = rms_factors(x, gamma);
  at::div_out(frames, x, norm);
  frames.mul_(scale);
  at::silu_(frames);
  x.reset();  // as causal_conv3d's
  return convolve_sequence(conv, cache, seq);
}

}  // namespace vae

WeightFile open_vae_decoder_file(const std::string& path, const LogFn& log) {
  if (!io::is_regular_file(path)) throw Error(Error::Kind::NotFound, path + ": no such file");
  TensorMap tensors;
  io::SkippedEntries skipped;
  const bool is_safetensors = io::ends_with(path, ".safetensors");
  if (is_safetensors) {
    // The reader's tensors view a copy-on-write mapping (io/safetensors.h): dropping the encoder's entries
    // here, before any conversion, means their pages are never read.
    tensors = io::read_safetensors(path);
    for (auto it = tensors.begin(); it != tensors.end();) {
      if (!is_encoder_key(it->first)) {
        ++it;
        continue;
      }
      ++skipped.count;
      skipped.values += it->second.numel();
      it = tensors.erase(it);
    }
  } else {
    // The archive reader copies every tensor it returns out of the zip: the filter keeps the encoder's
    // storages from ever being read or allocated (io/torch_archive.h).
    tensors = io::read_torch_state_dict(path, [](const std::string& k) { return !is_encoder_key(k); }, &skipped);
  }
  if (log)
    log(LogLevel::Debug, path + ": skipped " + std::to_string(skipped.count) + " encoder tensor(s) (encoder.*, conv1.*: " +
                             std::to_string(skipped.values) + " values, not read); kept " +
                             std::to_string(tensors.size()) + " (conv2.*, decoder.*)");
  if (!tensors.count(dk("head.0.gamma"))) {
    std::string found = tensors.empty() ? "no other tensor" : std::to_string(tensors.size()) + " other tensor(s), e.g. '" +
                                                                  tensors.begin()->first + "'";
    if (skipped.count) found = std::to_string(skipped.count) + " encoder tensor(s) (encoder.*, conv1.*) and " + found;
    throw Error(Error::Kind::BadFile, path + ": missing tensor 'decoder.head.0.gamma': expected the Wan2.1 VAE with its "
                                             "decoder (keys conv2.*, decoder.*; Wan2.1_VAE.pth), found " + found);
  }
  return WeightFile(path, std::move(tensors));
}

VaeDecoderConfig VaeDecoderConfig::detect(const WeightFile& f) {
  VaeDecoderConfig c;
  const auto g = f.shape(dk("head.0.gamma"));
  if (g.size() != 4 || g[0] < 1 || g[1] != 1 || g[2] != 1 || g[3] != 1)
    throw Error(Error::Kind::BadFile, f.path() + ": tensor 'decoder.head.0.gamma' has shape " + shape_string(g) +
                                          ", expected [d, 1, 1, 1]");
  c.dim = g[0];
  const auto z = f.shape("conv2.weight");
  if (z.size() != 5)
    throw Error(Error::Kind::BadFile, f.path() + ": tensor 'conv2.weight' has shape " + shape_string(z) +
                                          ", expected [16, 16, 1, 1, 1]");
  c.z_dim = z[0];
  require_dim(f, "conv2.weight output channels (the Wan2.1 VAE's latent channels, whose mean and std are built in)",
              kZDim, c.z_dim);
  return c;
}

VaeDecoderWeights VaeDecoderWeights::bind(WeightFile& f, const VaeDecoderConfig& c, at::Device d, at::ScalarType t) {
  if (c.z_dim != kZDim || c.dim < 1)
    throw Error(Error::Kind::Internal, "VaeDecoderWeights::bind: z_dim " + std::to_string(c.z_dim) + ", d " +
                                           std::to_string(c.dim));
  VaeDecoderWeights w;
  w.config = c;
  const int64_t z = c.z_dim, d1 = c.dim, d2 = 2 * c.dim, d4 = 4 * c.dim;
  // 1/std first, in float32 (WanVideoVAE's scale = [mean, 1/std]), then cast like the release does.
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor std_ = at::tensor(std::vector<float>(kStd.begin(), kStd.end()), f32);
  w.mean = at::tensor(std::vector<float>(kMean.begin(), kMean.end()), f32).view({1, z, 1, 1, 1}).to(d, t);
  w.inv_std = at::reciprocal(std_).view({1, z, 1, 1, 1}).to(d, t);

  w.conv2 = take_conv(f, "conv2", {z, z, 1, 1, 1}, d, t);
  w.conv1 = take_conv(f, dk("conv1"), {d4, z, 3, 3, 3}, d, t);
  w.middle0 = take_res(f, dk("middle.0"), d4, d4, d, t);
  w.middle1.gamma = f.take(dk("middle.1.norm.gamma"), {d4, 1, 1}, d, t);
  w.middle1.to_qkv = take_conv(f, dk("middle.1.to_qkv"), {3 * d4, d4, 1, 1}, d, t);
  w.middle1.proj = take_conv(f, dk("middle.1.proj"), {d4, d4, 1, 1}, d, t);
  w.middle2 = take_res(f, dk("middle.2"), d4, d4, d, t);
  // upsamples: (index, in, out) of the Res blocks, then the Up blocks (index, c, temporal).
  const std::array<std::array<int64_t, 3>, 12> res{{{0, d4, d4}, {1, d4, d4}, {2, d4, d4}, {4, d2, d4}, {5, d4, d4},
                                                     {6, d4, d4}, {8, d2, d2}, {9, d2, d2}, {10, d2, d2}, {12, d1, d1},
                                                     {13, d1, d1}, {14, d1, d1}}};
  for (const auto& [index, i, o] : res) w.res.push_back(take_res(f, up_key(int(index), ""), i, o, d, t));
  const std::array<std::array<int64_t, 3>, 3> ups{{{3, d4, 1}, {7, d4, 1}, {11, d2, 0}}};
  for (const auto& [index, ch, temporal] : ups) {
    Up u;
    if (temporal) u.time_conv = take_conv(f, up_key(int(index), ".time_conv"), {2 * ch, ch, 3, 1, 1}, d, t);
    u.resample = take_conv(f, up_key(int(index), ".resample.1"), {ch / 2, ch, 3, 3}, d, t);
    w.up.push_back(u);
  }
  w.head_gamma = f.take(dk("head.0.gamma"), {d1, 1, 1, 1}, d, t);
  w.head_conv = take_conv(f, dk("head.2"), {3, d1, 3, 3, 3}, d, t);

  w.channels_last = d.is_cuda() && (t == at::kBFloat16 || t == at::kHalf);
  if (w.channels_last) {
    auto cl = [](Conv& v) {
      v.weight = v.weight.contiguous(v.weight.dim() == 5 ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::ChannelsLast);
    };
    auto cl_res = [&](Res& r) {
      cl(r.conv2), cl(r.conv6);
      if (r.shortcut.weight.defined()) cl(r.shortcut);
    };
    cl(w.conv2), cl(w.conv1), cl(w.middle1.to_qkv), cl(w.middle1.proj), cl(w.head_conv);
    cl_res(w.middle0), cl_res(w.middle2);
    for (auto& r : w.res) cl_res(r);
    for (auto& u : w.up) {
      if (u.time_conv.weight.defined()) cl(u.time_conv);
      cl(u.resample);
    }
    w.layout = "NDHWC (channels-last-3d) activations and weights";
  } else {
    w.layout = std::string("NCDHW activations (") + (d.is_cuda() ? "channels-last only in bf16/fp16" : "CPU") + ")";
  }
  for (auto& u : w.up) u.resample_up = UpsampleConv::fold(u.resample.weight, u.resample.bias);
  w.layout += "; upsampling folded into the resample convolutions, phases joined by " +
              w.up.back().resample_up.interleave_path(w.up.back().resample.weight);
  return w;
}

at::Tensor vae_decode_chunk(const VaeDecoderWeights& w, VaeDecoderState& s, const at::Tensor& latents, int64_t group) {
  if (!latents.defined() || latents.dim() != 5 || latents.size(0) != 1 || latents.size(1) != w.config.z_dim ||
      latents.size(2) < 1 || latents.size(3) < 1 || latents.size(4) < 1 || !at::isFloatingType(latents.scalar_type()))
    throw Error(Error::Kind::BadInput, "vae_decode_chunk: latents " +
                                           (latents.defined() ? shape_string(latents.sizes().vec()) : std::string("undefined")) +
                                           ", expected floating-point [1, " + std::to_string(w.config.z_dim) +
                                           ", t >= 1, h, w]");
  const int64_t t = latents.size(2), h = latents.size(3), wd = latents.size(4);
  if (s.caches.empty()) s.caches.resize(kTemporalConvs);
  if (s.caches.size() != static_cast<size_t>(kTemporalConvs))
    throw Error(Error::Kind::Internal, "vae_decode_chunk: the state holds " + std::to_string(s.caches.size()) + " caches");
  const at::Tensor& first_cache = s.caches.front();  // decoder.conv1's: [1, z, 2, h, w]
  if (first_cache.defined() && (first_cache.size(3) != h || first_cache.size(4) != wd))
    throw Error(Error::Kind::BadInput, "vae_decode_chunk: latents of " + std::to_string(h) + "x" + std::to_string(wd) +
                                           " in a stream of " + std::to_string(first_cache.size(3)) + "x" +
                                           std::to_string(first_cache.size(4)) + " (reset the state for a new size)");
  const auto fmt = format_of(w);
  // z / (1/std) + mean per channel, then conv2 (1x1x1): both per frame, over the whole call.
  at::Tensor z = latents.to(w.mean.device(), w.mean.scalar_type()).contiguous(fmt);
  z = at::conv3d(z.div(w.inv_std).add_(w.mean), w.conv2.weight, w.conv2.bias);
  const int64_t step = group > 0 ? group : t;
  std::vector<at::Tensor> outs;
  for (int64_t i = 0; i < t; i += step) {
    Pass p{w, s, !s.started};
    outs.push_back(decoder_pass(p, z.narrow(2, i, std::min(step, t - i))));
    s.started = true;
  }
  at::Tensor frames = outs.size() == 1 ? outs.front() : at::cat(outs, 2);
  return frames.clamp_(-1, 1).contiguous();
}

}  // namespace flashvsr
