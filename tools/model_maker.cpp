// SPDX-License-Identifier: LGPL-2.1-or-later
#include "model_maker.h"

#include "io/file_util.h"
#include "writers/safetensors_writer.h"
#include "writers/torch_archive_writer.h"

#include <cmath>

namespace flashvsr {

ModelSpec ModelSpec::tiny() {
  ModelSpec s;
  s.dim = 256;
  s.ffn_dim = 512;
  s.layers = 2;
  s.text_dim = 64;
  s.context_len = 16;
  s.lq_hidden1 = 32;
  s.lq_hidden2 = 48;
  s.decoder_channels = {32, 32, 16, 16};
  s.vae_dim = 8;
  return s;
}

ModelSpec ModelSpec::full() {
  ModelSpec s;
  s.dim = 1536;
  s.ffn_dim = 8960;
  s.layers = 30;
  s.text_dim = 4096;
  s.context_len = 512;
  s.lq_hidden1 = 2048;
  s.lq_hidden2 = 3072;
  s.decoder_channels = {512, 256, 128, 128};
  s.vae_dim = 96;
  return s;
}

ModelSpec ModelSpec::preset(const std::string& name) {
  if (name == "tiny") return tiny();
  if (name == "full") return full();
  throw Error(Error::Kind::BadSettings, "model preset '" + name + "': expected tiny or full");
}

ModelSpec ModelSpec::with_variant(Variant v) const {
  ModelSpec s = *this;
  s.variant = v;
  return s;
}

namespace {

class Maker {
 public:
  Maker(uint64_t seed, at::ScalarType dtype) : gen_(at::make_generator<at::CPUGeneratorImpl>(seed)), dtype_(dtype) {}

  at::Tensor normal(std::vector<int64_t> shape, double stddev, double mean = 0.0) {
    return (at::randn(shape, gen_, at::TensorOptions().dtype(at::kFloat)) * stddev + mean).to(dtype_);
  }
  // A weight of fan-in `fan_in` (gain 1 or sqrt(2) for ReLU layers).
  at::Tensor weight(std::vector<int64_t> shape, int64_t fan_in, double gain = 1.0) {
    return normal(std::move(shape), gain / std::sqrt(static_cast<double>(fan_in)));
  }
  at::Tensor bias(int64_t n) { return normal({n}, 0.02); }

