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
  int64_t dim = 0, ffn_dim = 0, layers = 0, text_dim = 0, context_len = 0;
  int64_t lq_hidden1 = 0, lq_hidden2 = 0, lq_linear = 1;
  std::array<int64_t, 4> decoder_channels{};

  static ModelSpec tiny();  // dim 256 (2 heads), ffn 512, 2 layers; like the parity fixtures
  static ModelSpec full();  // the released sizes: dim 1536, ffn 8960, 30 layers, text 4096 x 512, ...
  static ModelSpec preset(const std::string& name);  // "tiny" | "full"
};

// Weights ~ N(0, 1/fan_in) (He-scaled for the decoder's ReLU convs), norms ~ 1, modulations ~ N(0, 1/dim),
// drawn from `seed`; stored as `dtype` (F32, BF16 or F16) on the CPU.
ModelTensors make_random_model(const ModelSpec& spec, uint64_t seed, at::ScalarType dtype = at::kFloat);

// Writes the release layout into `dir` (created if needed): the DiT as safetensors, the LQ projection as
// a torch.save'd plain dict, the decoder as a torch.save'd state_dict (OrderedDict), the prompt tensor.
void write_model_dir(const std::string& dir, const ModelTensors& tensors);

}  // namespace flashvsr
