// SPDX-License-Identifier: LGPL-2.1-or-later
// Stage 3 of FlashVSR Full: the Wan2.1 video VAE decoder (spec "Full variant"). Input: the DiT's latents
// [1, 16, t, h, w] (normalised); output RGB frames at 8x the latent resolution, clamped to [-1, 1]. The
// decoder is causal in time: every temporal convolution sees the last frames of its input before this
// call, kept in the stream's VaeDecoderState (not in the weights), so decoding chunk by chunk gives exactly
// the frames of one whole-clip decode. Latent 0 of a stream gives 1 frame, every later latent 4.
// Keys (Wan2.1_VAE.pth, the raw VideoVAE_ state dict): conv2.{weight,bias} and decoder.*; the encoder half
// (encoder.*, conv1.*) is not read.
#pragma once

#include "weights.h"

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace flashvsr {

struct VaeDecoderConfig {
  int64_t dim = 96;     // base width d (decoder.head.0.gamma.shape[0]); 96 released
  int64_t z_dim = 16;   // latent channels

  static VaeDecoderConfig detect(const WeightFile& file);
};

// Loaded weights, immutable after bind (shared by every stream of a Model).
struct VaeDecoderWeights {
  VaeDecoderConfig config;
  // (layers: defined by vae_decoder.cpp; one member per key group of the spec's list)
  struct Conv { at::Tensor weight, bias; };
  struct Res { at::Tensor gamma0, gamma3; Conv conv2, conv6, shortcut; };  // shortcut undefined when i == o
  struct Attn { at::Tensor gamma; Conv to_qkv, proj; };
  struct Up { Conv time_conv, resample; };  // time_conv undefined for Up2d
  at::Tensor mean, inv_std;                 // de-normalisation constants [16] (compute dtype, on the device)
  Conv conv2, conv1;                        // conv2 (1x1x1 16 -> 16), decoder.conv1 (16 -> 4d)
  Res middle0, middle2;
  Attn middle1;
  std::vector<Res> res;                     // upsamples.{0-2, 4-6, 8-10, 12-14} in order
  std::vector<Up> up;                       // upsamples.{3, 7, 11}
  at::Tensor head_gamma;
  Conv head_conv;

  static VaeDecoderWeights bind(WeightFile& file, const VaeDecoderConfig& config, at::Device device,
                                at::ScalarType dtype);
};

// The temporal caches of one stream: for every causal temporal convolution, the last (k_t - 1) frames of
// its input, and whether the first latent went through (the time_convs skip it).
struct VaeDecoderState {
  std::vector<at::Tensor> caches;  // one per temporal conv, in execution order; undefined = zeros
  bool started = false;
  void reset() { *this = VaeDecoderState(); }
};

// Whether a key of Wan2.1_VAE.pth belongs to the decoder side (conv2.*, decoder.*), the part the engine binds.
inline bool is_vae_decoder_key(const std::string& key) {
  return key.rfind("conv2.", 0) == 0 || key.rfind("decoder.", 0) == 0;
}

// Opens Wan2.1_VAE.pth (a torch.save'd VideoVAE_ state dict) keeping only conv2.* and decoder.*: the
// encoder half is never materialised (a debug line through `log` says how many tensors were skipped).
// Error(BadFile) naming the path when the file has no decoder (e.g. an encoder-only file).
WeightFile open_vae_decoder_file(const std::string& path, const LogFn& log);

// latents: [1, z_dim, t, h, w] (normalised, as the DiT returns them). Returns [1, 3, 4t (- 3 on the first
// call of a stream), 8h, 8w] in [-1, 1] (clamped), in the weights' dtype.
at::Tensor vae_decode_chunk(const VaeDecoderWeights& weights, VaeDecoderState& state, const at::Tensor& latents);

}  // namespace flashvsr