 private:
  at::Generator gen_;
  at::ScalarType dtype_;
};

// The Wan2.1 VAE decoder's tensors (spec "Full variant": conv2, decoder.*) at base width d, and stand-ins
// for the encoder half.
void add_vae_decoder(Maker& mk, int64_t d, TensorMap& c) {
  auto conv = [&](const std::string& p, std::vector<int64_t> shape, double gain = 1.0) {
    int64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    const int64_t out = shape[0];
    c[p + ".weight"] = mk.weight(std::move(shape), fan_in, gain);
    c[p + ".bias"] = mk.bias(out);
  };
  auto gamma = [&](const std::string& p, std::vector<int64_t> shape) { c[p] = mk.normal(std::move(shape), 0.05, 1.0); };
  auto res = [&](const std::string& p, int64_t i, int64_t o) {
    gamma(p + ".residual.0.gamma", {i, 1, 1, 1});
    conv(p + ".residual.2", {o, i, 3, 3, 3});
    gamma(p + ".residual.3.gamma", {o, 1, 1, 1});
    conv(p + ".residual.6", {o, o, 3, 3, 3}, 0.5);  // residual branch kept small
    if (i != o) conv(p + ".shortcut", {o, i, 1, 1, 1});
  };
  auto up = [&](const std::string& p, int64_t ch, bool temporal) {
    if (temporal) conv(p + ".time_conv", {2 * ch, ch, 3, 1, 1});
    conv(p + ".resample.1", {ch / 2, ch, 3, 3});
  };
  // The encoder half's stand-ins (never read by the engine).
  conv("encoder.conv1", {d, 3, 3, 3, 3});
  conv("conv1", {32, 32, 1, 1, 1});

  conv("conv2", {16, 16, 1, 1, 1});
  conv("decoder.conv1", {4 * d, 16, 3, 3, 3});
  res("decoder.middle.0", 4 * d, 4 * d);
  gamma("decoder.middle.1.norm.gamma", {4 * d, 1, 1});
  conv("decoder.middle.1.to_qkv", {12 * d, 4 * d, 1, 1});
  conv("decoder.middle.1.proj", {4 * d, 4 * d, 1, 1}, 0.5);
  res("decoder.middle.2", 4 * d, 4 * d);
  const std::string u = "decoder.upsamples.";
  for (int i : {0, 1, 2}) res(u + std::to_string(i), 4 * d, 4 * d);
  up(u + "3", 4 * d, true);
  res(u + "4", 2 * d, 4 * d);
  for (int i : {5, 6}) res(u + std::to_string(i), 4 * d, 4 * d);
  up(u + "7", 4 * d, true);
  for (int i : {8, 9, 10}) res(u + std::to_string(i), 2 * d, 2 * d);
  up(u + "11", 2 * d, false);
  for (int i : {12, 13, 14}) res(u + std::to_string(i), d, d);
  gamma("decoder.head.0.gamma", {d, 1, 1, 1});
  conv("decoder.head.2", {3, d, 3, 3, 3});
}

}  // namespace

ModelTensors make_random_model(const ModelSpec& s, uint64_t seed, at::ScalarType dtype) {
  if (s.dim <= 0 || s.dim % 128 != 0) throw Error(Error::Kind::BadSettings, "model spec: dim must be a positive multiple of 128");
  Maker mk(seed, dtype);
  ModelTensors t;
  const int64_t D = s.dim;
  auto linear = [&](TensorMap& m, const std::string& p, int64_t out, int64_t in) {
    m[p + ".weight"] = mk.weight({out, in}, in);
    m[p + ".bias"] = mk.bias(out);
  };

  // DiT
  auto& d = t.dit;
  d["patch_embedding.weight"] = mk.weight({D, 16, 1, 2, 2}, 64);
  d["patch_embedding.bias"] = mk.bias(D);
  linear(d, "text_embedding.0", D, s.text_dim);
  linear(d, "text_embedding.2", D, D);
  linear(d, "time_embedding.0", D, 256);
  linear(d, "time_embedding.2", D, D);
  linear(d, "time_projection.1", 6 * D, D);
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string p = "blocks." + std::to_string(i);
    for (const char* a : {"self_attn", "cross_attn"}) {
      for (const char* proj : {"q", "k", "v", "o"}) linear(d, p + "." + a + "." + proj, D, D);
      d[p + "." + a + ".norm_q.weight"] = mk.normal({D}, 0.05, 1.0);
      d[p + "." + a + ".norm_k.weight"] = mk.normal({D}, 0.05, 1.0);
    }
    d[p + ".norm3.weight"] = mk.normal({D}, 0.05, 1.0);
    d[p + ".norm3.bias"] = mk.bias(D);
    linear(d, p + ".ffn.0", s.ffn_dim, D);
    linear(d, p + ".ffn.2", D, s.ffn_dim);
    d[p + ".modulation"] = mk.normal({1, 6, D}, 1.0 / std::sqrt(static_cast<double>(D)));
  }
  linear(d, "head.head", 64, D);
  d["head.modulation"] = mk.normal({1, 2, D}, 1.0 / std::sqrt(static_cast<double>(D)));

