// SPDX-License-Identifier: LGPL-2.1-or-later
// Stage 3 of FlashVSR Full: the Wan2.1 video VAE decoder (spec "Full variant"). Input: the DiT's latents
// [1, 16, t, h, w] (normalised); output RGB frames at 8x the latent resolution, clamped to [-1, 1]. The
// decoder is causal in time: every temporal convolution sees the last frames of its input before this
// call, kept in the stream's VaeDecoderState (not in the weights), so decoding chunk by chunk gives exactly
// the frames of one whole-clip decode. Latent 0 of a stream gives 1 frame, every later latent 4.
// Keys (Wan2.1_VAE.pth, the raw VideoVAE_ state dict): conv2.{weight,bias} and decoder.*; the encoder half
// (encoder.*, conv1.*) is not read (open_vae_decoder_file).
#pragma once

#include "error.h"
#include "upsample_conv.h"
#include "weights.h"

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace flashvsr {

// Opens the Wan2.1 VAE file (a torch.save archive, or .safetensors with the same keys) keeping only the
// decoder side: the encoder.* and conv1.* tensors are never read (one Debug line through `log` says how
// many were skipped); every other key is kept, so that WeightFile::unused() reports strangers.
// Error(NotFound) for a missing file; Error(BadFile) naming the path for a file without a decoder
// (no decoder.head.0.gamma, e.g. an encoder-only file) and for any format error.
WeightFile open_vae_decoder_file(const std::string& path, const LogFn& log);
// Whether a key of that file belongs to the encoder half (encoder.*, conv1.*), which is never read.
inline bool is_vae_encoder_key(const std::string& key) {
  return key.rfind("encoder.", 0) == 0 || key.rfind("conv1.", 0) == 0;
}

struct VaeDecoderConfig {
  int64_t dim = 96;     // base width d (decoder.head.0.gamma.shape[0]); 96 released
  int64_t z_dim = 16;   // latent channels (conv2.weight.shape[0]); must be 16: the de-normalisation constants

  static VaeDecoderConfig detect(const WeightFile& file);
};

// Loaded weights, immutable after bind (shared by every stream of a Model).
struct VaeDecoderWeights {
  VaeDecoderConfig config;
  struct Conv { at::Tensor weight, bias; };
  struct Res { at::Tensor gamma0, gamma3; Conv conv2, conv6, shortcut; };  // shortcut undefined when i == o
  struct Attn { at::Tensor gamma; Conv to_qkv, proj; };
  // time_conv undefined for Up2d; resample_up: the nearest x2 upsampling folded into resample (upsample_conv.h)
  struct Up { Conv time_conv, resample; UpsampleConv resample_up; };
  at::Tensor mean, inv_std;                 // de-normalisation constants [1, 16, 1, 1, 1] (compute dtype, on the device)
  Conv conv2, conv1;                        // conv2 (1x1x1 16 -> 16), decoder.conv1 (16 -> 4d)
  Res middle0, middle2;
  Attn middle1;
  std::vector<Res> res;                     // upsamples.{0-2, 4-6, 8-10, 12-14} in order
  std::vector<Up> up;                       // upsamples.{3, 7, 11}
  at::Tensor head_gamma;
  Conv head_conv;
  // Activation layout: NDHWC (channels-last-3d, cuDNN's fast bf16/fp16 convolutions) on CUDA in bf16/fp16,
  // else NCDHW; `layout` says which, for the log.
  bool channels_last = false;
  std::string layout;

  static VaeDecoderWeights bind(WeightFile& file, const VaeDecoderConfig& config, at::Device device,
                                at::ScalarType dtype);
};

// The temporal caches of one stream: for every causal temporal convolution, the last (k_t - 1) = 2 frames
// of its input (zeros before the stream start; [1, c, 2, h, w], fixed after the first call), and whether the
// first latent went through (the time_convs skip it).
struct VaeDecoderState {
  std::vector<at::Tensor> caches;  // one per temporal conv (32), in execution order; undefined = zeros
  bool started = false;
  void reset() { *this = VaeDecoderState(); }
};

// latents: [1, z_dim, t, h, w], t >= 1 (normalised, as the DiT returns them; any float dtype and device:
// converted to the weights'). Returns [1, 3, 4t (- 3 on the first call of a stream), 8h, 8w] in [-1, 1]
// (clamped), contiguous, in the weights' dtype. `group` > 0 runs the decoder over at most that many latents
// at a time (bounds the activations' memory; the same frames, the caches carry over); 0 = all t at once.
// Error(BadInput) for a malformed tensor or a latent size other than the stream's so far (reset first).
// No host synchronisation.
at::Tensor vae_decode_chunk(const VaeDecoderWeights& weights, VaeDecoderState& state, const at::Tensor& latents,
                            int64_t group = 0);

// Building blocks, exposed for the tests (nothing else should need them).
namespace vae {
// Causal 3D convolution (stride 1, zero padding (k-1)/2 spatially): x [1, i, T, h, w] -> [1, o, T, h, w];
// output frame j sees input frames j - k_t + 1 .. j of the sequence `cache ++ x` (cache: the k_t - 1 = 2
// frames before x, undefined = zeros), and `cache` becomes the last 2 frames of that sequence.
// (x by value: a caller that moves it in has its memory freed before the output is allocated.)
at::Tensor causal_conv3d(const VaeDecoderWeights::Conv& conv, at::Tensor& cache, at::Tensor x);
// x [N, C, ...] -> x / max(||x||_2 over C, 1e-12) * sqrt(C) * gamma (gamma [C, 1, ...]).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& gamma);
// causal_conv3d(conv, cache, silu(rms_norm(x, gamma))), the same values, with the normalised frames
// written straight into the sequence `cache ++ .` the convolution reads (no separate tensor, no
// concatenation copy): x [1, i, T, h, w] -> [1, o, T, h, w] (x by value, as causal_conv3d's).
at::Tensor causal_conv3d_of_norm_silu(const VaeDecoderWeights::Conv& conv, at::Tensor& cache, at::Tensor x,
                                      const at::Tensor& gamma);
}  // namespace vae

}  // namespace flashvsr
