// SPDX-License-Identifier: LGPL-2.1-or-later
// Random-weight models in the release layout: the same file names, keys and shapes as the published
// FlashVSR weights (preset "full") or small ones for tests (preset "tiny"). Used by flashvsr-make-model,
// flashvsr-bench and the tests. Outputs of such models are not meaningful pictures.
#pragma once

#include "engine.h"

#include <array>
#include <string>

namespace flashvsr {

struct ModelSpec {
  Variant variant = Variant::Tiny;  // Full: stage 3 is a Wan2.1 VAE decoder of base width vae_dim
  int64_t vae_dim = 0;
  int64_t dim = 0, ffn_dim = 0, layers = 0, text_dim = 0, context_len = 0;
  int64_t lq_hidden1 = 0, lq_hidden2 = 0, lq_linear = 1;
  std::array<int64_t, 4> decoder_channels{};

  static ModelSpec tiny();  // dim 256 (2 heads), ffn 512, 2 layers; like the parity fixtures
  static ModelSpec full();  // the released sizes: dim 1536, ffn 8960, 30 layers, text 4096 x 512, ...
  static ModelSpec preset(const std::string& name);  // "tiny" | "full"
  // The same sizes with the given stage 3 (vae_dim 8 beside the tiny preset, 96, released, beside full).
  ModelSpec with_variant(Variant v) const;
};

// Weights ~ N(0, 1/fan_in) (He-scaled for the decoder's ReLU convs), norms ~ 1, modulations ~ N(0, 1/dim),
// drawn from `seed`; stored as `dtype` (F32, BF16 or F16) on the CPU.
ModelTensors make_random_model(const ModelSpec& spec, uint64_t seed, at::ScalarType dtype = at::kFloat);

// A Full model's decoder file holds conv2.* and decoder.* of the release's keys and shapes at vae_dim, plus
// four tensors of the encoder half (encoder.conv1.*, conv1.*) as stand-ins, so that loading skips them.
//
// Writes the release layout into `dir` (created if needed): the DiT as safetensors, the LQ projection as
// a torch.save'd plain dict, the decoder (TCDecoder.ckpt or Wan2.1_VAE.pth) as a torch.save'd state_dict
// (OrderedDict), the prompt tensor.
void write_model_dir(const std::string& dir, const ModelTensors& tensors);

}  // namespace flashvsr