  // LQ projection
  auto& l = t.lq_proj;
  l["conv1.weight"] = mk.weight({s.lq_hidden1, 768, 4, 3, 3}, 768 * 36);
  l["conv1.bias"] = mk.bias(s.lq_hidden1);
  l["norm1.gamma"] = mk.normal({s.lq_hidden1, 1, 1, 1}, 0.05, 1.0);
  l["conv2.weight"] = mk.weight({s.lq_hidden2, s.lq_hidden1, 4, 3, 3}, s.lq_hidden1 * 36);
  l["conv2.bias"] = mk.bias(s.lq_hidden2);
  l["norm2.gamma"] = mk.normal({s.lq_hidden2, 1, 1, 1}, 0.05, 1.0);
  for (int64_t i = 0; i < s.lq_linear; ++i) linear(l, "linear_layers." + std::to_string(i), D, s.lq_hidden2);

  t.variant = s.variant;
  if (s.variant == Variant::Full) {
    add_vae_decoder(mk, s.vae_dim, t.decoder);
    t.prompt = mk.normal({1, s.context_len, s.text_dim}, 1.0);
    return t;
  }

  // Decoder
  auto& c = t.decoder;
  const auto& ch = s.decoder_channels;
  const double relu_gain = 1.4142135623730951;  // sqrt(2)
  auto conv = [&](int index, int64_t out, int64_t in, bool with_bias, double gain) {
    const std::string p = "decoder." + std::to_string(index);
    c[p + ".weight"] = mk.weight({out, in, 3, 3}, in * 9, gain);
    if (with_bias) c[p + ".bias"] = mk.bias(out);
  };
  conv(1, ch[0], 784, true, relu_gain);
  conv(3, ch[0], ch[0], false, relu_gain);
  const int mem_index[9] = {5, 6, 7, 11, 12, 13, 17, 18, 19};
  for (int i = 0; i < 9; ++i) {
    const int64_t n = ch[i / 3];
    const std::string p = "decoder." + std::to_string(mem_index[i]) + ".conv.";
    c[p + "0.weight"] = mk.weight({n, 2 * n, 3, 3}, 2 * n * 9, relu_gain);
    c[p + "0.bias"] = mk.bias(n);
    c[p + "2.weight"] = mk.weight({n, n, 3, 3}, n * 9, relu_gain);
    c[p + "2.bias"] = mk.bias(n);
    c[p + "4.weight"] = mk.weight({n, n, 3, 3}, n * 9, 0.5);  // residual branch kept small
    c[p + "4.bias"] = mk.bias(n);
  }
  const int tgrow_index[3] = {9, 15, 21};
  const int64_t tgrow_stride[3] = {1, 2, 2};
  const int stage_index[3] = {10, 16, 22};
  for (int i = 0; i < 3; ++i) {
    c["decoder." + std::to_string(tgrow_index[i]) + ".conv.weight"] =
        mk.weight({ch[i] * tgrow_stride[i], ch[i], 1, 1}, ch[i]);
    conv(stage_index[i], ch[i + 1], ch[i], false, 1.0);
  }
  conv(24, ch[3], ch[3], false, relu_gain);
  conv(26, 3, ch[3], true, 1.0);

  t.prompt = mk.normal({1, s.context_len, s.text_dim}, 1.0);
  return t;
}

void write_model_dir(const std::string& dir, const ModelTensors& t) {
  std::string error;
  if (!io::make_directories(dir, &error))
    throw Error(Error::Kind::NotFound, "cannot create model directory '" + dir + "': " + error);
  io::write_safetensors(io::join_path(dir, ReleaseLayout::kDit), t.dit);
  io::write_torch_state_dict(io::join_path(dir, ReleaseLayout::kLqProj), t.lq_proj, /*as_state_dict=*/false);
  const char* decoder_file = t.variant == Variant::Full ? ReleaseLayout::kVaeDecoder : ReleaseLayout::kDecoder;
  io::write_torch_state_dict(io::join_path(dir, decoder_file), t.decoder, /*as_state_dict=*/true);
  io::write_torch_tensor(io::join_path(dir, ReleaseLayout::kPrompt), t.prompt);
}

}  // namespace flashvsr
