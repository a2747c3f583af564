// SPDX-License-Identifier: LGPL-2.1-or-later
// Stage 3: the tiny conditional decoder (TAEHV-style, spec section 7). Input per latent frame: the
// 4x8x8-unshuffled LQ condition (768 channels) and the latent (16); output 4 RGB frames at 8x the latent
// resolution. MemBlocks see their own input of the previous frame ("past"), carried across chunks.
// Keys (TCDecoder.ckpt): decoder.1.weight/bias, decoder.3.weight, decoder.{5,6,7,11,12,13,17,18,19}.conv.{0,2,4}
// .weight/bias, decoder.{9,15,21}.conv.weight (TGrow), decoder.{10,16,22,24}.weight, decoder.26.weight/bias.
#pragma once

#include "upsample_conv.h"
#include "weights.h"

#include <ATen/ATen.h>

#include <array>
#include <string>
#include <vector>

namespace flashvsr {

struct DecoderConfig {
  int64_t latent_channels = 16;
  int64_t cond_channels = 768;        // 3 x 4 x 8 x 8
  std::array<int64_t, 4> channels{};  // (512, 256, 128, 128) released

  static DecoderConfig detect(const WeightFile& file);
};

struct DecoderWeights {
  struct MemBlock {
    at::Tensor w0, b0, w1, b1, w2, b2;  // 3x3 convs: 2n -> n, n -> n, n -> n
    at::Tensor w0_x, w0_past;           // w0's halves over cat(x, past) (n -> n each): only with fused epilogues
  };
  DecoderConfig config;
  at::Tensor in_w, in_b;             // decoder.1: 784 -> c0
  at::Tensor in2_w;                  // decoder.3: c0 -> c0, no bias
  std::array<MemBlock, 9> mem;       // decoder.{5,6,7}, {11,12,13}, {17,18,19}
  std::array<at::Tensor, 3> tgrow;   // decoder.{9,15,21}: 1x1, n -> n * stride
  std::array<at::Tensor, 3> stage_w; // decoder.{10,16,22}: c_i -> c_{i+1}, no bias
  std::array<UpsampleConv, 3> stage_up;  // the nearest x2 upsampling before each, folded into it
  at::Tensor out1_w;                 // decoder.24: c3 -> c3, no bias
  at::Tensor out_w, out_b;           // decoder.26: c3 -> 3
  // Whether relu(conv + bias [+ residual]) runs as one cuDNN fused convolution (CUDA, bf16/fp16, when a probe
  // at bind time matched the composed operations) or as conv, add and relu; `epilogue_path` says which and why,
  // and which pass joins the phases of the folded upsampling convolutions.
  bool fused_epilogues = false;
  std::string epilogue_path;

  static DecoderWeights bind(WeightFile& file, const DecoderConfig& config, at::Device device, at::ScalarType dtype);
};

// The decoder memory of one stream.
struct DecoderState {
  std::array<at::Tensor, 9> past;  // each MemBlock's input at the previous frame [1, n, h, w]; undefined = zeros
  bool started = false;            // the very first decode drops its first 3 frames
  void reset() { *this = DecoderState(); }
};

// latents: [1, 16, t, h, w]; cond: [1, 3, n, 8h, 8w] LQ frames in [-1, 1] with 4(t-1) < n <= 4t (front-padded
// with copies of its first frame to 4t). Processes `group` latent frames at a time (memory bound), which is
// exactly the frame-by-frame computation. Returns [1, 3, 4t (- 3 on the first call), 8h, 8w] in [-1, 1].
at::Tensor decode_chunk(const DecoderWeights& weights, DecoderState& state, const at::Tensor& latents,
                        const at::Tensor& cond, int64_t group = 1);

}  // namespace flashvsr
