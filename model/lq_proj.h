// SPDX-License-Identifier: LGPL-2.1-or-later
// Stage 1: the LQ projection (spec section 3). LQ frames, 16x16 pixel-unshuffled, go through two causal
// Conv3d (kernel (4,3,3), temporal stride 2) + RMS norm + SiLU, then a Linear per token; each 4-frame clip
// yields one latent frame of tokens that are added to the DiT's hidden state before block 0.
// Keys (LQ_proj_in.ckpt): conv1.weight/bias, norm1.gamma, conv2.weight/bias, norm2.gamma,
// linear_layers.N.weight/bias.
#pragma once

#include "weights.h"

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace flashvsr {

// What the weights cannot tell: how the temporal caches are fed (spec 3).
enum class LqVersion {
  V1_0,  // Buffer_LQ4x_Proj: cache = the current clip's own last 2 frames, written before each conv
  V1_1,  // Causal_LQ4x_Proj: cache = the previous clip's last 2 frames
};
LqVersion parse_lq_version(const std::string& text);  // "1.0" | "1.1"
const char* lq_version_name(LqVersion v);

struct LqProjConfig {
  int64_t unshuffle = 16;     // pixel-unshuffle factor
  int64_t in_channels = 768;  // 3 * 16 * 16
  int64_t hidden1 = 0;        // conv1 out (2048 released)
  int64_t hidden2 = 0;        // conv2 out (3072 released)
  int64_t out_dim = 0;        // token width = DiT dim (1536 released)
  int64_t num_linear = 0;     // linear layers = DiT blocks that receive tokens (1 released)

  static LqProjConfig detect(const WeightFile& file);
};

struct LqProjWeights {
  LqProjConfig config;
  // Conv3d weights [out, in, 4, 3, 3] are held as Conv2d weights [out, 4 * in, 3, 3] (t-major).
  at::Tensor conv1_w, conv1_b, norm1_gamma;  // [h1, 4 * 768, 3, 3], [h1], [h1]
  at::Tensor conv2_w, conv2_b, norm2_gamma;  // [h2, 4 * h1, 3, 3], [h2], [h2]
  std::vector<at::Tensor> linear_w, linear_b;  // [dim, h2], [dim]

  static LqProjWeights bind(WeightFile& file, const LqProjConfig& config, at::Device device, at::ScalarType dtype);
};

// The temporal caches of one stream.
struct LqProjState {
  at::Tensor conv1_cache;  // [1, 768, 2, h, w]: unshuffled input frames
  at::Tensor conv2_cache;  // [1, h1, 2, h, w]: conv1 activations
  int64_t clips = 0;       // clips seen; clip 0 only primes the caches
  void reset() { *this = LqProjState(); }
};

// clip: [1, 3, f, H, W] in [-1, 1] with H, W multiples of 16; f = 1 for a stream's first clip, 4 after.
// Returns, per linear layer, tokens [1, (H/16) * (W/16), dim] in (h, w) order; empty for the first clip.
std::vector<at::Tensor> lq_project(const LqProjWeights& weights, LqVersion version, LqProjState& state,
                                   const at::Tensor& clip_NCFHW);

}  // namespace flashvsr
